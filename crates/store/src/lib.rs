//! Persistent state of the service on SQLite (embedded) or PostgreSQL (scale-out).
//!
//! One [`Store`] type serves both databases: queries go through sqlx's `Any` driver
//! with `$N` placeholders, and only the migrations differ per dialect
//! (`migrations/sqlite`, `migrations/postgres`, same numbering). Timestamps are Unix
//! seconds and flags are 0/1 integers so that every column decodes the same way on
//! both. Every method that depends on time takes `now` from the caller.
//!
//! Secrets never enter the store in clear: bearer secrets (codes, tokens, session
//! IDs) are kept as SHA-256 digests, secrets that must be read back are sealed by
//! `postern-keyring` before they arrive here, and passwords only as argon2id hashes.
#![warn(missing_docs)]

mod apps;
mod audit;
pub mod cache;
mod changes;
mod clients;
mod components;
mod db;
mod directory;
mod error;
mod export;
mod flows;
pub mod hosts;
mod keys;
mod lockout;
mod oauth;
mod policies;
mod releases;
mod revocations;
mod roles;
mod sessions;
mod setup;
mod signin_log;
mod tenants;
#[cfg(feature = "testing")]
pub mod testing;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection as _, Executor};

pub use apps::{APP_CALLBACK_PATH, App, AppLimits, AppSpec, CookieKeyRecord, ExternalScheme, Preauth, PrincipalKind};
pub use audit::{AuditBreak, AuditEntry, AuditVerification, NewAuditEntry};
pub use changes::StoreChange;
pub use clients::{NewOAuthClient, OAuthClient};
pub use components::{
    CaRecord, CertRecord, Component, ComponentKind, ConnectorGroup, NewComponent, RegistrationToken,
    RevokedCertificate, SerialStatus,
};
pub use directory::{
    Domain, DomainAuthMode, Group, NewUser, User, UserSource, UserUpdate, normalize_username, pending_external_id,
};
pub use error::StoreError;
pub use export::{ExportStream, NamedAuditEntry, NumberedSignin};
pub use flows::FlowRecord;
pub use hosts::{HostBasis, HostRefusal, HostRules, HostViolation};
pub use keys::SigningKeyRecord;
pub use lockout::{LocationClass, LockoutContext, LockoutKey, LockoutReservation, LockoutRules, LockoutState};
pub use oauth::{
    AuthCode, CodeRedemption, DeviceCode, DeviceStatus, NewDeviceCode, RefreshLookup, RefreshRotation, RefreshToken,
};
pub use policies::{RecentFailure, UserRisk};
pub use releases::{ComponentUpdate, NewRelease, Release, UpdatePolicy};
pub use revocations::Revocation;
pub use roles::Role;
pub use sessions::Session;
pub use signin_log::{SigninEvent, SigninOutcome};
pub use tenants::{NewTenant, Tenant, TenantLimits, TenantSettings};

/// Which database the store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file: the embedded default.
    Sqlite,
    /// PostgreSQL: for several service instances.
    Postgres,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connection and migration handle to the service's database.
#[derive(Clone, Debug)]
pub struct Store {
    /// For transactions, migrations and tests (see [`db`]).
    pool: AnyPool,
    /// For single statements: `query.fetch_one(&self.db)`.
    db: db::Db,
    backend: Backend,
    /// Woken whenever a connector group's configuration version changes in this
    /// process (other instances are seen by polling).
    config_changed: std::sync::Arc<tokio::sync::Notify>,
    /// See [`Store::routing_generation`].
    routing_generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// See [`Store::revocations`].
    revocations: tokio::sync::broadcast::Sender<Revocation>,
    /// See [`Store::local_changes`].
    changes: tokio::sync::broadcast::Sender<StoreChange>,
    /// Tenants by `id:{id}` and `name:{name}`: read on every page of a
    /// sign-in and every app request, changed by operators only.
    tenants: std::sync::Arc<cache::ReadCache<String, Tenant>>,
    /// What every page of a sign-in and every authorization asks again: see
    /// [`cache::SigninReads`].
    reads: std::sync::Arc<cache::SigninReads>,
}

/// Bumps the routing generation when dropped, and announces it.
struct RoutingChange(
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    tokio::sync::broadcast::Sender<StoreChange>,
);

impl Drop for RoutingChange {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let _ = self.1.send(StoreChange::Routing);
    }
}

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// `sqlite:///path/to/file.db` or `postgres://user@host:port/db`. A
    /// `?options=-c search_path=NAME` suffix selects a PostgreSQL schema.
    pub url: String,
    /// Upper bound on open connections.
    pub max_connections: u32,
    /// How long a caller waits for a free connection before getting
    /// [`StoreError::Unavailable`].
    pub acquire_timeout: Duration,
    /// The clock the store's read caches expire by (the service clock, so a test
    /// that sets the time sets it for them too).
    pub clock: postern_time::SharedClock,
}

/// Default pool size for SQLite: each connection is a thread of its own and
/// every query a hop to it and back, while SQLite writes one at a time anyway;
/// a few connections keep those threads busy instead of parking and waking,
/// which measured ~15 % more pass-through sign-ins per second than 16.
const SQLITE_CONNECTIONS: u32 = 4;
/// Default pool size for PostgreSQL.
const POSTGRES_CONNECTIONS: u32 = 16;

impl StoreOptions {
    /// Options for `url` with the default pool size (by database) and deadline.
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        let max_connections = if url.starts_with("sqlite:") {
            SQLITE_CONNECTIONS
        } else {
            POSTGRES_CONNECTIONS
        };
        Self {
            url,
            max_connections,
            acquire_timeout: Duration::from_secs(5),
            clock: std::sync::Arc::new(postern_time::SystemClock),
        }
    }
}

/// Makes the SQLite file of `url` readable by its owner only (0600), creating
/// it empty if missing: it holds password hashes, sealed keys and digests of
/// bearer secrets. SQLite gives its `-wal` and `-shm` files the database file's
/// mode. In-memory databases are left alone.
fn secure_sqlite_file(url: &str) -> Result<(), StoreError> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.starts_with(':') {
        return Ok(());
    }
    let path = std::path::Path::new(path);
    let failed = |e: std::io::Error| StoreError::Config(format!("securing {}: {e}", path.display()));
    let mut open = std::fs::OpenOptions::new();
    open.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    open.open(path).map_err(failed)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["", "-wal", "-shm"] {
            let p = std::path::PathBuf::from(format!("{}{file}", path.display()));
            if p.exists() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
            }
        }
    }
    Ok(())
}

impl Store {
    /// Connects to the database named by `options.url` and brings its schema up to
    /// date.
    pub async fn connect(options: &StoreOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if options.url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if options.url.starts_with("postgres:") || options.url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Config(
                "database url must start with sqlite: or postgres:".into(),
            ));
        };
        let mut url = options.url.clone();
        if backend == Backend::Sqlite {
            secure_sqlite_file(&url)?;
            if !url.contains('?') {
                url.push_str("?mode=rwc");
            }
        }
        let connect_options =
            AnyConnectOptions::from_str(&url).map_err(|e| StoreError::Config(format!("database url: {e}")))?;
        let mut pool_options = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // A connection that comes back still inside a transaction is
            // closed, not reused. SQLite rolls a whole transaction back by
            // itself on some errors (a full disk): sqlx's count of the
            // connection's open transactions then disagrees with SQLite's, its
            // later `ROLLBACK TO SAVEPOINT` leaves a transaction open that holds
            // the write lock, and every other connection waits "database is
            // locked" until a restart (it/faults.rs). A transaction dropped
            // without commit on an error path also costs its connection; a
            // committed one never does.
            .after_release(|conn, _meta| Box::pin(async move { Ok(!conn.is_in_transaction()) }));
        if backend == Backend::Sqlite {
            // No ping before each checkout: an SQLite connection is a file
            // handle on a thread of its own that cannot go stale, and the ping
            // is a hop to that thread and back, as costly as a statement.
            pool_options = pool_options.test_before_acquire(false);
            pool_options = pool_options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(db::SQLITE_PRAGMAS).await?;
                    Ok(())
                })
            });
        }
        let pool = pool_options
            .connect_with(connect_options.clone())
            .await
            .map_err(StoreError::from_sqlx)?;
        let db = match backend {
            Backend::Sqlite => db::Db::Sqlite(db::SqliteConnections::new(
                connect_options,
                options.max_connections,
                options.acquire_timeout,
            )),
            Backend::Postgres => db::Db::Pool(pool.clone()),
        };
        let store = Self {
            pool,
            db,
            backend,
            config_changed: std::sync::Arc::new(tokio::sync::Notify::new()),
            routing_generation: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
            revocations: revocations::channel(),
            changes: changes::channel(),
            tenants: std::sync::Arc::new(cache::ReadCache::with_clock(cache::TIME_TO_LIVE, options.clock.clone())),
            reads: std::sync::Arc::new(cache::SigninReads::new(&options.clock)),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// The connection pool, for tests that must reach under the store's API.
    #[cfg(feature = "testing")]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Signalled whenever a connector group's configuration changes through this
    /// process. Waiters must still re-read the store (and poll it now and then:
    /// other instances do not signal here).
    pub fn config_changes(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.config_changed.clone()
    }

    /// A counter this process bumps after every change to tenants, domains,
    /// components (agents' keys, connectors' certificates), published apps and
    /// their assignments, users and group memberships made by administrators (not
    /// the directory's own updates at sign-in). A cache of those reads
    /// the generation *before* querying and keeps the answer only while the
    /// generation stays the same, so it sees this process's changes at once; other
    /// instances' changes it sees when its own time limit runs out.
    pub fn routing_generation(&self) -> u64 {
        self.routing_generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A guard that bumps [`Store::routing_generation`] when dropped, i.e. when the
    /// write it guards has finished (committed or failed).
    fn routing_change(&self) -> RoutingChange {
        RoutingChange(self.routing_generation.clone(), self.changes.clone())
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock
    /// at once (`BEGIN IMMEDIATE`, waiting up to the busy timeout for another
    /// writer): a deferred transaction that reads first and then writes fails
    /// at once with "database is locked" when another connection wrote in
    /// between, which the busy timeout does not cover. PostgreSQL locks rows
    /// as it goes.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let begun = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        };
        begun.map_err(StoreError::from_sqlx)
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks that the database answers, for readiness probes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.db)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    /// Closes all connections, waiting for checked-out ones to come back.
    pub async fn close(&self) {
        self.db.close().await;
        self.pool.close().await;
    }

    /// Records the use of a single-use signed credential (its token ID `jti`,
    /// valid until `expires_at`): true the first time, false when it was used
    /// before. The row is purged once the credential has expired.
    pub async fn spend_credential(&self, jti: &str, expires_at: postern_time::UnixTime) -> Result<bool, StoreError> {
        let done =
            sqlx::query("INSERT INTO spent_credentials (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING")
                .bind(jti)
                .bind(expires_at)
                .execute(&self.db)
                .await
                .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes expired short-lived records (sign-in flows, codes, device codes,
    /// ended sessions, used refresh tokens past their family lifetime, spent
    /// credentials). Returns how many rows went.
    pub async fn purge_expired(&self, now: postern_time::UnixTime) -> Result<u64, StoreError> {
        let mut removed = 0;
        for sql in [
            "DELETE FROM signin_flows WHERE expires_at < $1",
            "DELETE FROM auth_codes WHERE expires_at < $1",
            "DELETE FROM device_codes WHERE expires_at < $1",
            "DELETE FROM sessions WHERE expires_at < $1",
            "DELETE FROM refresh_tokens WHERE family_expires_at < $1",
            "DELETE FROM setup_codes WHERE expires_at < $1",
            "DELETE FROM spent_credentials WHERE expires_at < $1",
        ] {
            removed += sqlx::query(sql)
                .bind(now)
                .execute(&self.db)
                .await
                .map_err(StoreError::from_sqlx)?
                .rows_affected();
        }
        Ok(removed)
    }
}

/// A fresh random identifier for a new row.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A 0/1 integer column read as `bool`.
#[derive(sqlx::Type)]
#[sqlx(transparent)]
pub(crate) struct DbFlag(i64);

impl From<DbFlag> for bool {
    fn from(flag: DbFlag) -> bool {
        flag.0 != 0
    }
}

/// The integer stored for `flag`.
pub(crate) fn flag(flag: bool) -> i64 {
    i64::from(flag)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{POSTGRES_CONNECTIONS, SQLITE_CONNECTIONS, StoreOptions};

    fn names(dir: &str) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn both_dialects_have_the_same_migrations() {
        let base = env!("CARGO_MANIFEST_DIR");
        let sqlite = names(&format!("{base}/migrations/sqlite"));
        let postgres = names(&format!("{base}/migrations/postgres"));
        assert!(!sqlite.is_empty());
        assert_eq!(sqlite, postgres);
    }

    #[test]
    fn pool_size_defaults_by_database() {
        assert_eq!(
            StoreOptions::new("sqlite:///tmp/x.db").max_connections,
            SQLITE_CONNECTIONS
        );
        assert_eq!(
            StoreOptions::new("postgres://postgres@127.0.0.1/test").max_connections,
            POSTGRES_CONNECTIONS
        );
    }
}
