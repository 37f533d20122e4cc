//! The administration REST API under `/api/v1`, authorized by STS-issued bearer
//! tokens.
//!
//! A caller presents `Authorization: Bearer <token>`: an access token of their
//! tenant's issuer with the audience `urn:postern:admin-api` and the scope
//! `postern:admin` (what `postern admin login` obtains with the device flow).
//! Every request acts inside the caller's tenant; objects of other tenants do
//! not exist for it (404). Each route declares the role it needs in one table
//! ([`routes()`]); operators, the global administrators of the system tenant,
//! additionally manage tenants and the installation.
//!
//! The OpenAPI document of every route is at `GET /api/v1/openapi.json`
//! ([`openapi_document`]), open to anyone: it describes the API and holds
//! nothing of a tenant.
//!
//! Bodies are JSON ([`wire`]); errors are `{ "error", "message", "problems" }`
//! with 400 (every validation problem listed), 401, 403, 404, 409 or 503. Every
//! change is recorded in the hash-chained audit log.
#![warn(missing_docs)]

mod apps;
mod auth;
mod clients;
mod components;
mod connector_groups;
mod domains;
mod error;
mod groups;
mod input;
mod logs;
mod me;
mod openapi;
mod policies;
mod registration_tokens;
mod releases;
mod roles;
mod routes;
mod system;
mod tenants;
mod users;
mod views;
pub use postern_admin_wire as wire;

use std::sync::Arc;

use axum::Router;
use postern_store::{HostRules, Store};
use postern_sts::Sts;
use postern_time::{SharedClock, UnixTime};

pub use openapi::{OPENAPI_PATH, document as openapi_document};
pub use routes::{Access, RouteSpec, Verb, routes};

/// The admin API's routes (absolute paths under `/api/v1`), with `state`
/// applied, for the service to merge into its router.
pub fn router(state: AdminState) -> Router {
    routes::build(state)
}

/// What the admin API's handlers work with, given explicitly by the service.
#[derive(Clone)]
pub struct AdminState {
    /// All persistent state: every handler reads and writes here.
    pub(crate) store: Store,
    /// The service clock (audit entries, creation times, component health).
    pub(crate) clock: SharedClock,
    /// The STS, only for what is its own: verifying bearer tokens, provisioning
    /// tenants, hashing passwords, rotating signing keys and evaluating access.
    pub(crate) sts: Arc<Sts>,
    /// The installation's rules for app hosts (SEC-12).
    pub(crate) host_rules: Arc<HostRules>,
    /// The front door, when it runs in this process; without it, the routes
    /// that act on it answer 503.
    pub(crate) front_door: Option<Arc<dyn FrontDoorKeys>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("sts", &self.sts)
            .field("front_door", &self.front_door.is_some())
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// The admin API over `store`, on `clock`, with `sts` for tokens, tenants
    /// and passwords (the same store and clock the STS was built with). Without
    /// [`with_host_rules`](Self::with_host_rules), the default rules for app
    /// hosts: hosts under a tenant's verified domains only, no app domain, no
    /// reserved host. Without [`with_front_door`](Self::with_front_door), the
    /// routes that act on the front door answer 503.
    pub fn new(store: Store, clock: SharedClock, sts: Arc<Sts>) -> Self {
        Self {
            store,
            clock,
            sts,
            host_rules: Arc::default(),
            front_door: None,
        }
    }

    /// The installation's rules for app hosts (SEC-12).
    pub fn with_host_rules(mut self, rules: Arc<HostRules>) -> Self {
        self.host_rules = rules;
        self
    }

    /// The front door the routes that act on it call.
    pub fn with_front_door(mut self, front_door: Arc<dyn FrontDoorKeys>) -> Self {
        self.front_door = Some(front_door);
        self
    }

    /// The current time from the service clock.
    pub(crate) fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// The front door, or the 503 of a process where it does not run.
    pub(crate) fn front_door(&self) -> Result<&Arc<dyn FrontDoorKeys>, error::ApiError> {
        self.front_door
            .as_ref()
            .ok_or_else(|| error::ApiError::Unavailable("the front door does not run in this process".into()))
    }
}

/// What the admin API asks of the front door (provided by the service, which
/// owns it).
pub trait FrontDoorKeys: Send + Sync {
    /// Makes a new cookie key the sealing one; with `revoke_older`, deletes every
    /// older key. Returns the new key's ID, or why it failed.
    fn rotate_cookie_key(&self, revoke_older: bool) -> BoxFuture<'_, Result<String, String>>;

    /// Tests a published app of the caller's tenant (already loaded and
    /// checked by the handler): DNS, connected connectors, and a request to the
    /// backend through a tunnel. The default answers that the front door does
    /// not run here.
    fn probe_app(&self, app: postern_store::App) -> BoxFuture<'_, Result<wire::AppProbe, String>> {
        let _ = app;
        Box::pin(async { Err("the front door does not run in this process".to_owned()) })
    }
}

/// A boxed future of a [`FrontDoorKeys`] method.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
