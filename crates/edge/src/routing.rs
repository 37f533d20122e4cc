//! Which published app a request is for: by host, then by the longest path
//! prefix of the path as a browser resolves it ([`crate::paths::normalize`]), so
//! dot segments cannot reach past the prefix (SEC-13). Apps by host are cached
//! behind the store's routing generation, so an app published or changed through
//! this process routes at once, and one changed by another instance within
//! [`TIME_TO_LIVE`].

use std::sync::Arc;

use postern_store::cache::{ReadCache, TIME_TO_LIVE};
use postern_store::{App, Store, StoreError};
use postern_time::SharedClock;

use crate::paths::{PathError, normalize};

/// The app a request is for, and the request's path below the app's prefix.
#[derive(Clone, Debug)]
pub struct Routed {
    /// The app.
    pub app: Arc<App>,
    /// The path below the app's prefix, starting with `/`, normalized (no dot
    /// segments, no empty segments; the query is not part of it).
    pub path: String,
}

/// What the front door makes of a request's host and path.
#[derive(Clone, Debug)]
pub enum Routing {
    /// A published app.
    App(Routed),
    /// The host publishes apps, none under this path.
    NoApp,
    /// The host publishes apps; the path climbs above the root or hides a dot
    /// segment (answered 400, never forwarded).
    BadPath(PathError),
    /// No app lives on this host.
    NotAnAppHost,
}

/// A request's host as apps are stored: lowercase, without a trailing dot, without
/// the default ports 80 and 443 (a TLS-terminating load balancer may add either).
/// `None` for anything that is no `host[:port]`: empty, whitespace, user
/// information, a port that is not a number up to 65535, an unbracketed IPv6
/// address, or characters no host name has.
pub fn normalize_host(host: &str) -> Option<String> {
    let host = host.trim().to_ascii_lowercase();
    if host.is_empty() || host.len() > 262 {
        return None;
    }
    let (name, port) = split_port(&host)?;
    let name = if name.starts_with('[') {
        let inner = name.strip_prefix('[')?.strip_suffix(']')?;
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        name
    } else {
        let name = name.trim_end_matches('.');
        let host_name_byte = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
        if name.is_empty() || !name.bytes().all(host_name_byte) {
            return None;
        }
        name
    };
    match port {
        None | Some("80") | Some("443") => Some(name.to_owned()),
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0) => {
            Some(format!("{name}:{p}"))
        }
        Some(_) => None,
    }
}

/// `host[:port]` split at the port's colon; `None` when a colon is out of place.
fn split_port(host: &str) -> Option<(&str, Option<&str>)> {
    if host.starts_with('[') {
        let end = host.find(']')?;
        let (name, rest) = host.split_at(end + 1);
        return match rest {
            "" => Some((name, None)),
            _ => Some((name, Some(rest.strip_prefix(':')?))),
        };
    }
    match host.split_once(':') {
        None => Some((host, None)),
        Some((_, port)) if port.contains(':') => None,
        Some((name, port)) => Some((name, Some(port))),
    }
}

/// The published apps, by host.
pub(crate) struct AppDirectory {
    store: Store,
    by_host: ReadCache<String, Arc<Vec<Arc<App>>>>,
}

impl AppDirectory {
    pub(crate) fn new(store: Store, clock: SharedClock) -> Self {
        Self {
            store,
            by_host: ReadCache::with_clock(TIME_TO_LIVE, clock),
        }
    }

    /// The apps on `host` (normalized), longest prefix first.
    async fn on_host(&self, host: &str) -> Result<Arc<Vec<Arc<App>>>, StoreError> {
        let generation = self.store.routing_generation();
        if let Some(apps) = self.by_host.get(&host.to_owned(), generation) {
            return Ok(apps);
        }
        let mut apps: Vec<Arc<App>> = self.store.apps_on_host(host).await?.into_iter().map(Arc::new).collect();
        apps.sort_by_key(|a| std::cmp::Reverse(a.path_prefix.len()));
        let apps = Arc::new(apps);
        self.by_host.put(host.to_owned(), apps.clone(), generation);
        Ok(apps)
    }

    /// Routes a request for `host` (as sent) and `path` (as sent: it is
    /// normalized here).
    pub(crate) async fn route(&self, host: &str, path: &str) -> Result<Routing, StoreError> {
        let Some(host) = normalize_host(host) else {
            return Ok(Routing::NotAnAppHost);
        };
        let apps = self.on_host(&host).await?;
        if apps.is_empty() {
            return Ok(Routing::NotAnAppHost);
        }
        Ok(route_path(&apps, path))
    }
}

/// Routes `path` (as sent) among the apps of one host.
fn route_path(apps: &[Arc<App>], path: &str) -> Routing {
    match normalize(path) {
        Ok(path) => match_prefix(apps, &path).map_or(Routing::NoApp, Routing::App),
        Err(why) => Routing::BadPath(why),
    }
}

/// The app whose prefix is the longest one `path` lies under (apps sorted
/// longest prefix first). `/docs` lies under the prefix `/docs/` too.
fn match_prefix(apps: &[Arc<App>], path: &str) -> Option<Routed> {
    apps.iter().find_map(|app| {
        let prefix = app.path_prefix.as_str();
        let below = if let Some(rest) = path.strip_prefix(prefix) {
            format!("/{rest}")
        } else if prefix.len() > 1 && path == prefix.trim_end_matches('/') {
            "/".to_owned()
        } else {
            return None;
        };
        Some(Routed {
            app: app.clone(),
            path: below,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_normalize() {
        assert_eq!(normalize_host("Wiki.Example.COM").as_deref(), Some("wiki.example.com"));
        assert_eq!(
            normalize_host("wiki.example.com:443").as_deref(),
            Some("wiki.example.com")
        );
        assert_eq!(
            normalize_host("wiki.example.com:80").as_deref(),
            Some("wiki.example.com")
        );
        assert_eq!(normalize_host("wiki.example.com.").as_deref(), Some("wiki.example.com"));
        assert_eq!(normalize_host("127.0.0.1:8080").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(normalize_host("[::1]:8080").as_deref(), Some("[::1]:8080"));
        assert_eq!(normalize_host("[::1]").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("a b"), None);
        assert_eq!(normalize_host("evil.com/x"), None);
        assert_eq!(normalize_host("x:port"), None);
        assert_eq!(normalize_host(""), None);
        assert_eq!(normalize_host("x:"), None, "an empty port");
        assert_eq!(normalize_host("x:0"), None);
        assert_eq!(normalize_host("x:65536"), None);
        assert_eq!(normalize_host("x:+80"), None);
        assert_eq!(normalize_host("::1"), None, "IPv6 needs brackets");
        assert_eq!(normalize_host("[::1]:"), None);
        assert_eq!(normalize_host("[::1]x"), None);
        assert_eq!(normalize_host("a@b"), None);
        assert_eq!(normalize_host("a\tb"), None);
        assert_eq!(normalize_host("a%2eb"), None);
    }

    fn app(prefix: &str) -> Arc<App> {
        Arc::new(App {
            id: prefix.into(),
            tenant_id: "t".into(),
            name: prefix.into(),
            external_scheme: postern_store::ExternalScheme::Https,
            external_host: "h".into(),
            path_prefix: prefix.into(),
            internal_url: "http://i/".into(),
            preauth: postern_store::Preauth::Passthrough,
            connector_group_id: "g".into(),
            backend_timeout_secs: 85,
            validate_backend_tls: true,
            translate_headers: true,
            translate_links: false,
            identity_headers: Vec::new(),
            limits: postern_store::AppLimits::default(),
            client_id: "c".into(),
            created_at: postern_time::UnixTime::from_secs(0),
            updated_at: postern_time::UnixTime::from_secs(0),
        })
    }

    #[test]
    fn longest_prefix_wins() {
        let apps = vec![app("/docs/api/"), app("/docs/"), app("/")];
        let r = match_prefix(&apps, "/docs/api/x").unwrap();
        assert_eq!((r.app.path_prefix.as_str(), r.path.as_str()), ("/docs/api/", "/x"));
        let r = match_prefix(&apps, "/docs/x").unwrap();
        assert_eq!((r.app.path_prefix.as_str(), r.path.as_str()), ("/docs/", "/x"));
        let r = match_prefix(&apps, "/docs").unwrap();
        assert_eq!((r.app.path_prefix.as_str(), r.path.as_str()), ("/docs/", "/"));
        let r = match_prefix(&apps, "/docsx").unwrap();
        assert_eq!((r.app.path_prefix.as_str(), r.path.as_str()), ("/", "/docsx"));
        let r = match_prefix(&apps, "/").unwrap();
        assert_eq!(r.path, "/");
        assert!(match_prefix(&apps[..2], "/other").is_none());
    }

    #[test]
    fn routing_sees_the_normalized_path() {
        let apps = vec![app("/docs/api/"), app("/docs/")];
        let routed = |path: &str| match route_path(&apps, path) {
            Routing::App(r) => Ok((r.app.path_prefix.clone(), r.path)),
            Routing::BadPath(why) => Err(Some(why)),
            _ => Err(None),
        };
        assert_eq!(routed("/docs/api/../x"), Ok(("/docs/".into(), "/x".into())));
        assert_eq!(routed("/docs/x/%2e%2e/api/y"), Ok(("/docs/api/".into(), "/y".into())));
        assert_eq!(routed("/docs\\api\\z"), Ok(("/docs/api/".into(), "/z".into())));
        assert_eq!(routed("/docs/api/../../other"), Err(None), "outside every prefix: 404");
        assert_eq!(routed("/docs/../../etc/passwd"), Err(Some(PathError::AboveRoot)));
        assert_eq!(routed("/docs/..%2f..%2fetc"), Err(Some(PathError::HiddenDotSegment)));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A path segment from a small alphabet, so that prefixes overlap often.
        fn segment() -> impl Strategy<Value = String> {
            prop::sample::select(vec!["a", "b", "ab", "api", "docs", "a.b", "x-y"]).prop_map(str::to_owned)
        }

        /// `/` followed by segments, ending in `/`: a path prefix as the store
        /// keeps it.
        fn prefix() -> impl Strategy<Value = String> {
            prop::collection::vec(segment(), 0..4).prop_map(|segs| {
                let mut p = String::from("/");
                for s in segs {
                    p.push_str(&s);
                    p.push('/');
                }
                p
            })
        }

        /// A normalized request path: segments, with or without a final `/`.
        fn path() -> impl Strategy<Value = String> {
            (prop::collection::vec(segment(), 0..5), any::<bool>()).prop_map(|(segs, slash)| {
                let mut p = format!("/{}", segs.join("/"));
                if slash && !segs.is_empty() {
                    p.push('/');
                }
                p
            })
        }

        /// The model: of the prefixes the path lies under (or equals without
        /// its final `/`), the longest, and the path below it.
        fn naive(prefixes: &[String], path: &str) -> Option<(String, String)> {
            prefixes
                .iter()
                .filter_map(|p| {
                    if let Some(rest) = path.strip_prefix(p.as_str()) {
                        Some((p.clone(), format!("/{rest}")))
                    } else if p.len() > 1 && path == p.trim_end_matches('/') {
                        Some((p.clone(), "/".to_owned()))
                    } else {
                        None
                    }
                })
                .max_by_key(|(p, _)| p.len())
        }

        proptest! {
            /// Routing among the apps of one host agrees with the naive model
            /// for any set of prefixes and any path.
            #[test]
            fn longest_prefix_matches_the_model(
                prefixes in prop::collection::btree_set(prefix(), 1..6),
                path in path(),
            ) {
                let prefixes: Vec<String> = prefixes.into_iter().collect();
                let mut apps: Vec<Arc<App>> = prefixes.iter().map(|p| app(p)).collect();
                apps.sort_by_key(|a| std::cmp::Reverse(a.path_prefix.len()));
                let routed = match route_path(&apps, &path) {
                    Routing::App(r) => Some((r.app.path_prefix.clone(), r.path)),
                    Routing::NoApp => None,
                    other => panic!("{path}: {other:?}"),
                };
                prop_assert_eq!(routed, naive(&prefixes, &path), "path {}", path);
            }
        }
    }
}
