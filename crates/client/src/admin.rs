//! Typed calls of the admin API (`/api/v1`), with a bearer token. Request and
//! response bodies are the API's own wire types ([`postern_admin_wire`]).
//! A refusal keeps what the service said: [`ClientError::Api`] carries its
//! status, code, message and every validation problem.

use std::time::Duration;

use postern_admin_wire::{
    AppSettings, AppView, AssignApp, AssignmentView, AuditChainStatus, AuditQuery, AuditView, ClientCreated,
    ClientView, ComponentView, ConnectorGroupDetail, ConnectorGroupView, CookieKeyRotated, CreateClient,
    CreateConnectorGroup, CreateDomain, CreateGroup, CreateRegistrationToken, CreateTenant, CreateUser, DomainView,
    ErrorBody, GroupView, Me, MoveConnector, NameDirectoryUser, RegistrationTokenCreated, RotateCookieKey, SetPassword,
    SigninQuery, SigninView, SigningKeyRotated, TenantCreated, TenantView, UpdateDomain, UpdateTenantSettings,
    UpdateUser, UserRoles, UserView,
};
use postern_admin_wire::{
    LocationInput, LocationView, PolicyInput, PolicyView, SetUserRisk, UserRiskView, WhatIf, WhatIfResult,
};
use postern_keyring::SecretString;
use postern_model::{DomainAuthMode, PrincipalKind, Role};
use reqwest::{Method, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::error::ClientError;
use crate::http;

mod releases;
pub use releases::RELEASE_CHUNK;

/// A client of the admin API, acting as the holder of one access token.
#[derive(Clone, Debug)]
pub struct AdminClient {
    http: reqwest::Client,
    api: Url,
    token: SecretString,
}

/// The body of a request without one.
const NO_BODY: Option<&()> = None;

impl AdminClient {
    /// A client of the service at `server`, each request limited to `timeout`.
    pub fn new(server: &str, access_token: SecretString, timeout: Duration) -> Result<Self, ClientError> {
        let server = http::parse_server(server)?;
        Ok(Self {
            http: http::client(timeout)?,
            api: http::join(&server, &["api", "v1"])?,
            token: access_token,
        })
    }

    /// Sends a request to `/api/v1/{segments...}` and returns the successful
    /// response, or the service's refusal as [`ClientError::Api`].
    async fn exchange<B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
        body: Option<&B>,
    ) -> Result<(Response, Url), ClientError> {
        let url = http::join(&self.api, segments)?;
        let mut request = build(self.http.request(method, url.clone()).bearer_auth(self.token.expose()));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = http::send(request, &url).await?;
        if response.status().is_success() {
            return Ok((response, url));
        }
        let status = response.status();
        let bytes = response.bytes().await.map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })?;
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => ClientError::Api {
                status: status.as_u16(),
                error: body.error,
                message: body.message,
                problems: body.problems,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                error: "http_error".into(),
                message: format!("{url} answered HTTP {status}"),
                problems: Vec::new(),
            },
        })
    }

    /// A request whose answer is a JSON value.
    async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let (response, url) = self.exchange(method, segments, |r| r, body).await?;
        http::json(response, &url).await
    }

    /// A request whose answer has no body (204).
    async fn call_empty<B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<(), ClientError> {
        self.exchange(method, segments, |r| r, body).await.map(|_| ())
    }

    /// A `GET` with a query string.
    async fn query<T: DeserializeOwned, Q: Serialize>(&self, segments: &[&str], query: &Q) -> Result<T, ClientError> {
        let (response, url) = self
            .exchange(Method::GET, segments, |r| r.query(query), NO_BODY)
            .await?;
        http::json(response, &url).await
    }

    // ---- caller and tenants ----------------------------------------------------

    /// `GET /me`: who the token belongs to.
    pub async fn me(&self) -> Result<Me, ClientError> {
        self.call(Method::GET, &["me"], NO_BODY).await
    }

    /// `GET /tenants` (operators).
    pub async fn tenants(&self) -> Result<Vec<TenantView>, ClientError> {
        self.call(Method::GET, &["tenants"], NO_BODY).await
    }

    /// `POST /tenants` (operators).
    pub async fn create_tenant(&self, request: &CreateTenant) -> Result<TenantCreated, ClientError> {
        self.call(Method::POST, &["tenants"], Some(request)).await
    }

    /// `DELETE /tenants/{name}` (operators).
    pub async fn delete_tenant(&self, name: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["tenants", name], NO_BODY).await
    }

    /// `POST /tenants/{name}/domains/{domain}/verify` (operators vouch for a domain).
    pub async fn verify_tenant_domain(&self, tenant: &str, domain: &str) -> Result<DomainView, ClientError> {
        self.call(Method::POST, &["tenants", tenant, "domains", domain, "verify"], NO_BODY)
            .await
    }

    /// `PUT /tenants/{name}/limits` (operators set a tenant's own limits; absent
    /// ones are the installation's).
    pub async fn set_tenant_limits(
        &self,
        name: &str,
        limits: &postern_admin_wire::TenantLimitsView,
    ) -> Result<TenantView, ClientError> {
        self.call(Method::PUT, &["tenants", name, "limits"], Some(limits)).await
    }

    /// `GET /tenant`: the caller's tenant.
    pub async fn tenant(&self) -> Result<TenantView, ClientError> {
        self.call(Method::GET, &["tenant"], NO_BODY).await
    }

    /// `PATCH /tenant`.
    pub async fn update_tenant(&self, update: &UpdateTenantSettings) -> Result<TenantView, ClientError> {
        self.call(Method::PATCH, &["tenant"], Some(update)).await
    }

    // ---- domains ---------------------------------------------------------------

    /// `GET /domains`.
    pub async fn domains(&self) -> Result<Vec<DomainView>, ClientError> {
        self.call(Method::GET, &["domains"], NO_BODY).await
    }

    /// `POST /domains`.
    pub async fn create_domain(&self, name: &str) -> Result<DomainView, ClientError> {
        let body = CreateDomain { name: name.to_owned() };
        self.call(Method::POST, &["domains"], Some(&body)).await
    }

    /// `GET /domains/{name}`.
    pub async fn domain(&self, name: &str) -> Result<DomainView, ClientError> {
        self.call(Method::GET, &["domains", name], NO_BODY).await
    }

    /// `PATCH /domains/{name}`.
    pub async fn set_domain_auth_mode(&self, name: &str, auth_mode: DomainAuthMode) -> Result<DomainView, ClientError> {
        let body = UpdateDomain { auth_mode };
        self.call(Method::PATCH, &["domains", name], Some(&body)).await
    }

    /// `DELETE /domains/{name}`.
    pub async fn delete_domain(&self, name: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["domains", name], NO_BODY).await
    }

    /// `POST /domains/{name}/verify`.
    pub async fn verify_domain(&self, name: &str) -> Result<DomainView, ClientError> {
        self.call(Method::POST, &["domains", name, "verify"], NO_BODY).await
    }

    // ---- users and roles -------------------------------------------------------

    /// `GET /users`.
    pub async fn users(&self) -> Result<Vec<UserView>, ClientError> {
        self.call(Method::GET, &["users"], NO_BODY).await
    }

    /// `POST /users`.
    pub async fn create_user(&self, request: &CreateUser) -> Result<UserView, ClientError> {
        self.call(Method::POST, &["users"], Some(request)).await
    }

    /// `POST /users/directory`: a directory user named before their first
    /// sign-in.
    pub async fn name_directory_user(&self, request: &NameDirectoryUser) -> Result<UserView, ClientError> {
        self.call(Method::POST, &["users", "directory"], Some(request)).await
    }

    /// `GET /users/{id}`.
    pub async fn user(&self, id: &str) -> Result<UserView, ClientError> {
        self.call(Method::GET, &["users", id], NO_BODY).await
    }

    /// `PATCH /users/{id}`.
    pub async fn update_user(&self, id: &str, update: &UpdateUser) -> Result<UserView, ClientError> {
        self.call(Method::PATCH, &["users", id], Some(update)).await
    }

    /// `DELETE /users/{id}`.
    pub async fn delete_user(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["users", id], NO_BODY).await
    }

    /// `POST /users/{id}/password`.
    pub async fn set_password(&self, id: &str, password: SecretString) -> Result<(), ClientError> {
        let body = SetPassword { password };
        self.call_empty(Method::POST, &["users", id, "password"], Some(&body))
            .await
    }

    /// `POST /users/{id}/mfa/reset`.
    pub async fn reset_mfa(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::POST, &["users", id, "mfa", "reset"], NO_BODY)
            .await
    }

    /// `GET /users/{id}/roles`.
    pub async fn user_roles(&self, id: &str) -> Result<UserRoles, ClientError> {
        self.call(Method::GET, &["users", id, "roles"], NO_BODY).await
    }

    /// `PUT /users/{id}/roles/{role}`.
    pub async fn assign_role(&self, id: &str, role: Role) -> Result<UserRoles, ClientError> {
        self.call(Method::PUT, &["users", id, "roles", role.as_str()], NO_BODY)
            .await
    }

    /// `DELETE /users/{id}/roles/{role}`.
    pub async fn revoke_role(&self, id: &str, role: Role) -> Result<UserRoles, ClientError> {
        self.call(Method::DELETE, &["users", id, "roles", role.as_str()], NO_BODY)
            .await
    }

    // ---- groups ----------------------------------------------------------------

    /// `GET /groups`.
    pub async fn groups(&self) -> Result<Vec<GroupView>, ClientError> {
        self.call(Method::GET, &["groups"], NO_BODY).await
    }

    /// `POST /groups`.
    pub async fn create_group(&self, request: &CreateGroup) -> Result<GroupView, ClientError> {
        self.call(Method::POST, &["groups"], Some(request)).await
    }

    /// `POST /groups/directory`: a directory group named before any member
    /// signs in (the existing one if it is there already).
    pub async fn ensure_directory_group(&self, request: &CreateGroup) -> Result<GroupView, ClientError> {
        self.call(Method::POST, &["groups", "directory"], Some(request)).await
    }

    /// `GET /groups/{id}`.
    pub async fn group(&self, id: &str) -> Result<GroupView, ClientError> {
        self.call(Method::GET, &["groups", id], NO_BODY).await
    }

    /// `DELETE /groups/{id}`.
    pub async fn delete_group(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["groups", id], NO_BODY).await
    }

    /// `GET /groups/{id}/members`.
    pub async fn group_members(&self, id: &str) -> Result<Vec<UserView>, ClientError> {
        self.call(Method::GET, &["groups", id, "members"], NO_BODY).await
    }

    /// `PUT /groups/{id}/members/{user_id}`.
    pub async fn add_member(&self, group_id: &str, user_id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::PUT, &["groups", group_id, "members", user_id], NO_BODY)
            .await
    }

    /// `DELETE /groups/{id}/members/{user_id}`.
    pub async fn remove_member(&self, group_id: &str, user_id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["groups", group_id, "members", user_id], NO_BODY)
            .await
    }

    // ---- OAuth clients ---------------------------------------------------------

    /// `GET /clients`.
    pub async fn clients(&self) -> Result<Vec<ClientView>, ClientError> {
        self.call(Method::GET, &["clients"], NO_BODY).await
    }

    /// `POST /clients`: the answer holds the secret of a confidential client,
    /// the only time it is shown.
    pub async fn create_client(&self, request: &CreateClient) -> Result<ClientCreated, ClientError> {
        self.call(Method::POST, &["clients"], Some(request)).await
    }

    /// `GET /clients/{client_id}`.
    pub async fn client(&self, client_id: &str) -> Result<ClientView, ClientError> {
        self.call(Method::GET, &["clients", client_id], NO_BODY).await
    }

    /// `DELETE /clients/{client_id}`.
    pub async fn delete_client(&self, client_id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["clients", client_id], NO_BODY).await
    }

    // ---- published apps --------------------------------------------------------

    /// `GET /apps`.
    pub async fn apps(&self) -> Result<Vec<AppView>, ClientError> {
        self.call(Method::GET, &["apps"], NO_BODY).await
    }

    /// `POST /apps`: publishes an app (with its OIDC client).
    pub async fn create_app(&self, settings: &AppSettings) -> Result<AppView, ClientError> {
        self.call(Method::POST, &["apps"], Some(settings)).await
    }

    /// `GET /apps/{id}`.
    pub async fn app(&self, id: &str) -> Result<AppView, ClientError> {
        self.call(Method::GET, &["apps", id], NO_BODY).await
    }

    /// `PUT /apps/{id}`: replaces every setting (absent optional ones take
    /// their defaults).
    pub async fn replace_app(&self, id: &str, settings: &AppSettings) -> Result<AppView, ClientError> {
        self.call(Method::PUT, &["apps", id], Some(settings)).await
    }

    /// `DELETE /apps/{id}`: with its OIDC client and assignments.
    pub async fn delete_app(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["apps", id], NO_BODY).await
    }

    /// `GET /apps/{id}/assignments`.
    pub async fn app_assignments(&self, id: &str) -> Result<Vec<AssignmentView>, ClientError> {
        self.call(Method::GET, &["apps", id, "assignments"], NO_BODY).await
    }

    /// `POST /apps/{id}/assignments`: answers with every assignment of the app.
    pub async fn assign_app(
        &self,
        id: &str,
        kind: PrincipalKind,
        principal_id: &str,
    ) -> Result<Vec<AssignmentView>, ClientError> {
        let body = AssignApp {
            kind,
            id: principal_id.to_owned(),
        };
        self.call(Method::POST, &["apps", id, "assignments"], Some(&body)).await
    }

    /// `DELETE /apps/{id}/assignments/{kind}/{principal_id}`.
    pub async fn unassign_app(&self, id: &str, kind: PrincipalKind, principal_id: &str) -> Result<(), ClientError> {
        let kind = match kind {
            PrincipalKind::User => "user",
            PrincipalKind::Group => "group",
        };
        self.call_empty(
            Method::DELETE,
            &["apps", id, "assignments", kind, principal_id],
            NO_BODY,
        )
        .await
    }

    // ---- on-prem components ----------------------------------------------------

    /// `GET /connectors`: every connector with its group and status.
    pub async fn connectors(&self) -> Result<Vec<ComponentView>, ClientError> {
        self.call(Method::GET, &["connectors"], NO_BODY).await
    }

    /// `GET /connectors/{id}`.
    pub async fn connector(&self, id: &str) -> Result<ComponentView, ClientError> {
        self.call(Method::GET, &["connectors", id], NO_BODY).await
    }

    /// `DELETE /connectors/{id}`: the connector's certificate is revoked at
    /// once; it is refused from its next request on.
    pub async fn delete_connector(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["connectors", id], NO_BODY).await
    }

    /// `PUT /connectors/{id}/group`: moves a connector to the group named by
    /// `group` (its name or ID).
    pub async fn move_connector(&self, id: &str, group: &str) -> Result<ComponentView, ClientError> {
        let body = MoveConnector {
            group: group.to_owned(),
        };
        self.call(Method::PUT, &["connectors", id, "group"], Some(&body)).await
    }

    /// `GET /agents`: every authentication agent with its status.
    pub async fn agents(&self) -> Result<Vec<ComponentView>, ClientError> {
        self.call(Method::GET, &["agents"], NO_BODY).await
    }

    /// `GET /agents/{id}`.
    pub async fn agent(&self, id: &str) -> Result<ComponentView, ClientError> {
        self.call(Method::GET, &["agents", id], NO_BODY).await
    }

    /// `DELETE /agents/{id}`: the agent's certificate is revoked at once; it is
    /// refused from its next request on.
    pub async fn delete_agent(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["agents", id], NO_BODY).await
    }

    /// `GET /connector-groups`: every group with the number of its connectors.
    pub async fn connector_groups(&self) -> Result<Vec<ConnectorGroupView>, ClientError> {
        self.call(Method::GET, &["connector-groups"], NO_BODY).await
    }

    /// `POST /connector-groups`.
    pub async fn create_connector_group(
        &self,
        request: &CreateConnectorGroup,
    ) -> Result<ConnectorGroupView, ClientError> {
        self.call(Method::POST, &["connector-groups"], Some(request)).await
    }

    /// `GET /connector-groups/{id}`: the group with its connectors.
    pub async fn connector_group(&self, id: &str) -> Result<ConnectorGroupDetail, ClientError> {
        self.call(Method::GET, &["connector-groups", id], NO_BODY).await
    }

    /// `DELETE /connector-groups/{id}`: refused (409) for the default group and
    /// for a group that still has connectors.
    pub async fn delete_connector_group(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["connector-groups", id], NO_BODY)
            .await
    }

    /// `POST /registration-tokens`: the answer holds the token, the only time
    /// it is shown.
    pub async fn create_registration_token(
        &self,
        request: &CreateRegistrationToken,
    ) -> Result<RegistrationTokenCreated, ClientError> {
        self.call(Method::POST, &["registration-tokens"], Some(request)).await
    }

    // ---- conditional access -------------------------------------------------------

    /// `GET /policies`.
    pub async fn policies(&self) -> Result<Vec<PolicyView>, ClientError> {
        self.call(Method::GET, &["policies"], NO_BODY).await
    }

    /// `POST /policies`.
    pub async fn create_policy(&self, policy: &PolicyInput) -> Result<PolicyView, ClientError> {
        self.call(Method::POST, &["policies"], Some(policy)).await
    }

    /// `GET /policies/{id}`.
    pub async fn policy(&self, id: &str) -> Result<PolicyView, ClientError> {
        self.call(Method::GET, &["policies", id], NO_BODY).await
    }

    /// `PUT /policies/{id}`.
    pub async fn replace_policy(&self, id: &str, policy: &PolicyInput) -> Result<PolicyView, ClientError> {
        self.call(Method::PUT, &["policies", id], Some(policy)).await
    }

    /// `DELETE /policies/{id}`.
    pub async fn delete_policy(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["policies", id], NO_BODY).await
    }

    /// `POST /policies/what-if`: what the service would decide for a sign-in.
    pub async fn what_if(&self, question: &WhatIf) -> Result<WhatIfResult, ClientError> {
        self.call(Method::POST, &["policies", "what-if"], Some(question)).await
    }

    /// `GET /locations`.
    pub async fn locations(&self) -> Result<Vec<LocationView>, ClientError> {
        self.call(Method::GET, &["locations"], NO_BODY).await
    }

    /// `POST /locations`.
    pub async fn create_location(&self, location: &LocationInput) -> Result<LocationView, ClientError> {
        self.call(Method::POST, &["locations"], Some(location)).await
    }

    /// `GET /locations/{id}`.
    pub async fn location(&self, id: &str) -> Result<LocationView, ClientError> {
        self.call(Method::GET, &["locations", id], NO_BODY).await
    }

    /// `PUT /locations/{id}`.
    pub async fn replace_location(&self, id: &str, location: &LocationInput) -> Result<LocationView, ClientError> {
        self.call(Method::PUT, &["locations", id], Some(location)).await
    }

    /// `DELETE /locations/{id}` (refused while a policy names it).
    pub async fn delete_location(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["locations", id], NO_BODY).await
    }

    /// `PUT /users/{id}/risk`.
    pub async fn set_user_risk(&self, id: &str, risk: &SetUserRisk) -> Result<UserRiskView, ClientError> {
        self.call(Method::PUT, &["users", id, "risk"], Some(risk)).await
    }

    /// `DELETE /users/{id}/risk`.
    pub async fn dismiss_user_risk(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["users", id, "risk"], NO_BODY).await
    }

    // ---- logs and the installation ---------------------------------------------

    /// `GET /signins`.
    pub async fn signins(&self, query: &SigninQuery) -> Result<Vec<SigninView>, ClientError> {
        self.query(&["signins"], query).await
    }

    /// `GET /audit`.
    pub async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditView>, ClientError> {
        self.query(&["audit"], query).await
    }

    /// `GET /audit/verify` (operators).
    pub async fn verify_audit(&self) -> Result<AuditChainStatus, ClientError> {
        self.call(Method::GET, &["audit", "verify"], NO_BODY).await
    }

    /// `POST /system/signing-keys/rotate` (operators).
    pub async fn rotate_signing_key(&self) -> Result<SigningKeyRotated, ClientError> {
        self.call(Method::POST, &["system", "signing-keys", "rotate"], NO_BODY)
            .await
    }

    /// `POST /system/cookie-keys/rotate` (operators): a new front-door cookie key;
    /// with `revoke_older`, every app session ends.
    pub async fn rotate_cookie_key(&self, revoke_older: bool) -> Result<CookieKeyRotated, ClientError> {
        self.call(
            Method::POST,
            &["system", "cookie-keys", "rotate"],
            Some(&RotateCookieKey { revoke_older }),
        )
        .await
    }
}
