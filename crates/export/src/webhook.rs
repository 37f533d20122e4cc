//! The webhook receiver: each batch is one HTTPS `POST` of JSON lines
//! (`application/x-ndjson`), with the operator's bearer token; any 2xx answer
//! accepts the whole batch, anything else (or no answer) means it is sent
//! again.

use std::fmt;
use std::time::Duration;

use postern_keyring::SecretString;
use url::Url;

use crate::error::DeliveryError;
use crate::event::ExportEvent;
use crate::sink::Sink;

/// Time a webhook has to answer a batch.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Time to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the webhook is and how to authenticate to it.
#[derive(Clone)]
pub struct WebhookTarget {
    url: Url,
    token: Option<SecretString>,
}

impl fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.to_string())
            .field("token", &self.token)
            .finish()
    }
}

impl fmt::Display for WebhookTarget {
    /// The URL without its query (which may carry a secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.url.clone();
        shown.set_query(None);
        write!(f, "{shown}")
    }
}

impl WebhookTarget {
    /// An `https://` URL, and the bearer token to send, if any.
    pub fn new(url: &str, token: Option<SecretString>) -> Result<Self, String> {
        let url = Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if url.scheme() != "https" {
            return Err("must be an https:// URL (events carry user names and addresses)".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials; use webhook_token".into());
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("names no host".into());
        }
        Ok(Self { url, token })
    }
}

/// Posts events to a webhook.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    target: WebhookTarget,
    http: reqwest::Client,
}

impl WebhookSink {
    /// A sink for `target`, verifying its certificate with `tls`.
    pub fn new(target: WebhookTarget, tls: rustls::ClientConfig) -> Result<Self, crate::ExportError> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| crate::ExportError::Config(format!("webhook client: {e}")))?;
        Ok(Self { target, http })
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(&self, events: &[ExportEvent]) -> Result<(), DeliveryError> {
        let target = self.target.to_string();
        let mut body = String::new();
        for event in events {
            let line = event.to_json_line().map_err(|e| DeliveryError::Http {
                target: target.clone(),
                why: e.to_string(),
            })?;
            body.push_str(&line);
            body.push('\n');
        }
        let mut request = self
            .http
            .post(self.target.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(body);
        if let Some(token) = &self.target.token {
            request = request.bearer_auth(token.expose());
        }
        let response = request.send().await.map_err(|e| DeliveryError::Http {
            target: target.clone(),
            why: error_chain(&e),
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(DeliveryError::Refused {
                target,
                status: status.as_u16(),
            });
        }
        Ok(())
    }
}

/// An error and its sources, for logs (reqwest's own message names only the
/// outermost layer).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_without_credentials() {
        assert!(WebhookTarget::new("https://siem.example.com/in?k=v", None).is_ok());
        for bad in [
            "http://siem.example.com/in",
            "https://u:p@siem.example.com/",
            "not a url",
        ] {
            assert!(WebhookTarget::new(bad, None).is_err(), "{bad}");
        }
        let t = WebhookTarget::new("https://siem.example.com/in?key=s3cret", Some("tok3n".into())).unwrap();
        assert_eq!(t.to_string(), "https://siem.example.com/in");
        let debug = format!("{t:?}");
        assert!(!debug.contains("s3cret") && !debug.contains("tok3n"), "{debug}");
    }
}
