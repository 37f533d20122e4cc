//! Published apps (application proxy), who is assigned to them, and the front
//! door's cookie encryption keys.

pub use postern_model::{Preauth, PrincipalKind};
use postern_time::UnixTime;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::clients::{delete_grants, insert_client, set_client_redirects};
use crate::error::SqlxResultExt;
use crate::hosts::{claim_in, release_if_unused};
use crate::{NewOAuthClient, Store, StoreError, flag, new_id};

/// Where, below an app's path prefix, the front door takes the STS's answer to a
/// pre-authentication: the redirect URI of the app's OIDC client is
/// `{scheme}://{host}{prefix}.postern/callback`.
pub const APP_CALLBACK_PATH: &str = ".postern/callback";

/// The scheme of an app's external URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExternalScheme {
    /// Plain HTTP.
    Http,
    /// HTTPS.
    Https,
}

impl ExternalScheme {
    /// The stored form, as in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            ExternalScheme::Http => "http",
            ExternalScheme::Https => "https",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(ExternalScheme::Http),
            "https" => Some(ExternalScheme::Https),
            _ => None,
        }
    }
}

/// `{scheme}://{host}{prefix}`.
fn external_url(scheme: ExternalScheme, host: &str, prefix: &str) -> String {
    format!("{}://{host}{prefix}", scheme.as_str())
}

/// An app's own limits at the front door (SEC-9); `None` means the
/// installation's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppLimits {
    /// Requests a second the app accepts (at least 1).
    pub rate_limit_per_sec: Option<i64>,
    /// Requests the app accepts at once above that rate (at least 1).
    pub rate_limit_burst: Option<i64>,
    /// Largest request body forwarded to the app, in bytes; `Some(0)` means no
    /// limit.
    pub max_body_bytes: Option<i64>,
}

/// A published app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    /// Identifier.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Unique name within the tenant.
    pub name: String,
    /// Scheme of the external URL.
    pub external_scheme: ExternalScheme,
    /// External host (lowercase, with `:port` if not the default).
    pub external_host: String,
    /// Path prefix under the host (`/` for the whole host).
    pub path_prefix: String,
    /// Where connectors forward to, e.g. `http://wiki.corp.local:8080/`.
    pub internal_url: String,
    /// Pre-authentication.
    pub preauth: Preauth,
    /// Connectors that serve it.
    pub connector_group_id: String,
    /// How long a backend may take to answer.
    pub backend_timeout_secs: i64,
    /// Whether connectors check the backend's TLS certificate.
    pub validate_backend_tls: bool,
    /// Whether headers (`Location`, cookies, ...) are translated.
    pub translate_headers: bool,
    /// Whether links in HTML/CSS bodies are translated.
    pub translate_links: bool,
    /// Identity headers sent to the backend.
    pub identity_headers: Vec<String>,
    /// The app's own limits at the front door.
    pub limits: AppLimits,
    /// The app's OIDC client at the STS (for pre-authentication).
    pub client_id: String,
    /// Created.
    pub created_at: UnixTime,
    /// Last changed.
    pub updated_at: UnixTime,
}

/// What an app is created or replaced with.
#[derive(Clone, Debug)]
pub struct AppSpec {
    /// Name.
    pub name: String,
    /// Scheme of the external URL.
    pub external_scheme: ExternalScheme,
    /// External host (lowercase, with `:port` if not the default).
    pub external_host: String,
    /// Path prefix.
    pub path_prefix: String,
    /// Internal URL.
    pub internal_url: String,
    /// Pre-authentication.
    pub preauth: Preauth,
    /// Connector group.
    pub connector_group_id: String,
    /// Backend timeout in seconds.
    pub backend_timeout_secs: i64,
    /// Validate the backend's TLS certificate.
    pub validate_backend_tls: bool,
    /// Translate headers.
    pub translate_headers: bool,
    /// Translate links in bodies.
    pub translate_links: bool,
    /// Identity headers to send.
    pub identity_headers: Vec<String>,
    /// The app's own limits at the front door.
    pub limits: AppLimits,
}

impl App {
    /// The external URL, `{scheme}://{host}{prefix}`.
    pub fn external_url(&self) -> String {
        external_url(self.external_scheme, &self.external_host, &self.path_prefix)
    }

    /// The redirect URI of the app's OIDC client (see [`APP_CALLBACK_PATH`]).
    pub fn callback_url(&self) -> String {
        format!("{}{APP_CALLBACK_PATH}", self.external_url())
    }
}

impl AppSpec {
    /// The external URL, `{scheme}://{host}{prefix}`.
    pub fn external_url(&self) -> String {
        external_url(self.external_scheme, &self.external_host, &self.path_prefix)
    }

    /// The redirect URI of the app's OIDC client (see [`APP_CALLBACK_PATH`]).
    pub fn callback_url(&self) -> String {
        format!("{}{APP_CALLBACK_PATH}", self.external_url())
    }

    /// The app's OIDC client at the STS: public (PKCE), authorization code
    /// only, redirected to the app's callback, and back to the app after
    /// signing out.
    fn client(&self, client_id: &str) -> NewOAuthClient {
        NewOAuthClient {
            client_id: client_id.to_owned(),
            name: self.name.clone(),
            secret_digest: None,
            redirect_uris: vec![self.callback_url()],
            post_logout_redirect_uris: vec![self.external_url()],
            grant_types: vec!["authorization_code".to_owned()],
            scopes: Vec::new(),
            builtin: false,
        }
    }
}

/// A cookie encryption key (sealed).
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CookieKeyRecord {
    /// Key ID.
    pub kid: String,
    /// The key, sealed with the KEK (context `cookie-key:<kid>`).
    pub key_sealed: Vec<u8>,
    /// Created.
    pub created_at: UnixTime,
    /// When it stopped encrypting.
    pub retired_at: Option<UnixTime>,
}

impl std::fmt::Debug for CookieKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieKeyRecord")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

macro_rules! app_columns {
    () => {
        "id, tenant_id, name, external_scheme, external_host, path_prefix, internal_url, preauth, connector_group_id, \
         backend_timeout_secs, validate_backend_tls, translate_headers, translate_links, identity_headers, \
         client_id, created_at, updated_at, rate_limit_per_sec, rate_limit_burst, max_body_bytes"
    };
}

fn app_from_row(row: &AnyRow) -> Result<App, StoreError> {
    let text = |n: &str| -> Result<String, StoreError> { row.try_get(n).db() };
    let flag_of = |n: &str| -> Result<bool, StoreError> { Ok(row.try_get::<i64, _>(n).db()? != 0) };
    let preauth = text("preauth")?;
    let scheme = text("external_scheme")?;
    Ok(App {
        id: text("id")?,
        tenant_id: text("tenant_id")?,
        name: text("name")?,
        external_scheme: ExternalScheme::parse(&scheme)
            .ok_or_else(|| StoreError::Corrupt(format!("external scheme {scheme:?}")))?,
        external_host: text("external_host")?,
        path_prefix: text("path_prefix")?,
        internal_url: text("internal_url")?,
        preauth: Preauth::parse(&preauth).ok_or_else(|| StoreError::Corrupt(format!("preauth {preauth:?}")))?,
        connector_group_id: text("connector_group_id")?,
        backend_timeout_secs: row.try_get("backend_timeout_secs").db()?,
        validate_backend_tls: flag_of("validate_backend_tls")?,
        translate_headers: flag_of("translate_headers")?,
        translate_links: flag_of("translate_links")?,
        identity_headers: serde_json::from_str(&text("identity_headers")?)
            .map_err(|e| StoreError::Corrupt(format!("identity headers: {e}")))?,
        limits: AppLimits {
            rate_limit_per_sec: row.try_get("rate_limit_per_sec").db()?,
            rate_limit_burst: row.try_get("rate_limit_burst").db()?,
            max_body_bytes: row.try_get("max_body_bytes").db()?,
        },
        client_id: text("client_id")?,
        created_at: row.try_get("created_at").db()?,
        updated_at: row.try_get("updated_at").db()?,
    })
}

/// A failed write of an app: a unique violation means the name or the address
/// is taken.
fn app_conflict(e: sqlx::Error, spec: &AppSpec) -> StoreError {
    let unique = matches!(&e, sqlx::Error::Database(db) if db.is_unique_violation());
    match StoreError::from_sqlx(e) {
        StoreError::Conflict(_) if unique => StoreError::Conflict(format!(
            "an app named {} or at {}{} exists",
            spec.name, spec.external_host, spec.path_prefix
        )),
        other => other,
    }
}

fn headers_text(list: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(list).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Store {
    /// Publishes an app together with its OIDC client at the STS, `client_id`
    /// (see [`AppSpec::callback_url`]): both or neither. Fails with a conflict
    /// when the name or the external address is taken.
    pub async fn create_app(
        &self,
        tenant_id: &str,
        spec: &AppSpec,
        client_id: &str,
        now: UnixTime,
    ) -> Result<App, StoreError> {
        let _changed = self.routing_change();
        let id = new_id();
        let mut tx = self.begin_write().await?;
        insert_client(&mut tx, tenant_id, &spec.client(client_id), now).await?;
        sqlx::query(
            "INSERT INTO apps (id, tenant_id, name, external_scheme, external_host, path_prefix, internal_url, \
             preauth, connector_group_id, backend_timeout_secs, validate_backend_tls, translate_headers, \
             translate_links, identity_headers, client_id, created_at, updated_at, rate_limit_per_sec, \
             rate_limit_burst, max_body_bytes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16, $17, $18, $19)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(&spec.name)
        .bind(spec.external_scheme.as_str())
        .bind(&spec.external_host)
        .bind(&spec.path_prefix)
        .bind(&spec.internal_url)
        .bind(spec.preauth.as_str())
        .bind(&spec.connector_group_id)
        .bind(spec.backend_timeout_secs)
        .bind(flag(spec.validate_backend_tls))
        .bind(flag(spec.translate_headers))
        .bind(flag(spec.translate_links))
        .bind(headers_text(&spec.identity_headers)?)
        .bind(client_id)
        .bind(now)
        .bind(spec.limits.rate_limit_per_sec)
        .bind(spec.limits.rate_limit_burst)
        .bind(spec.limits.max_body_bytes)
        .execute(&mut *tx)
        .await
        .map_err(|e| app_conflict(e, spec))?;
        claim_in(&mut tx, &spec.external_host, tenant_id, now).await?;
        tx.commit().await.db()?;
        self.bump_group_config(tenant_id, &spec.connector_group_id).await?;
        self.app(tenant_id, &id).await
    }

    /// Replaces an app's settings; its OIDC client keeps its ID and follows the
    /// name and the external URL.
    pub async fn update_app(
        &self,
        tenant_id: &str,
        id: &str,
        spec: &AppSpec,
        now: UnixTime,
    ) -> Result<App, StoreError> {
        let _changed = self.routing_change();
        let before = self.app(tenant_id, id).await?;
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE apps SET name = $1, external_scheme = $2, external_host = $3, path_prefix = $4, \
             internal_url = $5, preauth = $6, connector_group_id = $7, backend_timeout_secs = $8, \
             validate_backend_tls = $9, translate_headers = $10, translate_links = $11, identity_headers = $12, \
             updated_at = $13, rate_limit_per_sec = $16, rate_limit_burst = $17, max_body_bytes = $18 \
             WHERE tenant_id = $14 AND id = $15",
        )
        .bind(&spec.name)
        .bind(spec.external_scheme.as_str())
        .bind(&spec.external_host)
        .bind(&spec.path_prefix)
        .bind(&spec.internal_url)
        .bind(spec.preauth.as_str())
        .bind(&spec.connector_group_id)
        .bind(spec.backend_timeout_secs)
        .bind(flag(spec.validate_backend_tls))
        .bind(flag(spec.translate_headers))
        .bind(flag(spec.translate_links))
        .bind(headers_text(&spec.identity_headers)?)
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .bind(spec.limits.rate_limit_per_sec)
        .bind(spec.limits.rate_limit_burst)
        .bind(spec.limits.max_body_bytes)
        .execute(&mut *tx)
        .await
        .map_err(|e| app_conflict(e, spec))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        claim_in(&mut tx, &spec.external_host, tenant_id, now).await?;
        release_if_unused(&mut tx, &before.external_host, tenant_id).await?;
        let client = spec.client(&before.client_id);
        if !set_client_redirects(&mut tx, tenant_id, &client).await? {
            // An app whose client went missing gets it back.
            insert_client(&mut tx, tenant_id, &client, now).await?;
        }
        tx.commit().await.db()?;
        self.bump_group_config(tenant_id, &spec.connector_group_id).await?;
        if before.connector_group_id != spec.connector_group_id {
            self.bump_group_config(tenant_id, &before.connector_group_id).await?;
        }
        self.app(tenant_id, id).await
    }

    /// The app whose OIDC client is `client_id` in this tenant, if the client
    /// belongs to an app (other clients are the tenant's own registrations).
    /// Cached (see [`crate::cache`]): app changes move the routing generation.
    pub async fn app_of_client(&self, tenant_id: &str, client_id: &str) -> Result<Option<App>, StoreError> {
        let key = (tenant_id.to_owned(), client_id.to_owned());
        let generation = self.routing_generation();
        if let Some(app) = self.reads.app_of_client.get(&key, generation) {
            return Ok(app);
        }
        let row = sqlx::query(concat!(
            "SELECT ",
            app_columns!(),
            " FROM apps WHERE tenant_id = $1 AND client_id = $2"
        ))
        .bind(tenant_id)
        .bind(client_id)
        .fetch_optional(&self.db)
        .await
        .db()?;
        let app = row.as_ref().map(app_from_row).transpose()?;
        self.reads.app_of_client.put(key, app.clone(), generation);
        Ok(app)
    }

    /// One app of a tenant.
    pub async fn app(&self, tenant_id: &str, id: &str) -> Result<App, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            app_columns!(),
            " FROM apps WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_one(&self.db)
        .await
        .db()?;
        app_from_row(&row)
    }

    /// The tenant's apps, by name.
    pub async fn apps(&self, tenant_id: &str) -> Result<Vec<App>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            app_columns!(),
            " FROM apps WHERE tenant_id = $1 ORDER BY name"
        ))
        .bind(tenant_id)
        .fetch_all(&self.db)
        .await
        .db()?;
        rows.iter().map(app_from_row).collect()
    }

    /// Every app of every tenant, by tenant and name.
    pub async fn all_apps(&self) -> Result<Vec<App>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            app_columns!(),
            " FROM apps ORDER BY tenant_id, name"
        ))
        .fetch_all(&self.db)
        .await
        .db()?;
        rows.iter().map(app_from_row).collect()
    }

    /// Apps published on an external host (any tenant), longest prefix first.
    pub async fn apps_on_host(&self, host: &str) -> Result<Vec<App>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            app_columns!(),
            " FROM apps WHERE external_host = $1"
        ))
        .bind(host)
        .fetch_all(&self.db)
        .await
        .db()?;
        let mut apps = rows.iter().map(app_from_row).collect::<Result<Vec<_>, _>>()?;
        apps.sort_by_key(|a| std::cmp::Reverse(a.path_prefix.len()));
        Ok(apps)
    }

    /// Apps served by a connector group.
    pub async fn apps_of_group(&self, tenant_id: &str, group_id: &str) -> Result<Vec<App>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            app_columns!(),
            " FROM apps WHERE tenant_id = $1 AND connector_group_id = $2 ORDER BY name"
        ))
        .bind(tenant_id)
        .bind(group_id)
        .fetch_all(&self.db)
        .await
        .db()?;
        rows.iter().map(app_from_row).collect()
    }

    /// Unpublishes an app, with its OIDC client and the client's codes and
    /// tokens.
    pub async fn delete_app(&self, tenant_id: &str, id: &str) -> Result<App, StoreError> {
        let _changed = self.routing_change();
        let app = self.app(tenant_id, id).await?;
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM apps WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .db()?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM oauth_clients WHERE tenant_id = $1 AND client_id = $2 AND builtin = 0")
            .bind(tenant_id)
            .bind(&app.client_id)
            .execute(&mut *tx)
            .await
            .db()?;
        delete_grants(&mut tx, tenant_id, &app.client_id).await?;
        release_if_unused(&mut tx, &app.external_host, tenant_id).await?;
        tx.commit().await.db()?;
        self.bump_group_config(tenant_id, &app.connector_group_id).await?;
        Ok(app)
    }

    /// Assigns a user or group of the app's tenant to the app. Idempotent.
    pub async fn assign_app(
        &self,
        tenant_id: &str,
        app_id: &str,
        kind: PrincipalKind,
        principal_id: &str,
    ) -> Result<(), StoreError> {
        let _changed = self.routing_change();
        self.app(tenant_id, app_id).await?;
        match kind {
            PrincipalKind::User => self.user(tenant_id, principal_id).await.map(|_| ())?,
            PrincipalKind::Group => self.group(tenant_id, principal_id).await.map(|_| ())?,
        }
        let exists: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM app_assignments WHERE app_id = $1 AND principal_kind = $2 AND principal_id = $3",
        )
        .bind(app_id)
        .bind(kind.as_str())
        .bind(principal_id)
        .fetch_one(&self.db)
        .await
        .db()?;
        if exists == 0 {
            sqlx::query("INSERT INTO app_assignments (app_id, principal_kind, principal_id) VALUES ($1, $2, $3)")
                .bind(app_id)
                .bind(kind.as_str())
                .bind(principal_id)
                .execute(&self.db)
                .await
                .db()?;
        }
        Ok(())
    }

    /// Removes an assignment.
    pub async fn unassign_app(
        &self,
        tenant_id: &str,
        app_id: &str,
        kind: PrincipalKind,
        principal_id: &str,
    ) -> Result<(), StoreError> {
        let _changed = self.routing_change();
        self.app(tenant_id, app_id).await?;
        let done =
            sqlx::query("DELETE FROM app_assignments WHERE app_id = $1 AND principal_kind = $2 AND principal_id = $3")
                .bind(app_id)
                .bind(kind.as_str())
                .bind(principal_id)
                .execute(&self.db)
                .await
                .db()?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// The app's assignments: (kind, principal ID).
    pub async fn app_assignments(
        &self,
        tenant_id: &str,
        app_id: &str,
    ) -> Result<Vec<(PrincipalKind, String)>, StoreError> {
        self.app(tenant_id, app_id).await?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT principal_kind, principal_id FROM app_assignments WHERE app_id = $1 ORDER BY principal_kind, principal_id",
        )
        .bind(app_id)
        .fetch_all(&self.db)
        .await
        .db()?;
        Ok(rows
            .into_iter()
            .map(|(k, id)| {
                (
                    if k == "group" {
                        PrincipalKind::Group
                    } else {
                        PrincipalKind::User
                    },
                    id,
                )
            })
            .collect())
    }

    /// Whether a user is assigned to an app, directly or through a group.
    /// Cached (see [`crate::cache`]): assignments, memberships and deletions
    /// move the routing generation.
    pub async fn user_assigned_to_app(&self, app_id: &str, user_id: &str) -> Result<bool, StoreError> {
        let key = (app_id.to_owned(), user_id.to_owned());
        let generation = self.routing_generation();
        if let Some(assigned) = self.reads.assigned.get(&key, generation) {
            return Ok(assigned);
        }
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM app_assignments a WHERE a.app_id = $1 AND ( \
               (a.principal_kind = 'user' AND a.principal_id = $2) OR \
               (a.principal_kind = 'group' AND a.principal_id IN (SELECT group_id FROM group_members WHERE user_id = $2)))",
        )
        .bind(app_id)
        .bind(user_id)
        .fetch_one(&self.db)
        .await
        .db()?;
        self.reads.assigned.put(key, n > 0, generation);
        Ok(n > 0)
    }

    // ---- cookie keys ---------------------------------------------------------

    /// Cookie keys not yet retired long ago enough to be forgotten: the active
    /// one first.
    pub async fn cookie_keys(&self, not_retired_before: UnixTime) -> Result<Vec<CookieKeyRecord>, StoreError> {
        sqlx::query_as::<_, CookieKeyRecord>(
            "SELECT kid, key_sealed, created_at, retired_at FROM cookie_keys \
             WHERE retired_at IS NULL OR retired_at > $1 ORDER BY created_at DESC, kid",
        )
        .bind(not_retired_before)
        .fetch_all(&self.db)
        .await
        .db()
    }

    /// Makes `key` the active cookie key. The previous one is retired (it still
    /// decrypts until the caller stops listing it) or, with `revoke_older`, every
    /// older key is deleted so nothing sealed with one opens again.
    pub async fn rotate_cookie_key(
        &self,
        kid: &str,
        key_sealed: &[u8],
        now: UnixTime,
        revoke_older: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        if revoke_older {
            sqlx::query("DELETE FROM cookie_keys").execute(&mut *tx).await.db()?;
        } else {
            sqlx::query("UPDATE cookie_keys SET retired_at = $1 WHERE retired_at IS NULL")
                .bind(now)
                .execute(&mut *tx)
                .await
                .db()?;
        }
        sqlx::query("INSERT INTO cookie_keys (kid, key_sealed, created_at, retired_at) VALUES ($1, $2, $3, NULL)")
            .bind(kid)
            .bind(key_sealed)
            .bind(now)
            .execute(&mut *tx)
            .await
            .db()?;
        tx.commit().await.db()?;
        self.note_change(crate::StoreChange::CookieKeys);
        Ok(())
    }
}
