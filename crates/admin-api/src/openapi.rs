//! The OpenAPI 3.1 document of `/api/v1`, served at `GET /api/v1/openapi.json`
//! without authentication (it describes the API, it holds nothing of a
//! tenant). Body and query types come from [`crate::wire`] through their
//! `utoipa::ToSchema` derives; each operation's summary and payloads are in
//! one table here, and the access each route requires comes from the route
//! table itself. A test checks that this table and [`crate::routes()`] name
//! the same methods and paths, so the two cannot drift.

use std::sync::OnceLock;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::ToSchema;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItemBuilder};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref, RefOr, Required,
    ResponseBuilder, ResponsesBuilder,
};

use crate::releases::HistoryQuery;
use crate::routes::{Access, Verb, routes};
use crate::wire::*;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// The name of the bearer token security scheme.
const BEARER: &str = "bearer";

/// Schemas collected while the document is built (name, schema).
type Schemas = Vec<(String, RefOr<Schema>)>;

/// Gives a schema for a payload, registering the named ones it refers to.
type SchemaFn = fn(&mut Schemas) -> RefOr<Schema>;

/// What an operation takes.
enum Request {
    /// Nothing.
    None,
    /// A JSON body.
    Json(SchemaFn),
    /// Query parameters (the properties of an object schema).
    Query(SchemaFn),
    /// Raw bytes (`application/octet-stream`).
    Bytes,
}

/// What an operation answers on success.
enum Answer {
    /// A JSON body with this status.
    Json(u16, SchemaFn),
    /// No body.
    Empty(u16),
}

/// One operation of the document.
struct OpDoc {
    verb: Verb,
    path: &'static str,
    summary: &'static str,
    request: Request,
    answer: Answer,
}

/// Shorthand for a table row.
const fn doc(verb: Verb, path: &'static str, summary: &'static str, request: Request, answer: Answer) -> OpDoc {
    OpDoc {
        verb,
        path,
        summary,
        request,
        answer,
    }
}

/// A reference to `T`, registered in the components.
fn one<T: ToSchema>(schemas: &mut Schemas) -> RefOr<Schema> {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

/// An array of `T`.
fn many<T: ToSchema>(schemas: &mut Schemas) -> RefOr<Schema> {
    ArrayBuilder::new().items(one::<T>(schemas)).into()
}

/// `T` inline, for its properties as query parameters.
fn query<T: ToSchema>(schemas: &mut Schemas) -> RefOr<Schema> {
    T::schemas(schemas);
    T::schema()
}

use Verb::{Delete, Get, Patch, Post, Put};

/// Every operation of `/api/v1` but the document itself.
static OPERATIONS: &[OpDoc] = &[
    doc(
        Get,
        "/api/v1/me",
        "Who the token belongs to: user, tenant, roles",
        Request::None,
        Answer::Json(200, one::<Me>),
    ),
    doc(
        Get,
        "/api/v1/tenants",
        "List every tenant (operators)",
        Request::None,
        Answer::Json(200, many::<TenantView>),
    ),
    doc(
        Post,
        "/api/v1/tenants",
        "Create a tenant and its first global administrator (operators)",
        Request::Json(one::<CreateTenant>),
        Answer::Json(201, one::<TenantCreated>),
    ),
    doc(
        Delete,
        "/api/v1/tenants/{name}",
        "Delete a tenant and everything in it (operators)",
        Request::None,
        Answer::Empty(204),
    ),
    doc(
        Put,
        "/api/v1/tenants/{name}/limits",
        "Set a tenant's own limits at the front door (operators)",
        Request::Json(one::<TenantLimitsView>),
        Answer::Json(200, one::<TenantView>),
    ),
    doc(
        Post,
        "/api/v1/tenants/{name}/domains/{domain}/verify",
        "Mark a tenant's domain verified (operators)",
        Request::None,
        Answer::Json(200, one::<DomainView>),
    ),
    doc(
        Get,
        "/api/v1/tenant",
        "Show the caller's tenant",
        Request::None,
        Answer::Json(200, one::<TenantView>),
    ),
    doc(
        Patch,
        "/api/v1/tenant",
        "Change the caller's tenant's settings",
        Request::Json(one::<UpdateTenantSettings>),
        Answer::Json(200, one::<TenantView>),
    ),
    doc(
        Get,
        "/api/v1/domains",
        "List the tenant's domains",
        Request::None,
        Answer::Json(200, many::<DomainView>),
    ),
    doc(
        Post,
        "/api/v1/domains",
        "Add a domain (unverified until its DNS TXT record is checked)",
        Request::Json(one::<CreateDomain>),
        Answer::Json(201, one::<DomainView>),
    ),
    doc(
        Get,
        "/api/v1/domains/{name}",
        "Show a domain",
        Request::None,
        Answer::Json(200, one::<DomainView>),
    ),
    doc(
        Patch,
        "/api/v1/domains/{name}",
        "Change a domain's sign-in mode",
        Request::Json(one::<UpdateDomain>),
        Answer::Json(200, one::<DomainView>),
    ),
    doc(
        Delete,
        "/api/v1/domains/{name}",
        "Remove a domain",
        Request::None,
        Answer::Empty(204),
    ),
    doc(
        Post,
        "/api/v1/domains/{name}/verify",
        "Check a domain's DNS TXT record and mark it verified",
        Request::None,
        Answer::Json(200, one::<DomainView>),
    ),
    doc(
        Get,
        "/api/v1/users",
        "List the tenant's users",
        Request::None,
        Answer::Json(200, many::<UserView>),
    ),
    doc(
        Post,
        "/api/v1/users",
        "Create a cloud user",
        Request::Json(one::<CreateUser>),
        Answer::Json(201, one::<UserView>),
    ),
    doc(
        Post,
        "/api/v1/users/directory",
        "Name a directory user before their first sign-in",
        Request::Json(one::<NameDirectoryUser>),
        Answer::Json(201, one::<UserView>),
    ),
    doc(
        Get,
        "/api/v1/users/{id}",
        "Show a user",
        Request::None,
        Answer::Json(200, one::<UserView>),
    ),
    doc(
        Patch,
        "/api/v1/users/{id}",
        "Change a user (display name, enabled)",
        Request::Json(one::<UpdateUser>),
        Answer::Json(200, one::<UserView>),
    ),
    doc(
        Delete,
        "/api/v1/users/{id}",
        "Delete a user",
        Request::None,
        Answer::Empty(204),
    ),
    doc(
        Post,
        "/api/v1/users/{id}/password",
        "Set a cloud user's password",
        Request::Json(one::<SetPassword>),
        Answer::Empty(204),
    ),
    doc(
        Post,
        "/api/v1/users/{id}/mfa/reset",
        "Remove a user's authenticators (they enrol again at the next sign-in)",
        Request::None,
        Answer::Empty(204),
    ),
    doc(
        Put,
        "/api/v1/users/{id}/risk",
        "Set a user's risk level by hand",
        Request::Json(one::<SetUserRisk>),
        Answer::Json(200, one::<UserRiskView>),
    ),
    doc(
        Delete,
        "/api/v1/users/{id}/risk",
        "Dismiss a user's risk",
        Request::None,
        Answer::Empty(204),
    ),
    doc(
        Get,
        "/api/v1/users/{id}/roles",
        "List a user's administrative roles",
        Request::None,
        Answer::Json(200, one::<UserRoles>),
    ),
    doc(
        Put,
        "/api/v1/users/{id}/roles/{role}",
        "Give a user an administrative role",
        Request::None,
        Answer::Json(200, one::<UserRoles>),
    ),
    doc(
        Delete,
        "/api/v1/users/{id}/roles/{role}",
        "Take an administrative role from a user",
        Request::None,
        Answer::Json(200, one::<UserRoles>),
    ),
    doc(
        Get,
        "/api/v1/groups",
        "List the tenant's groups",
        Request::None,
        Answer::Json(200, many::<GroupView>),
    ),
    doc(
        Post,
        "/api/v1/groups",
        "Create a group",
        Request::Json(one::<CreateGroup>),
        Answer::Json(201, one::<GroupView>),
    ),
    doc(
        Post,
        "/api/v1/groups/directory",
        "Name a directory group before any member signs in (200 if it exists already)",
        Request::Json(one::<CreateGroup>),
        Answer::Json(201, one::<GroupView>),
    ),
    doc(
        Get,
        "/api/v1/groups/{id}",
        "Show a group",
        Request::None,
        Answer::Json(200, one::<GroupView>),
    ),
    doc(
        Delete,
        "/api/v1/groups/{id}",
        "Delete a group",
        Request::None,
        Answer::Empty(204),
    ),
    doc(
        Get,
        "/api/v1/groups/{id}/members",
        "List a group's members",
        Request::None,
        Answer::Json(200, many::<UserView>),
    ),
    doc(
        Put,
        "/api/v1/groups/{id}/members/{user_id}",
        "Add a user to a group",
        Request::None,
        Answer::Empty(204),
    ),
    doc(
        Delete,
        "/api/v1/groups/{id}/members/{user_id}",
        "Remove a user from a group",
        Request::None,
        Answer::Empty(204),
    ),
    doc(
        Get,
        "/api/v1/clients",
        "List the tenant's OAuth clients",
        Request::None,
        Answer::Json(200, many::<ClientView>),
    ),
    doc(
        Post,
        "/api/v1/clients",
        "Register an OAuth client (a confidential client's secret is shown once)",
        Request::Json(one::<CreateClient>),
        Answer::Json(201, one::<ClientCreated>),
    ),
    doc(
        Get,
        "/api/v1/clients/{client_id}",
        "Show an OAuth client",
        Request::None,
        Answer::Json(200, one::<ClientView>),
    ),
    doc(
        Delete,
        "/api/v1/clients/{client_id}",
        "Delete an OAuth client",
        Request::None,
        Answer::Empty(204),
    ),
    doc(
        Get,
        "/api/v1/apps",
        "List the published apps",
        Request::None,
        Answer::Json(200, many::<AppView>),
    ),
    doc(
        Post,
        "/api/v1/apps",
        "Publish an app",
        Request::Json(one::<AppSettings>),
        Answer::Json(201, one::<AppView>),
    ),
    doc(
        Get,
        "/api/v1/apps/{id}",
        "Show a published app",
        Request::None,
        Answer::Json(200, one::<AppView>),
    ),
    doc(
        Put,
        "/api/v1/apps/{id}",
        "Change a published app's settings",
        Request::Json(one::<AppSettings>),
        Answer::Json(200, one::<AppView>),
    ),
    doc(
        Delete,
        "/api/v1/apps/{id}",
        "Unpublish an app",
        Request::None,
        Answer::Empty(204),
    ),
    doc(
        Post,
        "/api/v1/apps/{id}/test",
        "Test an app: DNS of its external host, connected connectors of its group, and a request to its backend through a tunnel",
        Request::None,
        Answer::Json(200, one::<AppProbe>),
    ),
    doc(
        Get,
        "/api/v1/apps/{id}/assignments",
        "List who is assigned to an app",
        Request::None,
        Answer::Json(200, many::<AssignmentView>),
    ),
    doc(
        Post,
        "/api/v1/apps/{id}/assignments",
        "Assign a user or group to an app",
        Request::Json(one::<AssignApp>),
        Answer::Json(200, many::<AssignmentView>),
    ),
    doc(
        Delete,
        "/api/v1/apps/{id}/assignments/{kind}/{principal_id}",
        "Remove an assignment",
        Request::None,
        Answer::Empty(204),
    ),
    doc(
        Get,
        "/api/v1/connectors",
        "List the tenant's connectors",
        Request::None,
        Answer::Json(200, many::<ComponentView>),
    ),
    doc(
        Get,
        "/api/v1/connectors/{id}",
        "Show a connector",
        Request::None,
        Answer::Json(200, one::<ComponentView>),
    ),
    doc(
        Delete,
        "/api/v1/connectors/{id}",
        "Remove a connector (its certificate is revoked and its tunnels closed at once)",
        Request::None,
        Answer::Empty(204),
    ),
    doc(
        Put,
        "/api/v1/connectors/{id}/group",
        "Move a connector to another connector group",
        Request::Json(one::<MoveConnector>),
        Answer::Json(200, one::<ComponentView>),
    ),
    doc(
        Get,
        "/api/v1/agents",
        "List the tenant's authentication agents",
        Request::None,
        Answer::Json(200, many::<ComponentView>),
    ),
    doc(
        Get,
        "/api/v1/agents/{id}",
        "Show an authentication agent",
        Request::None,
        Answer::Json(200, one::<ComponentView>),
    ),
    doc(
        Delete,
        "/api/v1/agents/{id}",
        "Remove an authentication agent (its certificate is revoked at once)",
        Request::None,
        Answer::Empty(204),
    ),
    doc(
        Get,
        "/api/v1/connector-groups",
        "List the connector groups",
        Request::None,
        Answer::Json(200, many::<ConnectorGroupView>),
    ),
    doc(
        Post,
        "/api/v1/connector-groups",
        "Create a connector group",
        Request::Json(one::<CreateConnectorGroup>),
        Answer::Json(201, one::<ConnectorGroupView>),
    ),
    doc(
        Get,
        "/api/v1/connector-groups/{id}",
        "Show a connector group with its connectors",
        Request::None,
        Answer::Json(200, one::<ConnectorGroupDetail>),
    ),
    doc(
        Delete,
        "/api/v1/connector-groups/{id}",
        "Delete an empty connector group",
        Request::None,
        Answer::Empty(204),
    ),
    doc(
        Post,
        "/api/v1/registration-tokens",
        "Mint a registration token for unattended connector or agent installs (shown once)",
        Request::Json(one::<CreateRegistrationToken>),
        Answer::Json(201, one::<RegistrationTokenCreated>),
    ),
    doc(
        Get,
        "/api/v1/policies",
        "List the conditional access policies",
        Request::None,
        Answer::Json(200, many::<PolicyView>),
    ),
    doc(
        Post,
        "/api/v1/policies",
        "Create a conditional access policy",
        Request::Json(one::<PolicyInput>),
        Answer::Json(201, one::<PolicyView>),
    ),
    doc(
        Post,
        "/api/v1/policies/what-if",
        "What the policies would decide for a user, app, address and client kind",
        Request::Json(one::<WhatIf>),
        Answer::Json(200, one::<WhatIfResult>),
    ),
    doc(
        Get,
        "/api/v1/policies/{id}",
        "Show a conditional access policy",
        Request::None,
        Answer::Json(200, one::<PolicyView>),
    ),
    doc(
        Put,
        "/api/v1/policies/{id}",
        "Replace a conditional access policy",
        Request::Json(one::<PolicyInput>),
        Answer::Json(200, one::<PolicyView>),
    ),
    doc(
        Delete,
        "/api/v1/policies/{id}",
        "Delete a conditional access policy",
        Request::None,
        Answer::Empty(204),
    ),
    doc(
        Get,
        "/api/v1/locations",
        "List the named locations",
        Request::None,
        Answer::Json(200, many::<LocationView>),
    ),
    doc(
        Post,
        "/api/v1/locations",
        "Create a named location",
        Request::Json(one::<LocationInput>),
        Answer::Json(201, one::<LocationView>),
    ),
    doc(
        Get,
        "/api/v1/locations/{id}",
        "Show a named location",
        Request::None,
        Answer::Json(200, one::<LocationView>),
    ),
    doc(
        Put,
        "/api/v1/locations/{id}",
        "Replace a named location",
        Request::Json(one::<LocationInput>),
        Answer::Json(200, one::<LocationView>),
    ),
    doc(
        Delete,
        "/api/v1/locations/{id}",
        "Delete a named location",
        Request::None,
        Answer::Empty(204),
    ),
    doc(
        Get,
        "/api/v1/signins",
        "Read the sign-in log (newest first, filtered)",
        Request::Query(query::<SigninQuery>),
        Answer::Json(200, many::<SigninView>),
    ),
    doc(
        Get,
        "/api/v1/audit",
        "Read the audit log (newest first, filtered)",
        Request::Query(query::<AuditQuery>),
        Answer::Json(200, many::<AuditView>),
    ),
    doc(
        Get,
        "/api/v1/audit/verify",
        "Check the audit log's hash chain (operators)",
        Request::None,
        Answer::Json(200, one::<AuditChainStatus>),
    ),
    doc(
        Get,
        "/api/v1/updates",
        "The tenant's update policy and its components' versions",
        Request::None,
        Answer::Json(200, one::<UpdatesOverview>),
    ),
    doc(
        Put,
        "/api/v1/updates/policy",
        "Set the tenant's update channel, pin and pause",
        Request::Json(one::<SetUpdatePolicy>),
        Answer::Json(200, one::<UpdatePolicyView>),
    ),
    doc(
        Get,
        "/api/v1/updates/history",
        "The tenant's update history (newest first)",
        Request::Query(query::<HistoryQuery>),
        Answer::Json(200, many::<ComponentUpdateView>),
    ),
    doc(
        Get,
        "/api/v1/system/releases",
        "List the published releases (operators)",
        Request::None,
        Answer::Json(200, many::<ReleaseView>),
    ),
    doc(
        Post,
        "/api/v1/system/releases",
        "Publish a signed release manifest (operators)",
        Request::Json(one::<PublishRelease>),
        Answer::Json(201, one::<ReleaseView>),
    ),
    doc(
        Put,
        "/api/v1/system/releases/{id}/chunks/{seq}",
        "Upload one chunk of a release's binary (operators)",
        Request::Bytes,
        Answer::Empty(204),
    ),
    doc(
        Post,
        "/api/v1/system/releases/{id}/complete",
        "Check the uploaded binary against the manifest and offer it (operators)",
        Request::None,
        Answer::Json(200, one::<ReleaseView>),
    ),
    doc(
        Delete,
        "/api/v1/system/releases/{id}",
        "Withdraw a release (operators)",
        Request::None,
        Answer::Empty(204),
    ),
    doc(
        Get,
        "/api/v1/system/versions",
        "Versions of connectors and agents in the field, over every tenant (operators)",
        Request::None,
        Answer::Json(200, many::<FieldVersion>),
    ),
    doc(
        Post,
        "/api/v1/system/signing-keys/rotate",
        "Rotate the token signing keys (operators)",
        Request::None,
        Answer::Json(200, one::<SigningKeyRotated>),
    ),
    doc(
        Post,
        "/api/v1/system/cookie-keys/rotate",
        "Rotate the front door's cookie keys (operators)",
        Request::Json(one::<RotateCookieKey>),
        Answer::Json(200, one::<CookieKeyRotated>),
    ),
];

/// The document, built once.
pub fn document() -> &'static OpenApi {
    static DOCUMENT: OnceLock<OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

/// `GET /api/v1/openapi.json`.
pub(crate) async fn serve() -> Response {
    match document().to_json() {
        Ok(json) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => crate::error::ApiError::Internal(format!("OpenAPI document: {e}")).into_response(),
    }
}

fn build() -> OpenApi {
    let mut schemas = Schemas::new();
    let error = one::<ErrorBody>(&mut schemas);
    let mut paths = PathsBuilder::new();
    for op in OPERATIONS {
        let access = routes()
            .iter()
            .find(|r| r.verb == op.verb && r.path == op.path)
            .map(|r| r.access);
        let operation = operation(op, access, &error, &mut schemas);
        paths = paths.path(
            op.path,
            PathItemBuilder::new()
                .operation(http_method(op.verb), operation)
                .build(),
        );
    }
    let own = OperationBuilder::new()
        .summary(Some("This document (no token needed)"))
        .operation_id(Some("openapi"))
        .tag("meta")
        .security(SecurityRequirement::default())
        .response(
            "200",
            ResponseBuilder::new().description("The OpenAPI document.").build(),
        );
    paths = paths.path(
        OPENAPI_PATH,
        PathItemBuilder::new().operation(HttpMethod::Get, own).build(),
    );
    schemas.sort_by(|a, b| a.0.cmp(&b.0));
    schemas.dedup_by(|a, b| a.0 == b.0);
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token of the caller's tenant with the audience urn:postern:admin-api and the scope postern:admin (what `postern admin login` obtains with the device flow).",
                    ))
                    .build(),
            ),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Postern admin API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The administration REST API of a Postern service. Every request acts inside the caller's tenant; errors are ErrorBody with 400 (every validation problem listed), 401, 403, 404, 409 or 503.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .security(Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]))
        .build()
}

/// One operation: summary, access, parameters, body and answers.
fn operation(op: &OpDoc, access: Option<Access>, error: &RefOr<Schema>, schemas: &mut Schemas) -> OperationBuilder {
    let mut builder = OperationBuilder::new()
        .summary(Some(op.summary))
        .description(access.map(describe_access))
        .operation_id(Some(operation_id(op)))
        .tag(tag(op.path));
    for name in path_parameters(op.path) {
        builder = builder.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
        );
    }
    match &op.request {
        Request::None => {}
        Request::Json(schema) => {
            let content = ContentBuilder::new().schema(Some(schema(schemas))).build();
            builder = builder.request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/json", content)
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        Request::Query(schema) => {
            for parameter in query_parameters(&schema(schemas)) {
                builder = builder.parameter(parameter);
            }
        }
        Request::Bytes => {
            let bytes = ObjectBuilder::new().schema_type(Type::String).format(Some(
                utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Binary),
            ));
            let content = ContentBuilder::new().schema(Some(bytes)).build();
            builder = builder.request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/octet-stream", content)
                    .required(Some(Required::True))
                    .build(),
            ));
        }
    }
    builder.responses(answers(&op.answer, error, schemas))
}

/// The success answer and the errors every route may give.
fn answers(answer: &Answer, error: &RefOr<Schema>, schemas: &mut Schemas) -> utoipa::openapi::Responses {
    let success = match answer {
        Answer::Json(status, schema) => (
            *status,
            ResponseBuilder::new()
                .description("Success.")
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(schema(schemas))).build(),
                )
                .build(),
        ),
        Answer::Empty(status) => (*status, ResponseBuilder::new().description("Done; no body.").build()),
    };
    let failure = |what: &str| {
        ResponseBuilder::new()
            .description(what)
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(error.clone())).build(),
            )
            .build()
    };
    ResponsesBuilder::new()
        .response(success.0.to_string(), success.1)
        .response("401", failure("No valid token."))
        .response("403", failure("The caller lacks the role this route requires."))
        .response("default", failure("400 (every problem listed), 404, 409 or 503."))
        .build()
}

/// The properties of an inline object schema as optional or required query
/// parameters.
fn query_parameters(schema: &RefOr<Schema>) -> Vec<utoipa::openapi::path::Parameter> {
    let RefOr::T(Schema::Object(object)) = schema else {
        return Vec::new();
    };
    object
        .properties
        .iter()
        .map(|(name, property)| {
            let required = if object.required.contains(name) {
                Required::True
            } else {
                Required::False
            };
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(required)
                .schema(Some(property.clone()))
                .build()
        })
        .collect()
}

/// The `{name}` parameters of a path, in order.
fn path_parameters(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// Groups operations by the first segment after `/api/v1/`.
fn tag(path: &str) -> String {
    path.trim_start_matches("/api/v1/")
        .split('/')
        .next()
        .unwrap_or("api")
        .to_owned()
}

/// A unique ID: the method and the path's words, e.g. `get_users_id_roles`.
fn operation_id(op: &OpDoc) -> String {
    let words: Vec<String> = op
        .path
        .trim_start_matches("/api/v1/")
        .split(['/', '-'])
        .map(|w| w.trim_matches(['{', '}']).replace('-', "_"))
        .collect();
    format!("{}_{}", op.verb.method().as_str().to_ascii_lowercase(), words.join("_"))
}

fn http_method(verb: Verb) -> HttpMethod {
    match verb {
        Verb::Get => HttpMethod::Get,
        Verb::Post => HttpMethod::Post,
        Verb::Put => HttpMethod::Put,
        Verb::Patch => HttpMethod::Patch,
        Verb::Delete => HttpMethod::Delete,
    }
}

fn describe_access(access: Access) -> String {
    match access {
        Access::AnyRole => "Requires any administrative role of the caller's tenant.".to_owned(),
        Access::Role(role) => format!("Requires the role {} (or one that grants it).", role.as_str()),
        Access::Operator => "Requires an operator: a global administrator of the system tenant.".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every (method, path) of the document.
    fn documented() -> BTreeSet<(String, String)> {
        let json: serde_json::Value = serde_json::from_str(&document().to_json().unwrap()).unwrap();
        let mut all = BTreeSet::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    all.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        all
    }

    #[test]
    fn the_document_and_the_route_table_name_the_same_operations() {
        let mut served: BTreeSet<(String, String)> = routes()
            .iter()
            .map(|r| (r.verb.method().to_string(), r.path.to_owned()))
            .collect();
        served.insert(("GET".into(), OPENAPI_PATH.into()));
        let documented = documented();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from the OpenAPI document (add them to OPERATIONS): {undocumented:?}"
        );
        assert!(
            unserved.is_empty(),
            "documented operations no route serves: {unserved:?}"
        );
        assert!(served.len() > 30);
    }

    #[test]
    fn every_operation_is_documented_once_with_its_access_and_resolvable_references() {
        let mut seen = BTreeSet::new();
        for op in OPERATIONS {
            assert!(
                seen.insert((op.verb.method().to_string(), op.path)),
                "documented twice: {} {}",
                op.verb.method(),
                op.path
            );
        }
        let json: serde_json::Value = serde_json::from_str(&document().to_json().unwrap()).unwrap();
        assert!(json["openapi"].as_str().unwrap().starts_with("3.1"));
        let schemas = json["components"]["schemas"].as_object().unwrap();
        let text = json.to_string();
        // Every $ref points at a schema of the document.
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling reference to {name}");
        }
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if path == OPENAPI_PATH {
                    assert_eq!(
                        op["security"],
                        serde_json::json!([{}]),
                        "the document is open to anyone"
                    );
                    continue;
                }
                let described = op["description"].as_str().unwrap_or_default();
                assert!(
                    described.starts_with("Requires"),
                    "{method} {path}: no access in {described:?}"
                );
                for name in path_parameters(path) {
                    assert!(
                        op["parameters"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|p| p["name"] == name && p["in"] == "path"),
                        "{method} {path}: parameter {name}"
                    );
                }
            }
        }
        assert!(json["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer");
        // Bodies name their wire types; queries become parameters.
        let create_user = &json["paths"]["/api/v1/users"]["post"];
        assert_eq!(
            create_user["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/CreateUser"
        );
        assert!(create_user["responses"]["201"].is_object());
        let signins = &json["paths"]["/api/v1/signins"]["get"]["parameters"];
        assert!(
            signins.as_array().unwrap().iter().any(|p| p["in"] == "query"),
            "{signins}"
        );
    }
}
