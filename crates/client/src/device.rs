//! The device authorization grant (RFC 8628): sign-in on a host without a
//! browser, or an administrator's approval of a component registration. The
//! client asks for a device code, the user approves it on another device at the
//! verification URL (the page names what is asked), and the client polls the
//! token endpoint,
//! honouring `interval`, `slow_down` (+5 s, §3.5), `authorization_pending`,
//! `access_denied` and `expired_token`, within an overall deadline.

use std::future::Future;
use std::time::Duration;

use postern_keyring::SecretString;
use serde::Deserialize;

use crate::error::ClientError;
use crate::http;
use crate::oauth::{PublicClient, TokenSet};

/// Grant type of the device flow.
pub const GRANT_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// How long to wait for the user at most, unless the code expires sooner.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// Poll interval when the service names none (RFC 8628 §3.2).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Added to the interval on each `slow_down` (RFC 8628 §3.5).
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// Consecutive failures to reach the service before polling gives up.
const MAX_TRANSPORT_FAILURES: u32 = 3;

/// A started device authorization (RFC 8628 §3.2). Show the user
/// [`DeviceAuthorization::verification_url`] and the `user_code`.
#[derive(Clone, Debug, Deserialize)]
pub struct DeviceAuthorization {
    /// The client's handle on the request; masked in `Debug`.
    pub device_code: SecretString,
    /// The code the user confirms, e.g. `BCDF-GHJK`.
    pub user_code: String,
    /// Where the user goes.
    pub verification_uri: String,
    /// The same with the code filled in.
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    /// Seconds until the codes expire.
    pub expires_in: u64,
    /// Seconds to wait between polls.
    #[serde(default)]
    pub interval: Option<u64>,
}

impl DeviceAuthorization {
    /// The URL to show: with the code filled in when the service offers it.
    pub fn verification_url(&self) -> &str {
        self.verification_uri_complete
            .as_deref()
            .unwrap_or(&self.verification_uri)
    }
}

/// How the poll loop waits, and how long it has been waiting: the real clock
/// in the service, a recording one in tests.
pub(crate) trait Pacer: Send {
    /// Time since polling began.
    fn elapsed(&self) -> Duration;
    /// Waits `d`.
    fn wait(&mut self, d: Duration) -> impl Future<Output = ()> + Send;
}

/// Waits on the tokio clock.
struct TokioPacer {
    started: tokio::time::Instant,
}

impl Pacer for TokioPacer {
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn wait(&mut self, d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }
}

impl PublicClient {
    /// Starts a device sign-in for `scope` (RFC 8628 §3.1).
    pub async fn start_device_authorization(&self, scope: &str) -> Result<DeviceAuthorization, ClientError> {
        let response = self.post_form("device_authorization", &[("scope", scope)]).await?;
        http::json(response, &self.issuer.endpoint("device_authorization")?).await
    }

    /// Asks an administrator to approve registering the component
    /// `component_name` (`registration_scope` names its kind, e.g.
    /// `postern:register:connector`). The approval page names both; the tokens
    /// are a registration credential for that kind and name only.
    pub async fn start_registration_approval(
        &self,
        registration_scope: &str,
        component_name: &str,
    ) -> Result<DeviceAuthorization, ClientError> {
        let form = [("scope", registration_scope), ("component_name", component_name)];
        let response = self.post_form("device_authorization", &form).await?;
        http::json(response, &self.issuer.endpoint("device_authorization")?).await
    }

    /// Polls until the user approves (tokens), refuses ([`ClientError::AccessDenied`])
    /// or the code expires ([`ClientError::Expired`]); gives up with
    /// [`ClientError::TimedOut`] after `max_wait` or the code's lifetime,
    /// whichever is shorter.
    pub async fn wait_for_device_tokens(
        &self,
        authorization: &DeviceAuthorization,
        max_wait: Duration,
    ) -> Result<TokenSet, ClientError> {
        let mut pacer = TokioPacer {
            started: tokio::time::Instant::now(),
        };
        self.poll_device(authorization, max_wait, &mut pacer).await
    }

    pub(crate) async fn poll_device(
        &self,
        authorization: &DeviceAuthorization,
        max_wait: Duration,
        pacer: &mut impl Pacer,
    ) -> Result<TokenSet, ClientError> {
        let deadline = max_wait.min(Duration::from_secs(authorization.expires_in));
        let mut interval = authorization
            .interval
            .map_or(DEFAULT_INTERVAL, Duration::from_secs)
            .max(Duration::from_secs(1));
        let form = [
            ("grant_type", GRANT_DEVICE_CODE),
            ("device_code", authorization.device_code.expose()),
        ];
        let mut failures = 0;
        loop {
            if pacer.elapsed() + interval > deadline {
                return Err(ClientError::TimedOut);
            }
            pacer.wait(interval).await;
            let outcome = self.post_form("token", &form).await;
            let error = match outcome {
                Ok(response) => return http::json(response, &self.issuer.endpoint("token")?).await,
                Err(ClientError::OAuth { error, .. }) if error == "authorization_pending" => {
                    failures = 0;
                    continue;
                }
                Err(ClientError::OAuth { error, .. }) if error == "slow_down" => {
                    failures = 0;
                    interval += SLOW_DOWN_STEP;
                    continue;
                }
                Err(ClientError::OAuth { error, .. }) if error == "access_denied" => ClientError::AccessDenied,
                Err(ClientError::OAuth { error, .. }) if error == "expired_token" => ClientError::Expired,
                Err(e @ ClientError::Transport { .. }) => {
                    failures += 1;
                    if failures < MAX_TRANSPORT_FAILURES {
                        tracing::warn!(error = %e, "polling for the sign-in failed; trying again");
                        continue;
                    }
                    e
                }
                Err(e) => e,
            };
            return Err(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use axum::{Form, Json, Router};
    use serde_json::{Value, json};

    use super::*;
    use crate::oauth::Issuer;

    /// Records the waits instead of sleeping.
    #[derive(Default)]
    struct Recorder {
        waits: Vec<Duration>,
    }

    impl Pacer for Recorder {
        fn elapsed(&self) -> Duration {
            self.waits.iter().sum()
        }

        fn wait(&mut self, d: Duration) -> impl Future<Output = ()> + Send {
            self.waits.push(d);
            std::future::ready(())
        }
    }

    /// A request form as the test server saw it.
    type Fields = Vec<(String, String)>;

    /// A token endpoint that answers from a script, in order, and records the
    /// forms it was sent.
    #[derive(Clone, Default)]
    struct Script {
        answers: Arc<Mutex<Vec<(StatusCode, Value)>>>,
        forms: Arc<Mutex<Vec<Fields>>>,
    }

    async fn answer(State(script): State<Script>, Form(form): Form<Fields>) -> Response {
        script.forms.lock().unwrap().push(form);
        let mut answers = script.answers.lock().unwrap();
        let (status, body) = if answers.is_empty() {
            (StatusCode::BAD_REQUEST, json!({ "error": "authorization_pending" }))
        } else {
            answers.remove(0)
        };
        (status, Json(body)).into_response()
    }

    /// Serves the script on 127.0.0.1:0 and returns a client of tenant `acme`.
    async fn serve(answers: Vec<(StatusCode, Value)>) -> (PublicClient, Script) {
        let script = Script::default();
        *script.answers.lock().unwrap() = answers;
        let app = Router::new()
            .route("/t/acme/token", post(answer))
            .route("/t/acme/device_authorization", post(answer))
            .route("/t/acme/revoke", post(answer))
            .with_state(script.clone());
        // Bound before the server task starts: connections queue until it runs.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let issuer = Issuer::new(&format!("http://{addr}"), "acme").unwrap();
        let client = PublicClient::new(issuer, "postern-cli", Duration::from_secs(5)).unwrap();
        (client, script)
    }

    fn pending(error: &str) -> (StatusCode, Value) {
        (
            StatusCode::BAD_REQUEST,
            json!({ "error": error, "error_description": "wait" }),
        )
    }

    fn tokens() -> (StatusCode, Value) {
        (
            StatusCode::OK,
            json!({ "access_token": "at", "refresh_token": "rt", "expires_in": 600, "token_type": "Bearer", "scope": "openid postern:admin" }),
        )
    }

    fn authorization(expires_in: u64, interval: Option<u64>) -> DeviceAuthorization {
        DeviceAuthorization {
            device_code: "the-device-code".into(),
            user_code: "BCDF-GHJK".into(),
            verification_uri: "http://x/device".into(),
            verification_uri_complete: None,
            expires_in,
            interval,
        }
    }

    #[tokio::test]
    async fn starts_and_polls_through_pending_and_slow_down() {
        let device = json!({
            "device_code": "the-device-code", "user_code": "BCDF-GHJK",
            "verification_uri": "http://x/t/acme/device",
            "verification_uri_complete": "http://x/t/acme/device?user_code=BCDF-GHJK",
            "expires_in": 600, "interval": 5,
        });
        let (client, script) = serve(vec![
            (StatusCode::OK, device),
            pending("authorization_pending"),
            pending("slow_down"),
            pending("authorization_pending"),
            tokens(),
        ])
        .await;
        let auth = client.start_device_authorization("openid postern:admin").await.unwrap();
        assert_eq!(auth.user_code, "BCDF-GHJK");
        assert_eq!(auth.verification_url(), "http://x/t/acme/device?user_code=BCDF-GHJK");
        assert!(!format!("{auth:?}").contains("the-device-code"));

        let mut pacer = Recorder::default();
        let tokens = client.poll_device(&auth, DEFAULT_MAX_WAIT, &mut pacer).await.unwrap();
        assert_eq!(tokens.access_token.expose(), "at");
        assert_eq!(tokens.refresh_token.unwrap().expose(), "rt");
        // 5 s, 5 s, then 10 s after slow_down, for this and later polls.
        let secs: Vec<u64> = pacer.waits.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [5, 5, 10, 10]);

        let forms = script.forms.lock().unwrap();
        assert_eq!(forms.len(), 5);
        let start = &forms[0];
        assert!(start.contains(&("client_id".into(), "postern-cli".into())));
        assert!(start.contains(&("scope".into(), "openid postern:admin".into())));
        for poll in &forms[1..] {
            assert!(poll.contains(&("grant_type".into(), GRANT_DEVICE_CODE.into())));
            assert!(poll.contains(&("device_code".into(), "the-device-code".into())));
            assert!(poll.contains(&("client_id".into(), "postern-cli".into())));
        }
    }

    #[tokio::test]
    async fn a_registration_approval_names_its_component() {
        let device = json!({
            "device_code": "dc", "user_code": "BCDF-GHJK",
            "verification_uri": "http://x/t/acme/device", "expires_in": 600,
        });
        let (client, script) = serve(vec![(StatusCode::OK, device)]).await;
        let auth = client
            .start_registration_approval("postern:register:agent", "dc01")
            .await
            .unwrap();
        assert_eq!(auth.verification_url(), "http://x/t/acme/device");
        let forms = script.forms.lock().unwrap();
        assert!(forms[0].contains(&("scope".into(), "postern:register:agent".into())));
        assert!(forms[0].contains(&("component_name".into(), "dc01".into())));
        assert!(forms[0].contains(&("client_id".into(), "postern-cli".into())));
    }

    #[tokio::test]
    async fn denial_and_expiry_end_the_wait() {
        let (client, _) = serve(vec![pending("authorization_pending"), pending("access_denied")]).await;
        let result = client
            .poll_device(&authorization(600, Some(1)), DEFAULT_MAX_WAIT, &mut Recorder::default())
            .await;
        assert!(matches!(result, Err(ClientError::AccessDenied)), "{result:?}");

        let (client, _) = serve(vec![pending("expired_token")]).await;
        let result = client
            .poll_device(&authorization(600, None), DEFAULT_MAX_WAIT, &mut Recorder::default())
            .await;
        assert!(matches!(result, Err(ClientError::Expired)), "{result:?}");

        let (client, _) = serve(vec![pending("invalid_client")]).await;
        let result = client
            .poll_device(&authorization(600, None), DEFAULT_MAX_WAIT, &mut Recorder::default())
            .await;
        assert_eq!(result.unwrap_err().oauth_error(), Some("invalid_client"));
    }

    #[tokio::test]
    async fn polling_stops_at_the_deadline() {
        // Always pending: the code's 30 s lifetime bounds the wait.
        let (client, script) = serve(vec![]).await;
        let mut pacer = Recorder::default();
        let result = client
            .poll_device(&authorization(30, Some(5)), DEFAULT_MAX_WAIT, &mut pacer)
            .await;
        assert!(matches!(result, Err(ClientError::TimedOut)), "{result:?}");
        assert_eq!(pacer.elapsed(), Duration::from_secs(30));
        assert_eq!(script.forms.lock().unwrap().len(), 6);

        // The caller's limit, when shorter, wins.
        let mut pacer = Recorder::default();
        let result = client
            .poll_device(&authorization(600, Some(5)), Duration::from_secs(12), &mut pacer)
            .await;
        assert!(matches!(result, Err(ClientError::TimedOut)));
        assert_eq!(pacer.waits.len(), 2);
    }

    #[tokio::test]
    async fn an_unreachable_service_fails_after_a_few_tries() {
        // Bind and drop: nothing listens on that port any more.
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let issuer = Issuer::new(&format!("http://{addr}"), "acme").unwrap();
        let client = PublicClient::new(issuer, "postern-cli", Duration::from_secs(5)).unwrap();
        let mut pacer = Recorder::default();
        let result = client
            .poll_device(&authorization(600, Some(1)), DEFAULT_MAX_WAIT, &mut pacer)
            .await;
        assert!(matches!(result, Err(ClientError::Transport { .. })), "{result:?}");
        assert_eq!(pacer.waits.len(), 3);
        assert!(client.start_device_authorization("openid").await.is_err());
    }

    #[tokio::test]
    async fn refresh_and_revoke_send_the_refresh_token() {
        let invalid_grant = json!({ "error": "invalid_grant", "error_description": "revoked" });
        let (client, script) = serve(vec![
            tokens(),
            (StatusCode::BAD_REQUEST, invalid_grant),
            (StatusCode::OK, json!({})),
            (StatusCode::SERVICE_UNAVAILABLE, json!("down")),
        ])
        .await;
        let tokens = client.refresh(&"old-rt".into()).await.unwrap();
        assert_eq!(tokens.access_token.expose(), "at");
        let err = client.refresh(&"old-rt".into()).await.unwrap_err();
        assert_eq!(err.oauth_error(), Some("invalid_grant"));
        assert_eq!(err.to_string(), "invalid_grant: revoked");
        client.revoke(&"new-rt".into()).await.unwrap();
        let err = client.revoke(&"new-rt".into()).await.unwrap_err();
        assert!(matches!(err, ClientError::InvalidResponse(_)), "{err:?}");
        let forms = script.forms.lock().unwrap();
        assert!(forms[0].contains(&("grant_type".into(), "refresh_token".into())));
        assert!(forms[0].contains(&("refresh_token".into(), "old-rt".into())));
        assert!(forms[0].contains(&("client_id".into(), "postern-cli".into())));
        assert!(forms[2].contains(&("token".into(), "new-rt".into())));
    }
}
