//! The store's error type: each variant says what the caller should do.

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record does not exist (or not in the caller's tenant): a 404 for the
    /// client, never a hint that it exists elsewhere.
    #[error("not found")]
    NotFound,
    /// A unique name is taken or a referenced record is missing: a 409 for the
    /// client, with this short description.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database is unreachable or overloaded: a 503; the request may be retried.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// The database's disk is full: nothing was written. A 503 for the client;
    /// an operator must free space (retrying later works once they have).
    #[error("the database's storage is full: {0}")]
    StorageFull(sqlx::Error),
    /// The configuration names no usable database; the operator must fix it.
    #[error("database configuration: {0}")]
    Config(String),
    /// The schema could not be brought up to date; the service must not start.
    #[error("database migration failed: {0}")]
    Migration(String),
    /// Stored data violates an invariant (e.g. an unknown enum value): an internal
    /// error to investigate, never shown to the client.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Classifies a database error: unique and foreign-key violations are conflicts,
    /// a missing row is `NotFound`, the rest means the database is unavailable.
    pub(crate) fn from_sqlx(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict("already exists".into()),
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::Conflict("refers to a record that does not exist".into())
            }
            sqlx::Error::Database(db) if is_disk_full(db.code().as_deref()) => StoreError::StorageFull(e),
            _ => StoreError::Unavailable(e),
        }
    }

    /// Whether the caller may retry the same operation later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::StorageFull(_))
    }
}

/// Whether a database error code means the disk is full: SQLite's `SQLITE_FULL`
/// (13, with or without an extended code) or PostgreSQL's `disk_full` (53100).
fn is_disk_full(code: Option<&str>) -> bool {
    match code {
        Some("53100") => true,
        Some(code) => code.parse::<i64>().is_ok_and(|c| c & 0xff == 13),
        None => false,
    }
}

/// Shorthand for mapping sqlx results.
pub(crate) trait SqlxResultExt<T> {
    /// Maps the error with [`StoreError::from_sqlx`].
    fn db(self) -> Result<T, StoreError>;
}

impl<T> SqlxResultExt<T> for Result<T, sqlx::Error> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(StoreError::from_sqlx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_codes() {
        assert!(is_disk_full(Some("13")));
        assert!(is_disk_full(Some("53100")));
        // An extended SQLite code of SQLITE_FULL keeps 13 in its low byte.
        assert!(is_disk_full(Some(&(13 + (1 << 8)).to_string())));
        for other in [
            None,
            Some("5"),
            Some("19"),
            Some("2067"),
            Some("53200"),
            Some("23505"),
            Some("XX000"),
        ] {
            assert!(!is_disk_full(other), "{other:?}");
        }
    }
}
