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
use postern_store::HostRules;
use postern_sts::Sts;

pub use openapi::{OPENAPI_PATH, document as openapi_document};
pub use routes::{Access, RouteSpec, Verb, routes};

/// The admin API's routes (absolute paths under `/api/v1`), with state applied,
/// for the service to merge into its router. Routes that act on the front door
/// need a [`FrontDoorKeys`] as an `axum::Extension` layered on by the service;
/// without one they answer 503.
pub fn router(sts: Arc<Sts>) -> Router {
    routes::build(sts)
}

/// The installation's rules for app hosts (SEC-12), given by the service as an
/// `axum::Extension<Arc<HostRules>>`; without one, the defaults: hosts under a
/// tenant's verified domains only, no app domain, no reserved host.
#[derive(Clone, Debug)]
pub(crate) struct Rules(pub(crate) Arc<HostRules>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Rules {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Rules(
            parts.extensions.get::<Arc<HostRules>>().cloned().unwrap_or_default(),
        ))
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
