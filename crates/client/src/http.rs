//! The HTTP plumbing every call shares: a client with timeouts, URLs built
//! from escaped path segments, and responses read into values or errors.

use std::time::Duration;

use reqwest::{RequestBuilder, Response};
use serde::de::DeserializeOwned;
use url::Url;

use crate::error::ClientError;

/// Default limit on one whole HTTP exchange.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Limit on establishing a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client whose every request gives up after `timeout`.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .user_agent(concat!("postern/", env!("CARGO_PKG_VERSION")))
        // Bearer tokens must not follow a redirect to another host.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ClientError::InvalidUrl(format!("cannot build the HTTP client: {e}")))
}

/// `base` with `segments` appended to its path, each escaped.
pub(crate) fn join(base: &Url, segments: &[&str]) -> Result<Url, ClientError> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| ClientError::InvalidUrl(format!("{base} cannot have a path")))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// Sends `request`; a failure to get any answer is a [`ClientError::Transport`].
pub(crate) async fn send(request: RequestBuilder, url: &Url) -> Result<Response, ClientError> {
    request.send().await.map_err(|source| ClientError::Transport {
        url: url.to_string(),
        source,
    })
}

/// Reads a successful response's JSON body.
pub(crate) async fn json<T: DeserializeOwned>(response: Response, url: &Url) -> Result<T, ClientError> {
    let bytes = response.bytes().await.map_err(|source| ClientError::Transport {
        url: url.to_string(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::InvalidResponse(format!("{url}: {e}")))
}

/// Checks that `url` is an absolute `http` or `https` URL without query or
/// fragment: a server to call.
pub(crate) fn parse_server(server: &str) -> Result<Url, ClientError> {
    let url = Url::parse(server.trim()).map_err(|e| ClientError::InvalidUrl(format!("{server:?}: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.cannot_be_a_base() {
        return Err(ClientError::InvalidUrl(format!("{server:?} is not an http(s) URL")));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(ClientError::InvalidUrl(format!(
            "{server:?} must not carry a query, fragment or credentials"
        )));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped() {
        let base = Url::parse("https://p.example/prefix/").unwrap();
        let url = join(&base, &["api", "v1", "users", "a/b c"]).unwrap();
        assert_eq!(url.as_str(), "https://p.example/prefix/api/v1/users/a%2Fb%20c");
        let base = Url::parse("https://p.example").unwrap();
        assert_eq!(
            join(&base, &["t", "acme"]).unwrap().as_str(),
            "https://p.example/t/acme"
        );
    }

    #[test]
    fn servers() {
        assert!(parse_server("https://postern.example").is_ok());
        assert!(parse_server("http://127.0.0.1:8080/").is_ok());
        for bad in [
            "postern.example",
            "ftp://x.example",
            "https://x.example/?a=1",
            "https://u@x.example",
            "mailto:a@b",
        ] {
            assert!(parse_server(bad).is_err(), "{bad}");
        }
    }
}
