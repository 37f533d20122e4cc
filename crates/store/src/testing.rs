//! Fresh databases for tests: a temporary SQLite file, or a new schema in the
//! PostgreSQL server named by `POSTERN_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`), so tests never share state.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor, PgConnection};

use crate::{Backend, Store, StoreError, StoreOptions};

/// The default PostgreSQL server for tests.
pub const DEFAULT_TEST_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Test schemas older than this are dropped when a new one is made.
const STALE_SCHEMA_SECS: u64 = 6 * 3600;

/// A database for one test; keeps its temporary directory alive.
#[derive(Debug)]
pub struct TestDatabase {
    /// URL to connect with.
    pub url: String,
    /// Which database it is.
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A fresh database of the given kind.
    pub async fn new(backend: Backend) -> Result<Self, StoreError> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().map_err(|e| StoreError::Config(e.to_string()))?;
                let url = format!("sqlite://{}/postern.db", dir.path().display());
                Ok(Self {
                    url,
                    backend,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => Ok(Self {
                url: fresh_postgres_schema().await?,
                backend,
                _dir: None,
            }),
        }
    }

    /// Connects a store to it (migrating it on first use).
    pub async fn store(&self) -> Result<Store, StoreError> {
        Store::connect(&StoreOptions::new(&self.url)).await
    }
}

/// Creates a new schema on the test PostgreSQL server and returns a URL whose
/// connections use it. Fails loudly when the server is unreachable: a test that
/// needs PostgreSQL must not pass without it.
pub async fn fresh_postgres_schema() -> Result<String, StoreError> {
    let base = std::env::var("POSTERN_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_TEST_POSTGRES.into());
    let mut conn = PgConnection::connect(&base).await.map_err(|e| {
        StoreError::Config(format!(
            "tests need PostgreSQL at {base} (set POSTERN_TEST_POSTGRES): {e}"
        ))
    })?;
    // Test schemas' age, against the machine's clock (not a service's).
    #[allow(clippy::disallowed_methods)]
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stale: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'postern_t_%'")
            .fetch_all(&mut conn)
            .await
            .map_err(StoreError::from_sqlx)?;
    for name in stale {
        let born = name
            .split('_')
            .nth(2)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(now);
        if now.saturating_sub(born) > STALE_SCHEMA_SECS && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {name} CASCADE")))
                .await;
        }
    }
    let schema = format!("postern_t_{now}_{}", uuid::Uuid::new_v4().simple());
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .await
        .map_err(StoreError::from_sqlx)?;
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}
