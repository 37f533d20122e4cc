//! The client's IP address as the service determined it (from the socket, or from
//! `X-Forwarded-For` when the peer is a trusted proxy), and the network it belongs
//! to for "familiar location" decisions.

use std::net::IpAddr;

/// The client address of a request. The listener inserts it into the request's
/// extensions; handlers read it with `Extension<ClientIp>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The network the address belongs to, as sign-in locations are compared: the
    /// /24 for IPv4, the /56 for IPv6 (a typical customer allocation).
    pub fn network(&self) -> String {
        match self.0 {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                format!("{}.{}.{}.0/24", o[0], o[1], o[2])
            }
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return ClientIp(IpAddr::V4(v4)).network();
                }
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}00::/56", s[0], s[1], s[2], s[3] >> 8)
            }
        }
    }
}

impl std::fmt::Display for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let v4 = ClientIp("192.0.2.77".parse().unwrap());
        assert_eq!(v4.network(), "192.0.2.0/24");
        let v6 = ClientIp("2001:db8:1:2345::1".parse().unwrap());
        assert_eq!(v6.network(), "2001:db8:1:2300::/56");
        let mapped = ClientIp("::ffff:10.1.2.3".parse().unwrap());
        assert_eq!(mapped.network(), "10.1.2.0/24");
    }
}
