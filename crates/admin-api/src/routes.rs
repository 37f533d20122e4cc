//! The route table: every route of the admin API with the access it requires,
//! in one declarative list from which the router is built. The access check is
//! a layer built from the same entry, so what the table says is what is
//! enforced, and a test can walk the table to prove it for every route.

use crate::AdminState;
use axum::Router;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{from_fn_with_state, map_response};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, any, get, on};
use postern_store::Role;

use crate::error::ApiError;
use crate::{
    apps, auth, clients, components, connector_groups, domains, groups, logs, me, openapi, policies,
    registration_tokens, releases, roles, system, tenants, users,
};

/// Who may call a route. Roles count "or higher" ([`Role::satisfies`]): a
/// global administrator passes every role check of its tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Any administrative role of the caller's tenant. `GET /api/v1/me` uses
    /// it (a user without any role has nothing to do here, and the 403 tells
    /// them so), and so does `POST /api/v1/registration-tokens`, whose handler
    /// then requires the role the requested kind of component needs: the
    /// lower bound is here, the rest depends on the body.
    AnyRole,
    /// The given role or one that grants it.
    Role(Role),
    /// An operator: a global administrator of the system tenant. Operator
    /// routes act on other tenants or on the whole installation.
    Operator,
}

/// The HTTP methods the admin API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// `GET` (and `HEAD`).
    Get,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
}

impl Verb {
    /// The HTTP method.
    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Put => Method::PUT,
            Verb::Patch => Method::PATCH,
            Verb::Delete => Method::DELETE,
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
            Verb::Patch => MethodFilter::PATCH,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// Builds the method router of one route for a method filter.
type HandlerFn = fn(MethodFilter) -> MethodRouter<AdminState>;

/// One route of the admin API.
pub struct RouteSpec {
    /// Method.
    pub verb: Verb,
    /// Absolute path, with `{name}` parameters.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    handler: HandlerFn,
}

impl std::fmt::Debug for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {} ({:?})", self.verb, self.path, self.access)
    }
}

const GLOBAL_ADMIN: Access = Access::Role(Role::GlobalAdministrator);
const APP_ADMIN: Access = Access::Role(Role::ApplicationAdministrator);
const HYBRID_ADMIN: Access = Access::Role(Role::HybridIdentityAdministrator);

/// Shorthand for a table row.
const fn route(verb: Verb, path: &'static str, access: Access, handler: HandlerFn) -> RouteSpec {
    RouteSpec {
        verb,
        path,
        access,
        handler,
    }
}

use Verb::{Delete, Get, Patch, Post, Put};

/// Every route of the admin API.
static ROUTES: &[RouteSpec] = &[
    route(Get, "/api/v1/me", Access::AnyRole, |m| on(m, me::show)),
    // Tenants: operators only.
    route(Get, "/api/v1/tenants", Access::Operator, |m| on(m, tenants::list)),
    route(Post, "/api/v1/tenants", Access::Operator, |m| on(m, tenants::create)),
    route(Delete, "/api/v1/tenants/{name}", Access::Operator, |m| {
        on(m, tenants::delete)
    }),
    route(Put, "/api/v1/tenants/{name}/limits", Access::Operator, |m| {
        on(m, tenants::set_limits)
    }),
    route(
        Post,
        "/api/v1/tenants/{name}/domains/{domain}/verify",
        Access::Operator,
        |m| on(m, domains::operator_verify),
    ),
    // The caller's own tenant.
    route(Get, "/api/v1/tenant", GLOBAL_ADMIN, |m| on(m, tenants::show_own)),
    route(Patch, "/api/v1/tenant", GLOBAL_ADMIN, |m| on(m, tenants::update_own)),
    // Domains: hybrid identity administrators may read them and set auth modes.
    route(Get, "/api/v1/domains", HYBRID_ADMIN, |m| on(m, domains::list)),
    route(Post, "/api/v1/domains", GLOBAL_ADMIN, |m| on(m, domains::create)),
    route(Get, "/api/v1/domains/{name}", HYBRID_ADMIN, |m| on(m, domains::show)),
    route(Patch, "/api/v1/domains/{name}", HYBRID_ADMIN, |m| {
        on(m, domains::update)
    }),
    route(Delete, "/api/v1/domains/{name}", GLOBAL_ADMIN, |m| {
        on(m, domains::delete)
    }),
    route(Post, "/api/v1/domains/{name}/verify", GLOBAL_ADMIN, |m| {
        on(m, domains::verify)
    }),
    // Users.
    route(Get, "/api/v1/users", GLOBAL_ADMIN, |m| on(m, users::list)),
    route(Post, "/api/v1/users", GLOBAL_ADMIN, |m| on(m, users::create)),
    route(Post, "/api/v1/users/directory", GLOBAL_ADMIN, |m| {
        on(m, users::name_directory_user)
    }),
    route(Get, "/api/v1/users/{id}", GLOBAL_ADMIN, |m| on(m, users::show)),
    route(Patch, "/api/v1/users/{id}", GLOBAL_ADMIN, |m| on(m, users::update)),
    route(Delete, "/api/v1/users/{id}", GLOBAL_ADMIN, |m| on(m, users::delete)),
    route(Post, "/api/v1/users/{id}/password", GLOBAL_ADMIN, |m| {
        on(m, users::set_password)
    }),
    route(Post, "/api/v1/users/{id}/mfa/reset", GLOBAL_ADMIN, |m| {
        on(m, users::reset_mfa)
    }),
    route(Put, "/api/v1/users/{id}/risk", GLOBAL_ADMIN, |m| {
        on(m, policies::set_user_risk)
    }),
    route(Delete, "/api/v1/users/{id}/risk", GLOBAL_ADMIN, |m| {
        on(m, policies::dismiss_user_risk)
    }),
    // Roles.
    route(Get, "/api/v1/users/{id}/roles", GLOBAL_ADMIN, |m| on(m, roles::list)),
    route(Put, "/api/v1/users/{id}/roles/{role}", GLOBAL_ADMIN, |m| {
        on(m, roles::assign)
    }),
    route(Delete, "/api/v1/users/{id}/roles/{role}", GLOBAL_ADMIN, |m| {
        on(m, roles::revoke)
    }),
    // Groups.
    route(Get, "/api/v1/groups", GLOBAL_ADMIN, |m| on(m, groups::list)),
    route(Post, "/api/v1/groups", GLOBAL_ADMIN, |m| on(m, groups::create)),
    route(Post, "/api/v1/groups/directory", GLOBAL_ADMIN, |m| {
        on(m, groups::ensure_directory)
    }),
    route(Get, "/api/v1/groups/{id}", GLOBAL_ADMIN, |m| on(m, groups::show)),
    route(Delete, "/api/v1/groups/{id}", GLOBAL_ADMIN, |m| on(m, groups::delete)),
    route(Get, "/api/v1/groups/{id}/members", GLOBAL_ADMIN, |m| {
        on(m, groups::members)
    }),
    route(Put, "/api/v1/groups/{id}/members/{user_id}", GLOBAL_ADMIN, |m| {
        on(m, groups::add_member)
    }),
    route(Delete, "/api/v1/groups/{id}/members/{user_id}", GLOBAL_ADMIN, |m| {
        on(m, groups::remove_member)
    }),
    // OAuth clients.
    route(Get, "/api/v1/clients", APP_ADMIN, |m| on(m, clients::list)),
    route(Post, "/api/v1/clients", APP_ADMIN, |m| on(m, clients::create)),
    route(Get, "/api/v1/clients/{client_id}", APP_ADMIN, |m| on(m, clients::show)),
    route(Delete, "/api/v1/clients/{client_id}", APP_ADMIN, |m| {
        on(m, clients::delete)
    }),
    // Published apps and their assignments.
    route(Get, "/api/v1/apps", APP_ADMIN, |m| on(m, apps::list)),
    route(Post, "/api/v1/apps", APP_ADMIN, |m| on(m, apps::create)),
    route(Get, "/api/v1/apps/{id}", APP_ADMIN, |m| on(m, apps::show)),
    route(Put, "/api/v1/apps/{id}", APP_ADMIN, |m| on(m, apps::replace)),
    route(Delete, "/api/v1/apps/{id}", APP_ADMIN, |m| on(m, apps::delete)),
    route(Post, "/api/v1/apps/{id}/test", APP_ADMIN, |m| on(m, apps::test)),
    route(Get, "/api/v1/apps/{id}/assignments", APP_ADMIN, |m| {
        on(m, apps::assignments)
    }),
    route(Post, "/api/v1/apps/{id}/assignments", APP_ADMIN, |m| {
        on(m, apps::assign)
    }),
    route(
        Delete,
        "/api/v1/apps/{id}/assignments/{kind}/{principal_id}",
        APP_ADMIN,
        |m| on(m, apps::unassign),
    ),
    // On-prem components: connectors for application administrators, agents
    // for hybrid identity administrators.
    route(Get, "/api/v1/connectors", APP_ADMIN, |m| {
        on(m, components::list_connectors)
    }),
    route(Get, "/api/v1/connectors/{id}", APP_ADMIN, |m| {
        on(m, components::show_connector)
    }),
    route(Delete, "/api/v1/connectors/{id}", APP_ADMIN, |m| {
        on(m, components::delete_connector)
    }),
    route(Put, "/api/v1/connectors/{id}/group", APP_ADMIN, |m| {
        on(m, components::move_connector)
    }),
    route(Get, "/api/v1/agents", HYBRID_ADMIN, |m| on(m, components::list_agents)),
    route(Get, "/api/v1/agents/{id}", HYBRID_ADMIN, |m| {
        on(m, components::show_agent)
    }),
    route(Delete, "/api/v1/agents/{id}", HYBRID_ADMIN, |m| {
        on(m, components::delete_agent)
    }),
    route(Get, "/api/v1/connector-groups", APP_ADMIN, |m| {
        on(m, connector_groups::list)
    }),
    route(Post, "/api/v1/connector-groups", APP_ADMIN, |m| {
        on(m, connector_groups::create)
    }),
    route(Get, "/api/v1/connector-groups/{id}", APP_ADMIN, |m| {
        on(m, connector_groups::show)
    }),
    route(Delete, "/api/v1/connector-groups/{id}", APP_ADMIN, |m| {
        on(m, connector_groups::delete)
    }),
    // The role depends on the kind of component in the body: checked by the
    // handler (connectors: application administrator, agents: hybrid identity
    // administrator).
    route(Post, "/api/v1/registration-tokens", Access::AnyRole, |m| {
        on(m, registration_tokens::create)
    }),
    // Conditional access: policies and named locations.
    route(Get, "/api/v1/policies", GLOBAL_ADMIN, |m| on(m, policies::list)),
    route(Post, "/api/v1/policies", GLOBAL_ADMIN, |m| on(m, policies::create)),
    route(Post, "/api/v1/policies/what-if", GLOBAL_ADMIN, |m| {
        on(m, policies::what_if)
    }),
    route(Get, "/api/v1/policies/{id}", GLOBAL_ADMIN, |m| on(m, policies::show)),
    route(Put, "/api/v1/policies/{id}", GLOBAL_ADMIN, |m| on(m, policies::replace)),
    route(Delete, "/api/v1/policies/{id}", GLOBAL_ADMIN, |m| {
        on(m, policies::delete)
    }),
    route(Get, "/api/v1/locations", GLOBAL_ADMIN, |m| {
        on(m, policies::list_locations)
    }),
    route(Post, "/api/v1/locations", GLOBAL_ADMIN, |m| {
        on(m, policies::create_location)
    }),
    route(Get, "/api/v1/locations/{id}", GLOBAL_ADMIN, |m| {
        on(m, policies::show_location)
    }),
    route(Put, "/api/v1/locations/{id}", GLOBAL_ADMIN, |m| {
        on(m, policies::replace_location)
    }),
    route(Delete, "/api/v1/locations/{id}", GLOBAL_ADMIN, |m| {
        on(m, policies::delete_location)
    }),
    // Logs.
    route(Get, "/api/v1/signins", GLOBAL_ADMIN, |m| on(m, logs::signins)),
    route(Get, "/api/v1/audit", GLOBAL_ADMIN, |m| on(m, logs::audit)),
    route(Get, "/api/v1/audit/verify", Access::Operator, |m| {
        on(m, logs::verify_audit)
    }),
    // Automatic updates: the tenant's policy, its components' versions and
    // update history.
    route(Get, "/api/v1/updates", GLOBAL_ADMIN, |m| on(m, releases::overview)),
    route(Put, "/api/v1/updates/policy", GLOBAL_ADMIN, |m| {
        on(m, releases::set_policy)
    }),
    route(Get, "/api/v1/updates/history", GLOBAL_ADMIN, |m| {
        on(m, releases::history)
    }),
    // Releases, for the whole installation, and the versions in the field.
    route(Get, "/api/v1/system/releases", Access::Operator, |m| {
        on(m, releases::list)
    }),
    route(Post, "/api/v1/system/releases", Access::Operator, |m| {
        on(m, releases::publish)
    }),
    route(
        Put,
        "/api/v1/system/releases/{id}/chunks/{seq}",
        Access::Operator,
        |m| on(m, releases::put_chunk),
    ),
    route(Post, "/api/v1/system/releases/{id}/complete", Access::Operator, |m| {
        on(m, releases::complete)
    }),
    route(Delete, "/api/v1/system/releases/{id}", Access::Operator, |m| {
        on(m, releases::delete)
    }),
    route(Get, "/api/v1/system/versions", Access::Operator, |m| {
        on(m, releases::field_versions)
    }),
    // The installation.
    route(Post, "/api/v1/system/signing-keys/rotate", Access::Operator, |m| {
        on(m, system::rotate_signing_key)
    }),
    route(Post, "/api/v1/system/cookie-keys/rotate", Access::Operator, |m| {
        on(m, system::rotate_cookie_key)
    }),
];

/// Every route of the admin API, as the router serves them.
pub fn routes() -> &'static [RouteSpec] {
    ROUTES
}

/// Builds the router from the table: each route wrapped in the access guard of
/// its own entry, and the OpenAPI document open to anyone. Paths under
/// `/api/v1` that match no route get a JSON 404.
pub(crate) fn build(state: AdminState) -> Router {
    let mut router = Router::new().route(openapi::OPENAPI_PATH, get(openapi::serve));
    for spec in ROUTES {
        let guard = from_fn_with_state((state.clone(), spec.access), auth::guard);
        router = router.route(spec.path, (spec.handler)(spec.verb.filter()).route_layer(guard));
    }
    router
        .route("/api/v1", any(unknown_route))
        .route("/api/v1/{*rest}", any(unknown_route))
        .layer(map_response(no_store))
        .with_state(state)
}

/// Admin data is never cached by browsers or proxies.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn unknown_route() -> Response {
    ApiError::NotFound.into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_route_is_declared_once_under_api_v1() {
        let mut seen = BTreeSet::new();
        for spec in routes() {
            assert!(spec.path.starts_with("/api/v1/"), "{spec:?}");
            assert!(
                seen.insert((spec.verb.method().to_string(), spec.path)),
                "declared twice: {spec:?}"
            );
        }
        assert!(seen.len() > 30);
    }

    #[test]
    fn operator_routes_are_the_cross_tenant_and_installation_ones() {
        let operator: BTreeSet<&str> = routes()
            .iter()
            .filter(|s| s.access == Access::Operator)
            .map(|s| s.path)
            .collect();
        for path in operator {
            assert!(
                path.starts_with("/api/v1/tenants")
                    || path.starts_with("/api/v1/system/")
                    || path == "/api/v1/audit/verify",
                "{path}"
            );
        }
    }
}
