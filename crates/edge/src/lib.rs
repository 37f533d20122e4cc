//! The front door of published apps (APP-1..APP-7, SEC-1, SEC-3, SEC-8, BEY-2,
//! BEY-3): requests for an app's external host are routed to the app, checked
//! (pre-authentication unless the app is passthrough, assignment), cleaned,
//! annotated with the user's identity and sent through a tunnel of the app's
//! connector group; the answer streams back, translated where the app asks.
//!
//! Who may call: anyone may reach a passthrough app (the backend decides); for a
//! pre-authenticated app, only a user signed in at the app's tenant whose session
//! cookie opens for this app and who is enabled and assigned to it (rechecked
//! every [`EdgeOptions::access_cache_ttl`]). `/robots.txt` on every app host is
//! answered here and never forwarded.
#![warn(missing_docs)]

mod access_log;
mod authority;
mod body_limit;
mod cookies;
mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod hosts;
mod pages;
mod paths;
mod preauth;
mod probe;
mod rate_limits;
mod routing;
mod session;
mod signout;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::Response;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use postern_keyring::Keyring;
use postern_store::cache::{ReadCache, TIME_TO_LIVE};
use postern_store::{Preauth, Store};
use postern_sts::Sts;
use postern_time::UnixTime;
use postern_tunnel::TunnelRegistry;

pub use access_log::TARGET as ACCESS_LOG_TARGET;
pub use authority::{AuthorityError, bad_authority_response, request_authority};
pub use forward::{ASSERTION_HEADER, BACKEND_REQUEST_ID_HEADER, EMAIL_HEADER, GROUPS_HEADER, USER_HEADER};
pub use paths::PathError;
pub use probe::{AppProbe, ProbeOutcome};
pub use rate_limits::{LimitKind, Rate, RateLimitSettings, RateLimits, Throttled, client_key, wants_json};
pub use routing::{Routed, Routing, normalize_host};

/// `Strict-Transport-Security` of HTTPS apps: a year, the app's host only (its
/// subdomains may be other apps, or not ours).
const HSTS: &str = "max-age=31536000";

/// How often a running service rereads the cookie key ring.
pub const COOKIE_KEYS_REFRESH: Duration = Duration::from_secs(30);

/// Most identity assertions kept for reuse.
const MAX_CACHED_ASSERTIONS: usize = 16_384;

/// Knobs of the front door.
#[derive(Clone, Debug)]
pub struct EdgeOptions {
    /// How long an app session lasts after signing in.
    pub session_lifetime: Duration,
    /// How long a sign-in may take (the flow cookie's life).
    pub flow_lifetime: Duration,
    /// How long a user's enabled/assigned/groups answer is reused.
    pub access_cache_ttl: Duration,
    /// Lifetime of identity assertions sent to backends.
    pub assertion_ttl: Duration,
    /// Time beyond an app's backend timeout the front door waits for the
    /// connector's answer before answering 504 itself.
    pub response_head_slack: Duration,
    /// Which hosts a tenant may publish on (SEC-12): apps on others are not served.
    pub host_rules: Arc<postern_store::HostRules>,
    /// Rate limits per client address, app and tenant (SEC-9).
    pub rate_limits: RateLimitSettings,
    /// Largest request body forwarded to an app without a limit of its own;
    /// `None`: no limit.
    pub app_max_body_bytes: Option<u64>,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        Self {
            session_lifetime: Duration::from_secs(8 * 3600),
            flow_lifetime: Duration::from_secs(600),
            access_cache_ttl: Duration::from_secs(30),
            assertion_ttl: Duration::from_secs(300),
            response_head_slack: Duration::from_secs(5),
            host_rules: Arc::default(),
            rate_limits: RateLimitSettings::default(),
            app_max_body_bytes: None,
        }
    }
}

/// Why the front door could not start or do something.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] postern_store::StoreError),
    /// The STS failed.
    #[error(transparent)]
    Sts(#[from] postern_sts::StsError),
    /// Sealing or randomness failed.
    #[error(transparent)]
    Keyring(#[from] postern_keyring::KeyringError),
    /// A bug or impossible state.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Where a request came from, as the listener saw it.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    /// The TCP peer.
    pub peer_ip: IpAddr,
    /// Whether the peer is a trusted proxy (its `X-Forwarded-For` chain is kept).
    pub peer_is_trusted_proxy: bool,
    /// `https` or `http`: how the user reached the service (from a trusted
    /// proxy's `X-Forwarded-Proto`, else the listener's own).
    pub proto: &'static str,
}

/// The front door.
pub struct Edge {
    sts: Arc<Sts>,
    store: Store,
    tunnels: Arc<TunnelRegistry>,
    cookies: cookies::CookieKeys,
    apps: routing::AppDirectory,
    access: ReadCache<(String, String), preauth::AccessDecision>,
    url_maps: ReadCache<String, Arc<forward::AppUrls>>,
    host_refusals: ReadCache<String, Option<postern_store::HostRefusal>>,
    assertions: Mutex<HashMap<(String, String), (String, UnixTime)>>,
    rate_limits: RateLimits,
    tenant_limits: ReadCache<String, postern_store::TenantLimits>,
    options: EdgeOptions,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge").finish_non_exhaustive()
    }
}

impl Edge {
    /// Builds the front door, loading (or on first start making) its cookie keys.
    pub async fn new(
        sts: Arc<Sts>,
        keyring: Arc<Keyring>,
        tunnels: Arc<TunnelRegistry>,
        options: EdgeOptions,
    ) -> Result<Arc<Self>, EdgeError> {
        let store = sts.store().clone();
        let now = sts.now();
        let clock = sts.clock();
        let cookies = cookies::CookieKeys::load(store.clone(), keyring, options.session_lifetime, now).await?;
        Ok(Arc::new(Self {
            apps: routing::AppDirectory::new(store.clone(), clock.clone()),
            access: ReadCache::with_clock(options.access_cache_ttl, clock.clone()),
            url_maps: ReadCache::with_clock(TIME_TO_LIVE, clock.clone()),
            host_refusals: ReadCache::with_clock(TIME_TO_LIVE, clock.clone()),
            assertions: Mutex::new(HashMap::new()),
            rate_limits: RateLimits::new(options.rate_limits),
            tenant_limits: ReadCache::with_clock(TIME_TO_LIVE, clock),
            sts,
            store,
            tunnels,
            cookies,
            options,
        }))
    }

    fn now(&self) -> UnixTime {
        self.sts.now()
    }

    /// Routes a request by its host (see [`request_authority`]) and path; a
    /// request without a usable host is not for an app.
    pub async fn route<B>(&self, request: &Request<B>) -> Routing {
        match request_authority(request) {
            Ok(Some(host)) => self.route_host(&host, request.uri().path()).await,
            Ok(None) | Err(_) => Routing::NotAnAppHost,
        }
    }

    /// Routes a request for `host` (normalized, from [`request_authority`]) and
    /// `path` (as sent).
    pub async fn route_host(&self, host: &str, path: &str) -> Routing {
        match self.apps.route(host, path).await {
            Ok(r) => r,
            Err(e) => {
                // The database is down: the service's own routes answer (their
                // readiness probe says why); apps cannot be served without it.
                tracing::warn!(error = %e, "app routing unavailable");
                Routing::NotAnAppHost
            }
        }
    }

    /// Serves a request on an app host: `routing` from [`Edge::route`] (not
    /// [`Routing::NotAnAppHost`]). Responses of an HTTPS app reached over HTTPS
    /// carry HSTS (a year, this host only) unless the backend sent its own.
    /// Every request gets an access log line (see [`ACCESS_LOG_TARGET`]) once
    /// its response has ended.
    pub async fn handle(&self, routing: Routing, mut request: Request<Incoming>, client: ClientInfo) -> Response {
        let https_app = matches!(&routing, Routing::App(r) if r.app.external_scheme == postern_store::ExternalScheme::Https)
            && client.proto == "https";
        let request_id = uuid::Uuid::new_v4().to_string();
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| request.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let record = access_log::AccessRecord::new(&request_id, &host, request.method(), request.uri().path());
        if let Routing::App(routed) = &routing {
            record.set_app(&routed.app);
        }
        request.extensions_mut().insert(record.clone());
        let pending = access_log::PendingAnswer::new(&record);
        let mut response = self.handle_routed(routing, request, client, &request_id).await;
        pending.disarm();
        if https_app {
            response
                .headers_mut()
                .entry(http::header::STRICT_TRANSPORT_SECURITY)
                .or_insert(http::HeaderValue::from_static(HSTS));
        }
        let status = response.status().as_u16();
        response.map(|body| axum::body::Body::new(access_log::LoggedBody::new(body, record, status)))
    }

    async fn handle_routed(
        &self,
        routing: Routing,
        request: Request<Incoming>,
        client: ClientInfo,
        request_id: &str,
    ) -> Response {
        if paths::normalize(request.uri().path()).is_ok_and(|p| p == "/robots.txt") {
            return pages::robots();
        }
        if let Routing::BadPath(why) = routing {
            tracing::info!(request = %request_id, reason = %why, "request path refused");
            return pages::error(
                StatusCode::BAD_REQUEST,
                "Bad request",
                &format!("{why}; no application is published there."),
                request_id,
            );
        }
        let Routing::App(Routed { app, path }) = routing else {
            return pages::error(
                StatusCode::NOT_FOUND,
                "Not found",
                "No application is published at this address.",
                request_id,
            );
        };
        if let Err(throttled) = self.check_app_rate(&app).await {
            tracing::debug!(request = %request_id, app = %app.name, limit = throttled.limit.as_str(), "rate limited");
            return throttled.response(wants_json(&request));
        }
        match self.host_refusal(&app).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                return pages::error(
                    StatusCode::MISDIRECTED_REQUEST,
                    "Not available at this address",
                    "The organisation that published this application has not verified this address as its own, so the application is not served here. Its administrator can see why in the list of apps.",
                    request_id,
                );
            }
            Err(e) => return self.internal_error(&e, request_id),
        }
        if app.external_scheme == postern_store::ExternalScheme::Https && client.proto == "http" {
            let target = format!(
                "https://{}{}",
                app.external_host,
                request.uri().path_and_query().map_or("/", |pq| pq.as_str())
            );
            return pages::redirect(StatusCode::PERMANENT_REDIRECT, &target);
        }
        let access = match app.preauth {
            Preauth::Passthrough => None,
            Preauth::Sts => {
                let (parts, body) = request.into_parts();
                if preauth::is_own_path(&path) {
                    return self.own_endpoint(&app, &path, &parts, body, request_id).await;
                }
                match self.require_access(&app, &parts, request_id).await {
                    Ok(access) => {
                        let request = Request::from_parts(parts, body);
                        return self
                            .forward(&app, &path, request, &client, Some(&access), request_id)
                            .await;
                    }
                    Err(response) => return response,
                }
            }
        };
        self.forward(&app, &path, request, &client, access.as_ref(), request_id)
            .await
    }

    /// Makes a new cookie key the sealing one. Sessions sealed with the old one
    /// stay valid until they expire, unless `revoke_older`: then every older key
    /// is deleted and every app session and sign-in in progress ends at once on
    /// this instance (on others at their next refresh, within
    /// [`COOKIE_KEYS_REFRESH`]).
    /// Returns the new key's ID.
    pub async fn rotate_cookie_key(&self, revoke_older: bool) -> Result<String, EdgeError> {
        self.cookies.rotate(self.now(), revoke_older).await
    }

    /// Rereads the cookie key ring: keys another instance made, retired or
    /// revoked take effect here. The service does it every
    /// [`COOKIE_KEYS_REFRESH`], so a revocation reaches every instance within
    /// that time.
    pub async fn refresh_cookie_keys(&self) -> Result<(), EdgeError> {
        self.cookies.refresh(self.now()).await
    }

    /// Periodic upkeep: rereads the cookie key ring (keys made or retired by
    /// another instance) and rotates the sealing key when it is older than 30 days.
    pub async fn maintain(&self) -> Result<(), EdgeError> {
        let now = self.now();
        self.cookies.refresh(now).await?;
        let due = self
            .cookies
            .newest_created()
            .is_none_or(|created| now.since(created) >= cookies::ROTATE_AFTER);
        if due {
            self.cookies.rotate(now, false).await?;
        }
        Ok(())
    }

    fn internal_error(&self, error: &EdgeError, request_id: &str) -> Response {
        tracing::error!(request = %request_id, error = %error, "front door error");
        pages::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The service could not handle this request. Try again; if it persists, quote the request ID to your administrator.",
            request_id,
        )
    }
}
