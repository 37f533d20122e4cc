//! The apps this connector serves, parsed once from its configuration and swapped
//! whole (through a `tokio::sync::watch`) when the configuration changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, PathAndQuery};
use postern_proto::control::AppRef;

use crate::backend::Origin;

/// Longest backend timeout accepted from the configuration.
const MAX_BACKEND_TIMEOUT: Duration = Duration::from_secs(3600);

/// One published app's backend, as the connector reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    id: String,
    /// Where the connector connects, and how: the key of its pooled connections.
    origin: Origin,
    /// The internal URL's path without its trailing `/` (empty for the root).
    base_path: String,
    /// `Host` for a stream that names no authority: the internal host (and port
    /// when not the scheme's default).
    default_host: String,
    timeout: Duration,
}

impl App {
    /// Parses an app from its configuration; `default_timeout` stands in for a
    /// zero backend timeout. Fails with the reason when the internal URL is not an
    /// absolute `http` or `https` URL with a host and without user info, query or
    /// fragment.
    pub fn parse(app: &AppRef, default_timeout: Duration) -> Result<Self, String> {
        let url = url::Url::parse(&app.internal_url).map_err(|e| format!("not a URL: {e}"))?;
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(format!("scheme {other:?} is neither http nor https")),
        };
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or("no host")?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("user info is not allowed".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("a query or fragment is not allowed".into());
        }
        let port = url.port_or_known_default().ok_or("no port")?;
        let authority: Authority = format!("{host}:{port}").parse().map_err(|e| format!("bad host: {e}"))?;
        let default_host = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let timeout = match app.backend_timeout_secs {
            0 => default_timeout,
            s => Duration::from_secs(s),
        };
        Ok(Self {
            id: app.id.clone(),
            origin: Origin {
                https,
                authority,
                verified: app.validate_backend_tls,
            },
            base_path: url.path().trim_end_matches('/').to_owned(),
            default_host,
            timeout: timeout.min(MAX_BACKEND_TIMEOUT),
        })
    }

    /// The app's ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the backend's certificate is verified.
    pub fn validate_tls(&self) -> bool {
        self.origin.verified
    }

    /// Where and how the connector connects to the backend.
    pub(crate) fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Time the backend has to send its response head.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `Host` to send when the stream names no authority.
    pub fn default_host(&self) -> &str {
        &self.default_host
    }

    /// The backend request's target for a tunnel `:path` (both in origin form,
    /// starting with `/`): the internal base path followed by it (the path
    /// itself, not a copy, when the base is the root). `None` when the path is
    /// not origin form.
    pub fn backend_target(&self, path_and_query: &PathAndQuery) -> Option<Uri> {
        if !path_and_query.as_str().starts_with('/') {
            return None;
        }
        let target = if self.base_path.is_empty() {
            path_and_query.clone()
        } else {
            PathAndQuery::from_maybe_shared(format!("{}{path_and_query}", self.base_path)).ok()?
        };
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(target);
        Uri::from_parts(parts).ok()
    }
}

/// The apps by ID. Built once per configuration; apps whose internal URL does not
/// parse are left out with a log line (requests for them get `unknown_app`).
#[derive(Clone, Debug, Default)]
pub struct AppTable {
    apps: HashMap<String, Arc<App>>,
    rejected: Vec<String>,
}

impl AppTable {
    /// Builds the table; `default_timeout` stands in for a zero backend timeout
    /// (the configuration's `timing.backend_timeout_secs`).
    pub fn new(apps: &[AppRef], default_timeout: Duration) -> Self {
        let mut table = AppTable::default();
        for app in apps {
            match App::parse(app, default_timeout) {
                Ok(parsed) => {
                    table.apps.insert(app.id.clone(), Arc::new(parsed));
                }
                Err(reason) => {
                    tracing::warn!(
                        app = %app.id,
                        internal_url = %app.internal_url,
                        %reason,
                        "app left out: its internal URL is unusable"
                    );
                    table.rejected.push(app.id.clone());
                }
            }
        }
        table
    }

    /// The app with this ID.
    pub fn get(&self, id: &str) -> Option<&Arc<App>> {
        self.apps.get(id)
    }

    /// How many apps are served.
    pub fn len(&self) -> usize {
        self.apps.len()
    }

    /// Whether no app is served.
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// IDs of the apps left out because their internal URL was unusable.
    pub fn rejected(&self) -> &[String] {
        &self.rejected
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn app(id: &str, url: &str, timeout: u64) -> AppRef {
        AppRef {
            id: id.into(),
            internal_url: url.into(),
            validate_backend_tls: true,
            backend_timeout_secs: timeout,
        }
    }

    fn target(app: &App, path: &str) -> Option<String> {
        // Some strings are no path at all (`http::uri::PathAndQuery` refuses them).
        let path: PathAndQuery = path.parse().ok()?;
        app.backend_target(&path).map(|uri| uri.to_string())
    }

    #[test]
    fn path_is_appended_to_the_base_path() {
        let wiki = App::parse(&app("w", "http://wiki.corp:8080/app/", 5), Duration::from_secs(30)).unwrap();
        assert_eq!(target(&wiki, "/a?b").unwrap(), "/app/a?b");
        assert_eq!(target(&wiki, "/").unwrap(), "/app/");
        assert_eq!(target(&wiki, "a"), None);
        assert_eq!(target(&wiki, "http://evil/"), None);
        assert_eq!(target(&wiki, "//evil/x").unwrap(), "/app//evil/x");
        assert!(!wiki.origin().https);
        assert_eq!(wiki.origin().authority, "wiki.corp:8080");
        assert_eq!(wiki.default_host(), "wiki.corp:8080");
        assert_eq!(wiki.timeout(), Duration::from_secs(5));

        let root = App::parse(&app("r", "https://intra", 0), Duration::from_secs(30)).unwrap();
        assert_eq!(target(&root, "/x/y?z=1").unwrap(), "/x/y?z=1");
        assert_eq!(target(&root, "//evil/x").unwrap(), "//evil/x");
        assert_eq!(target(&root, "a"), None);
        assert!(root.origin().https);
        assert_eq!(root.origin().authority, "intra:443");
        assert_eq!(root.default_host(), "intra");
        assert_eq!(root.timeout(), Duration::from_secs(30), "zero means the default");

        let v6 = App::parse(&app("6", "http://[::1]:81/base", 1), Duration::from_secs(1)).unwrap();
        assert_eq!(target(&v6, "/p").unwrap(), "/base/p");
        assert_eq!(v6.origin().authority, "[::1]:81");
    }

    #[test]
    fn bad_internal_urls_are_left_out_not_fatal() {
        let table = AppTable::new(
            &[
                app("good", "http://10.0.0.1/", 5),
                app("ftp", "ftp://files.corp/", 5),
                app("relative", "/just/a/path", 5),
                app("creds", "http://user:pw@wiki.corp/", 5),
                app("query", "http://wiki.corp/?a=b", 5),
            ],
            Duration::from_secs(30),
        );
        assert_eq!(table.len(), 1);
        assert!(table.get("good").is_some());
        assert!(table.get("ftp").is_none());
        assert_eq!(table.rejected(), ["ftp", "relative", "creds", "query"]);
    }
}
