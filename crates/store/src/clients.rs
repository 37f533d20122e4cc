//! OAuth clients (relying parties) registered with a tenant's STS.

use postern_time::UnixTime;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::error::SqlxResultExt;
use crate::{Store, StoreError, flag};

/// A registered OAuth 2.0 / OpenID Connect client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthClient {
    /// Owning tenant.
    pub tenant_id: String,
    /// The `client_id`, unique within the tenant.
    pub client_id: String,
    /// Name shown on consent and device pages.
    pub name: String,
    /// SHA-256 of the client secret; `None` for a public client.
    pub secret_digest: Option<Vec<u8>>,
    /// Redirect URIs, matched exactly.
    pub redirect_uris: Vec<String>,
    /// Where `end_session` may send the browser afterwards, matched exactly.
    pub post_logout_redirect_uris: Vec<String>,
    /// Grant types the client may use.
    pub grant_types: Vec<String>,
    /// Scopes the client may request beyond the standard OIDC ones.
    pub scopes: Vec<String>,
    /// Created by the service itself (e.g. the `postern` CLI); cannot be deleted.
    pub builtin: bool,
    /// When it was registered.
    pub created_at: UnixTime,
}

impl OAuthClient {
    /// Whether the client authenticates with a secret.
    pub fn is_confidential(&self) -> bool {
        self.secret_digest.is_some()
    }

    /// Whether the client may use `grant_type`.
    pub fn allows_grant(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant_type)
    }
}

/// What is needed to register a client.
#[derive(Clone, Debug)]
pub struct NewOAuthClient {
    /// The `client_id`.
    pub client_id: String,
    /// Display name.
    pub name: String,
    /// SHA-256 of the secret, or `None` for a public client.
    pub secret_digest: Option<Vec<u8>>,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Exact post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<String>,
    /// Allowed grant types.
    pub grant_types: Vec<String>,
    /// Allowed extra scopes.
    pub scopes: Vec<String>,
    /// Whether the service owns it.
    pub builtin: bool,
}

fn list_to_text(list: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(list).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn text_to_list(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("client list: {e}")))
}

fn client_from_row(row: &AnyRow) -> Result<OAuthClient, StoreError> {
    let get_text = |name: &str| -> Result<String, StoreError> { row.try_get(name).db() };
    Ok(OAuthClient {
        tenant_id: get_text("tenant_id")?,
        client_id: get_text("client_id")?,
        name: get_text("name")?,
        secret_digest: row.try_get("secret_digest").db()?,
        redirect_uris: text_to_list(&get_text("redirect_uris")?)?,
        post_logout_redirect_uris: text_to_list(&get_text("post_logout_uris")?)?,
        grant_types: text_to_list(&get_text("grant_types")?)?,
        scopes: text_to_list(&get_text("scopes")?)?,
        builtin: row.try_get::<i64, _>("builtin").db()? != 0,
        created_at: row.try_get("created_at").db()?,
    })
}

macro_rules! client_columns {
    () => {
        "tenant_id, client_id, name, secret_digest, redirect_uris, \
     post_logout_uris, grant_types, scopes, builtin, created_at"
    };
}

impl Store {
    /// Registers a client.
    pub async fn create_client(
        &self,
        tenant_id: &str,
        client: &NewOAuthClient,
        now: UnixTime,
    ) -> Result<OAuthClient, StoreError> {
        let _changed = self.routing_change();
        let mut conn = self.pool.acquire().await.db()?;
        insert_client(&mut conn, tenant_id, client, now).await?;
        drop(conn);
        self.client(tenant_id, &client.client_id).await
    }

    /// One client of a tenant. Cached (see [`crate::cache`]): every change to
    /// clients moves the routing generation.
    pub async fn client(&self, tenant_id: &str, client_id: &str) -> Result<OAuthClient, StoreError> {
        let key = (tenant_id.to_owned(), client_id.to_owned());
        let generation = self.routing_generation();
        if let Some(client) = self.reads.clients.get(&key, generation) {
            return Ok(client);
        }
        let row = sqlx::query(concat!(
            "SELECT ",
            client_columns!(),
            " FROM oauth_clients WHERE tenant_id = $1 AND client_id = $2"
        ))
        .bind(tenant_id)
        .bind(client_id)
        .fetch_one(&self.db)
        .await
        .db()?;
        let client = client_from_row(&row)?;
        self.reads.clients.put(key, client.clone(), generation);
        Ok(client)
    }

    /// The clients of a tenant.
    pub async fn clients(&self, tenant_id: &str) -> Result<Vec<OAuthClient>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            client_columns!(),
            " FROM oauth_clients WHERE tenant_id = $1 ORDER BY client_id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.db)
        .await
        .db()?;
        rows.iter().map(client_from_row).collect()
    }

    /// Deletes a client that the service does not own, with its codes and
    /// tokens. The client of a published app goes only with its app (conflict).
    pub async fn delete_client(&self, tenant_id: &str, client_id: &str) -> Result<(), StoreError> {
        let _changed = self.routing_change();
        let mut tx = self.begin_write().await?;
        let app: Option<String> = sqlx::query_scalar("SELECT name FROM apps WHERE tenant_id = $1 AND client_id = $2")
            .bind(tenant_id)
            .bind(client_id)
            .fetch_optional(&mut *tx)
            .await
            .db()?;
        if let Some(app) = app {
            return Err(StoreError::Conflict(format!(
                "client {client_id} signs users in to the app {app}; it is removed with the app"
            )));
        }
        let done = sqlx::query("DELETE FROM oauth_clients WHERE tenant_id = $1 AND client_id = $2 AND builtin = 0")
            .bind(tenant_id)
            .bind(client_id)
            .execute(&mut *tx)
            .await
            .db()?;
        if done.rows_affected() == 0 {
            // Rolled back now, not when the transaction is dropped: on SQLite
            // the DELETE took the write lock, and the next writer must not
            // find it still held.
            tx.rollback().await.db()?;
            return Err(StoreError::NotFound);
        }
        delete_grants(&mut tx, tenant_id, client_id).await?;
        tx.commit().await.db()
    }
}

/// Inserts a client row through `conn` (a pooled connection or a transaction).
pub(crate) async fn insert_client(
    conn: &mut AnyConnection,
    tenant_id: &str,
    client: &NewOAuthClient,
    now: UnixTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO oauth_clients (tenant_id, client_id, name, secret_digest, redirect_uris, \
         post_logout_uris, grant_types, scopes, builtin, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(tenant_id)
    .bind(&client.client_id)
    .bind(&client.name)
    .bind(&client.secret_digest)
    .bind(list_to_text(&client.redirect_uris)?)
    .bind(list_to_text(&client.post_logout_redirect_uris)?)
    .bind(list_to_text(&client.grant_types)?)
    .bind(list_to_text(&client.scopes)?)
    .bind(flag(client.builtin))
    .bind(now)
    .execute(conn)
    .await
    .map_err(|e| match StoreError::from_sqlx(e) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("client {} exists", client.client_id)),
        other => other,
    })?;
    Ok(())
}

/// Sets a client's name and exact redirect lists (the client of an app follows
/// the app). Returns whether the client exists.
pub(crate) async fn set_client_redirects(
    conn: &mut AnyConnection,
    tenant_id: &str,
    client: &NewOAuthClient,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE oauth_clients SET name = $1, redirect_uris = $2, post_logout_uris = $3 \
         WHERE tenant_id = $4 AND client_id = $5",
    )
    .bind(&client.name)
    .bind(list_to_text(&client.redirect_uris)?)
    .bind(list_to_text(&client.post_logout_redirect_uris)?)
    .bind(tenant_id)
    .bind(&client.client_id)
    .execute(conn)
    .await
    .db()?;
    Ok(done.rows_affected() > 0)
}

/// Deletes the codes and tokens issued to a client.
pub(crate) async fn delete_grants(
    conn: &mut AnyConnection,
    tenant_id: &str,
    client_id: &str,
) -> Result<(), StoreError> {
    for sql in [
        "DELETE FROM auth_codes WHERE tenant_id = $1 AND client_id = $2",
        "DELETE FROM refresh_tokens WHERE tenant_id = $1 AND client_id = $2",
        "DELETE FROM device_codes WHERE tenant_id = $1 AND client_id = $2",
    ] {
        sqlx::query(sql)
            .bind(tenant_id)
            .bind(client_id)
            .execute(&mut *conn)
            .await
            .db()?;
    }
    Ok(())
}
