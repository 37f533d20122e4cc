//! Who is calling and whether they may: the bearer token is verified by the STS
//! (issuer, signature, audience `urn:postern:admin-api`, scope `postern:admin`,
//! expiry on the service clock), then the user is loaded from the store (it must
//! still exist and be enabled) with its roles, and checked against the [`Access`]
//! the route declares.
//!
//! The check runs as a layer on every route of the table ([`guard`]), before the
//! handler and its extractors, so no handler can forget it and a request without
//! a valid token never gets as far as having its body parsed.

use crate::AdminState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use postern_store::{NewAuditEntry, Role, StoreError, Tenant, User};

use crate::error::ApiError;
use crate::routes::Access;

/// The authenticated caller of a request, as the guard found them.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// The caller's tenant (from the token's issuer): everything the request
    /// does happens inside it.
    pub tenant: Tenant,
    /// The caller.
    pub user: User,
    /// The administrative roles the caller holds.
    pub roles: Vec<Role>,
}

impl Caller {
    /// The audit log's name for the caller.
    pub(crate) fn actor(&self) -> String {
        format!("user:{}", self.user.id)
    }

    /// Whether the caller holds `required` or a role that grants it.
    pub(crate) fn holds(&self, required: Role) -> bool {
        self.roles.iter().any(|r| r.satisfies(required))
    }

    /// Whether the caller is an operator: a global administrator of the
    /// system tenant, who may manage other tenants.
    pub(crate) fn is_operator(&self) -> bool {
        self.tenant.is_system && self.holds(Role::GlobalAdministrator)
    }

    /// Whether the caller's roles meet `access`.
    pub(crate) fn may(&self, access: Access) -> bool {
        match access {
            Access::AnyRole => !self.roles.is_empty(),
            Access::Role(role) => self.holds(role),
            Access::Operator => self.is_operator(),
        }
    }

    /// Appends an audit entry in the caller's tenant.
    pub(crate) async fn audit(
        &self,
        state: &AdminState,
        action: &str,
        target: String,
        detail: serde_json::Value,
    ) -> Result<(), ApiError> {
        self.audit_in(state, &self.tenant.id, action, target, detail).await
    }

    /// Appends an audit entry in `tenant_id` (an operator acting on another
    /// tenant), naming the caller as the actor.
    pub(crate) async fn audit_in(
        &self,
        state: &AdminState,
        tenant_id: &str,
        action: &str,
        target: String,
        detail: serde_json::Value,
    ) -> Result<(), ApiError> {
        let entry = NewAuditEntry {
            tenant_id: Some(tenant_id.to_owned()),
            actor: self.actor(),
            action: action.to_owned(),
            target,
            detail,
        };
        state.store.append_audit(&entry, state.now()).await?;
        Ok(())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("handler reached without the access guard".into()))
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer_token(parts: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let value = parts
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthenticated("a bearer token is required".into()))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("malformed Authorization header".into()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(ApiError::Unauthenticated(
            "the Authorization header must be `Bearer <token>`".into(),
        )),
    }
}

/// Verifies the bearer token and loads the caller.
pub(crate) async fn authenticate(state: &AdminState, headers: &axum::http::HeaderMap) -> Result<Caller, ApiError> {
    let token = bearer_token(headers)?;
    let (tenant, claims) = match state.sts.verify_admin_token(token).await? {
        Ok(verified) => verified,
        Err(reason) => return Err(ApiError::Unauthenticated(reason.to_string())),
    };
    let user = match state.store.user(&tenant.id, &claims.sub).await {
        Ok(user) => user,
        Err(StoreError::NotFound) => {
            return Err(ApiError::Unauthenticated("the account no longer exists".into()));
        }
        Err(e) => return Err(e.into()),
    };
    if !user.enabled {
        return Err(ApiError::Unauthenticated("the account is disabled".into()));
    }
    let roles = state.store.user_roles(&user.id).await?;
    Ok(Caller { tenant, user, roles })
}

/// Refuses a caller whose roles do not meet `access`.
fn authorize(caller: &Caller, access: Access) -> Result<(), ApiError> {
    if caller.may(access) {
        return Ok(());
    }
    Err(ApiError::Forbidden(match access {
        Access::AnyRole => "this operation requires an administrative role".into(),
        Access::Role(role) => format!("this operation requires the {role} role (or higher)"),
        Access::Operator => "this operation is for operators: global administrators of the system tenant".into(),
    }))
}

/// The layer on every route: authenticates, authorizes against the route's
/// declared [`Access`], and hands the [`Caller`] to the handler.
pub(crate) async fn guard(
    State((state, access)): State<(AdminState, Access)>,
    mut request: Request,
    next: Next,
) -> Response {
    let checked = match authenticate(&state, request.headers()).await {
        Ok(caller) => authorize(&caller, access).map(|()| caller),
        Err(e) => Err(e),
    };
    match checked {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer_token(&headers("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(&headers("bearer  abc ")).unwrap(), "abc");
        for bad in ["Basic abc", "Bearer", "Bearer   ", "abc"] {
            assert!(bearer_token(&headers(bad)).is_err(), "{bad}");
        }
        assert!(bearer_token(&HeaderMap::new()).is_err());
    }
}
