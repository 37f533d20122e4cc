//! Which loopback ports the demo listens on: the one asked for; else the last
//! run's if it is free; else the default if free; else any free port. A port
//! the demo had to give up is said in a note, never silently.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use tokio::net::TcpListener;

/// A port to listen on, and why it is not the expected one.
#[derive(Debug)]
pub(crate) struct Choice {
    /// A port of 127.0.0.1 that was free a moment ago.
    pub(crate) port: u16,
    /// Set when the last run's port (or the default) was taken.
    pub(crate) note: Option<String>,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Whether nothing listens on `port` of the loopback address now.
fn is_free(port: u16) -> bool {
    std::net::TcpListener::bind(loopback(port)).is_ok()
}

/// A port that is free now (the system picks it). The demo needs the number
/// before it listens: its URLs, and the certificate's names, carry it.
fn any_free() -> anyhow::Result<u16> {
    let probe = std::net::TcpListener::bind(loopback(0)).context("finding a free loopback port")?;
    Ok(probe.local_addr()?.port())
}

/// The port for `what`: `asked` (from a flag; 0 = any free port) wins
/// outright; otherwise the first free one of `last` and `default`, else any.
pub(crate) fn choose(
    what: &str,
    asked: Option<u16>,
    last: Option<u16>,
    default: Option<u16>,
) -> anyhow::Result<Choice> {
    match asked {
        Some(0) => {
            return Ok(Choice {
                port: any_free()?,
                note: None,
            });
        }
        Some(port) => return Ok(Choice { port, note: None }),
        None => {}
    }
    let mut taken = Vec::new();
    for port in [last, default].into_iter().flatten() {
        if taken.contains(&port) {
            continue;
        }
        if is_free(port) {
            let note = (!taken.is_empty()).then(|| in_use(what, &taken, port));
            return Ok(Choice { port, note });
        }
        taken.push(port);
    }
    let port = any_free()?;
    Ok(Choice {
        port,
        note: (!taken.is_empty()).then(|| in_use(what, &taken, port)),
    })
}

fn in_use(what: &str, taken: &[u16], instead: u16) -> String {
    let ports: Vec<String> = taken.iter().map(u16::to_string).collect();
    format!(
        "{what}: port {} is in use; using port {instead} instead",
        ports.join(", ")
    )
}

/// A listener for `what` on the last run's port if it is free, else on any.
pub(crate) async fn listen(what: &str, last: Option<u16>) -> anyhow::Result<(TcpListener, Option<String>)> {
    if let Some(port) = last
        && let Ok(listener) = TcpListener::bind(loopback(port)).await
    {
        return Ok((listener, None));
    }
    let listener = TcpListener::bind(loopback(0))
        .await
        .with_context(|| format!("listening for the {what} on loopback"))?;
    let note = match last {
        Some(port) => Some(in_use(what, &[port], listener.local_addr()?.port())),
        None => None,
    };
    Ok((listener, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_asked_port_wins_then_the_last_free_one_then_the_default() {
        assert_ne!(
            choose("service", Some(0), Some(1), Some(2)).unwrap().port,
            0,
            "a real port"
        );
        assert_eq!(choose("service", Some(7), Some(1), Some(2)).unwrap().port, 7);
        let busy = std::net::TcpListener::bind(loopback(0)).unwrap();
        let busy_port = busy.local_addr().unwrap().port();
        let free_port = any_free().unwrap();
        let c = choose("service", None, Some(free_port), Some(busy_port)).unwrap();
        assert_eq!((c.port, c.note), (free_port, None));
        let c = choose("service", None, Some(busy_port), Some(free_port)).unwrap();
        assert_eq!(c.port, free_port);
        assert!(c.note.unwrap().contains(&format!("port {busy_port} is in use")));
        let c = choose("service", None, Some(busy_port), None).unwrap();
        assert!(c.port != 0 && c.port != busy_port);
        assert!(c.note.is_some());
        assert!(choose("service", None, None, None).unwrap().note.is_none());
    }
}
