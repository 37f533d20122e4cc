//! How the store reaches its database for single statements.
//!
//! On PostgreSQL that is sqlx's pool. On SQLite it is a set of connections of
//! the store's own: sqlx's pool pings every connection it gets back, and an
//! SQLite connection is a thread of its own, so each statement cost a second
//! hop to that thread and back (a futex wake and two thread switches) for
//! nothing: the connection is a file handle that cannot go stale, and its
//! commands run in the order they were sent, so a statement abandoned half way
//! (its caller dropped) finishes or stops before the next one starts.
//! Transactions still come from sqlx's pool ([`crate::Store::begin_write`]),
//! which closes a connection that comes back inside one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use sqlx::any::{AnyConnectOptions, AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::{Any, AnyConnection, AnyPool, ConnectOptions, Connection, Describe, Either, Execute, Executor, SqlStr};
use sqlx_core::ext::async_stream::TryAsyncStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What SQLite connections are set to when opened.
pub(crate) const SQLITE_PRAGMAS: &str = "PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL; \
                                         PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL;";

/// The store's executor for single statements: `query.fetch_one(&self.db)`.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    /// sqlx's pool (PostgreSQL).
    Pool(AnyPool),
    /// The store's own SQLite connections.
    Sqlite(Arc<SqliteConnections>),
}

impl Db {
    /// Closes the store's own connections, waiting for those in use to come
    /// back. Statements after this fail as on a closed pool.
    pub(crate) async fn close(&self) {
        if let Db::Sqlite(connections) = self {
            connections.close().await;
        }
    }
}

/// Up to `size` SQLite connections, opened when first needed and kept.
pub(crate) struct SqliteConnections {
    options: AnyConnectOptions,
    size: u32,
    permits: Arc<Semaphore>,
    idle: std::sync::Mutex<Vec<AnyConnection>>,
    acquire_timeout: Duration,
    closed: AtomicBool,
    /// Connections opened so far (each is a thread).
    opened: AtomicUsize,
}

impl std::fmt::Debug for SqliteConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteConnections")
            .field("size", &self.size)
            .field("available", &self.permits.available_permits())
            .field("opened", &self.opened.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A connection in use; goes back to the idle ones when dropped, unless it
/// failed in a way that says the connection itself is broken.
struct Lease {
    /// `Some` until dropped.
    connection: Option<AnyConnection>,
    /// Whether the connection goes back to the idle ones.
    keep: bool,
    home: Arc<SqliteConnections>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    fn connection(&mut self) -> Result<&mut AnyConnection, sqlx::Error> {
        self.connection.as_mut().ok_or(sqlx::Error::PoolClosed)
    }

    /// Closes the connection instead of returning it when `error` says it is
    /// broken (anything but an error the database reported for a statement).
    fn discard_if_broken(&mut self, error: &sqlx::Error) {
        if !matches!(error, sqlx::Error::Database(_) | sqlx::Error::RowNotFound) {
            self.keep = false;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if !self.keep || self.home.closed.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut idle) = self.home.idle.lock() {
            idle.push(connection);
        }
    }
}

impl SqliteConnections {
    /// Connections to the database of `options`, at most `size` at once; a
    /// caller waits up to `acquire_timeout` for one.
    pub(crate) fn new(options: AnyConnectOptions, size: u32, acquire_timeout: Duration) -> Arc<Self> {
        let size = size.max(1);
        Arc::new(Self {
            options,
            size,
            permits: Arc::new(Semaphore::new(size as usize)),
            idle: std::sync::Mutex::new(Vec::new()),
            acquire_timeout,
            closed: AtomicBool::new(false),
            opened: AtomicUsize::new(0),
        })
    }

    async fn lease(self: &Arc<Self>) -> Result<Lease, sqlx::Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed);
        }
        let permit = match tokio::time::timeout(self.acquire_timeout, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(sqlx::Error::PoolClosed),
            Err(_) => return Err(sqlx::Error::PoolTimedOut),
        };
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let connection = match idle {
            Some(connection) => connection,
            None => self.open().await?,
        };
        Ok(Lease {
            connection: Some(connection),
            keep: true,
            home: self.clone(),
            _permit: permit,
        })
    }

    async fn open(&self) -> Result<AnyConnection, sqlx::Error> {
        let mut connection = self.options.connect().await?;
        connection.execute(SQLITE_PRAGMAS).await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(connection)
    }

    async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wait for the connections in use (each returns its permit when dropped).
        let all = self.permits.acquire_many(self.size).await;
        let idle = self
            .idle
            .lock()
            .map(|mut idle| std::mem::take(&mut *idle))
            .unwrap_or_default();
        for connection in idle {
            let _ = connection.close().await;
        }
        drop(all);
        self.permits.close();
    }
}

impl<'p> Executor<'p> for &'_ Db {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self {
            Db::Pool(pool) => pool.fetch_many(query),
            Db::Sqlite(connections) => {
                let connections = connections.clone();
                Box::pin(TryAsyncStream::new(move |yielder| async move {
                    let mut lease = connections.lease().await?;
                    let mut rows = lease.connection()?.fetch_many(query);
                    loop {
                        match rows.try_next().await {
                            Ok(Some(row)) => yielder.r#yield(row).await,
                            Ok(None) => break,
                            Err(e) => {
                                drop(rows);
                                lease.discard_if_broken(&e);
                                return Err(e);
                            }
                        }
                    }
                    Ok(())
                }))
            }
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self {
            Db::Pool(pool) => pool.fetch_optional(query),
            Db::Sqlite(connections) => {
                let connections = connections.clone();
                Box::pin(async move {
                    let mut lease = connections.lease().await?;
                    let row = lease.connection()?.fetch_optional(query).await;
                    if let Err(e) = &row {
                        lease.discard_if_broken(e);
                    }
                    row
                })
            }
        }
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement, sqlx::Error>>
    where
        'p: 'e,
    {
        match self {
            Db::Pool(pool) => pool.prepare_with(sql, parameters),
            Db::Sqlite(connections) => {
                let connections = connections.clone();
                Box::pin(async move {
                    connections
                        .lease()
                        .await?
                        .connection()?
                        .prepare_with(sql, parameters)
                        .await
                })
            }
        }
    }

    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
    where
        'p: 'e,
    {
        match self {
            Db::Pool(pool) => pool.describe(sql),
            Db::Sqlite(connections) => {
                let connections = connections.clone();
                Box::pin(async move { connections.lease().await?.connection()?.describe(sql).await })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use sqlx::Row;

    use super::*;
    use crate::testing::TestDatabase;
    use crate::{Backend, Store, StoreError, StoreOptions};

    /// A store on a fresh SQLite file with `connections` of its own.
    async fn store(connections: u32) -> (TestDatabase, Store, Arc<SqliteConnections>) {
        let database = TestDatabase::new(Backend::Sqlite).await.unwrap();
        let mut options = StoreOptions::new(&database.url);
        options.max_connections = connections;
        options.acquire_timeout = Duration::from_millis(300);
        let store = Store::connect(&options).await.unwrap();
        let Db::Sqlite(own) = &store.db else {
            panic!("an SQLite store has connections of its own");
        };
        let own = own.clone();
        (database, store, own)
    }

    /// A statement that keeps SQLite busy for a good while.
    const SLOW: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000000) \
                        SELECT count(*) FROM n";

    #[tokio::test]
    async fn connections_are_kept_and_reused() {
        let (_db, store, own) = store(2).await;
        for n in 0..50_i64 {
            let row = sqlx::query("SELECT $1 + 1").bind(n).fetch_one(&store.db).await.unwrap();
            assert_eq!(row.get::<i64, _>(0), n + 1);
        }
        assert_eq!(
            own.opened.load(Ordering::Relaxed),
            1,
            "one statement at a time needs one connection"
        );
        let rows = futures_util::future::join_all((0..8).map(|_| store.ping())).await;
        assert!(rows.iter().all(Result::is_ok));
        assert!(
            own.opened.load(Ordering::Relaxed) <= 2,
            "never more than the two allowed"
        );
    }

    #[tokio::test]
    async fn abandoned_statements_leave_the_connection_answering_the_next_one() {
        let (_db, store, own) = store(1).await;
        // Dropped while SQLite is still counting.
        let slow = tokio::time::timeout(Duration::from_millis(20), sqlx::query(SLOW).fetch_one(&store.db)).await;
        assert!(slow.is_err(), "the slow statement was expected to outlast 20 ms");
        // Dropped after the first of many rows.
        let mut rows = sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) SELECT i FROM n",
        )
        .fetch(&store.db);
        let first = rows.try_next().await.unwrap().unwrap();
        assert_eq!(first.get::<i64, _>(0), 1);
        drop(rows);
        // The next statement gets its own answer, on the same connection.
        let row = sqlx::query("SELECT 'mine'").fetch_one(&store.db).await.unwrap();
        assert_eq!(row.get::<String, _>(0), "mine");
        assert_eq!(own.opened.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_caller_waits_for_a_free_connection_until_the_deadline() {
        let (_db, store, own) = store(1).await;
        let held = own.lease().await.unwrap();
        let started = Instant::now();
        let refused = store.ping().await;
        assert!(
            matches!(refused, Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut))),
            "{refused:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        drop(held);
        store.ping().await.unwrap();
    }

    #[tokio::test]
    async fn a_statement_the_database_refuses_keeps_its_connection() {
        let (_db, store, own) = store(1).await;
        let refused = sqlx::query("SELECT * FROM no_such_table").fetch_all(&store.db).await;
        assert!(matches!(refused, Err(sqlx::Error::Database(_))), "{:?}", refused.err());
        store.ping().await.unwrap();
        assert_eq!(own.opened.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn closing_waits_for_statements_in_use_then_refuses_new_ones() {
        let (_db, store, own) = store(2).await;
        store.ping().await.unwrap();
        let held = own.lease().await.unwrap();
        let closing = tokio::spawn({
            let store = store.clone();
            async move { store.close().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!closing.is_finished(), "close waits for the connection in use");
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .unwrap()
            .unwrap();
        let refused = store.ping().await;
        assert!(
            matches!(refused, Err(StoreError::Unavailable(sqlx::Error::PoolClosed))),
            "{refused:?}"
        );
        assert!(own.idle.lock().unwrap().is_empty(), "no connection is kept after close");
    }
}
