//! Open connections per client address (SEC-9): one address (an IPv6 /64)
//! may hold at most the cap at once; more are closed as soon as they are
//! accepted, while other addresses connect as usual. Trusted proxies are not
//! capped (every client behind them shares their address); the rate limits
//! see the clients behind them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Open connections by client address.
#[derive(Debug)]
pub(crate) struct ConnectionsPerClient {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionsPerClient {
    /// At most `cap` connections per address.
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn open(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Plain counters: a panic elsewhere cannot leave them torn.
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for one more connection from `ip`, held until the returned guard
    /// drops; `None` when the address holds the cap already.
    pub(crate) fn try_open(self: &Arc<Self>, ip: IpAddr) -> Option<ClientConnection> {
        let key = postern_edge::client_key(ip);
        let mut open = self.open();
        let count = open.entry(key).or_default();
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(ClientConnection {
            counts: self.clone(),
            key,
        })
    }

    /// Connections `ip` holds now.
    #[cfg(test)]
    fn held_by(&self, ip: IpAddr) -> usize {
        self.open().get(&postern_edge::client_key(ip)).copied().unwrap_or(0)
    }
}

/// One open connection's place; given back when dropped.
#[derive(Debug)]
pub(crate) struct ClientConnection {
    counts: Arc<ConnectionsPerClient>,
    key: IpAddr,
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        let mut open = self.counts.open();
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_the_cap_and_gets_places_back() {
        let counts = ConnectionsPerClient::new(2);
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        let first = counts.try_open(a).unwrap();
        let _second = counts.try_open(a).unwrap();
        assert!(counts.try_open(a).is_none(), "the third is refused");
        assert!(counts.try_open(b).is_some(), "another address is not");
        drop(first);
        assert_eq!(counts.held_by(a), 1);
        assert!(counts.try_open(a).is_some(), "a place given back is free again");
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::2".parse().unwrap();
        let _x = counts.try_open(v6).unwrap();
        let _y = counts.try_open(same_64).unwrap();
        assert!(counts.try_open(v6).is_none(), "an IPv6 /64 counts as one");
        drop((_x, _y));
        assert!(
            counts.open().get(&postern_edge::client_key(v6)).is_none(),
            "nothing left behind"
        );
    }
}
