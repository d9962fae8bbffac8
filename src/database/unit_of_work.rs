//! Running work on a pooled connection: [`Database::run`] (retried once on a dead connection),
//! and transactions with the guide's `get_db` semantics ([`UnitOfWork`], [`Database::transaction`]).

use std::sync::atomic::Ordering;

use sqlx::postgres::PgConnection;
use tracing::{debug, warn};

use super::pool::Connection;
use super::{Database, DatabaseError, is_connection_lost};

impl Database {
    /// Runs `work` (reads, or a single statement that commits by itself) on a pooled
    /// connection. When a connection taken from the idle ones turns out dead on its first
    /// statement (the server restarted or dropped it), nothing of the work ran: it is
    /// discarded, every other idle connection is checked before its next use, and `work` runs
    /// once more on a live one. Errors other than a lost connection are returned as they are.
    ///
    /// # Errors
    ///
    /// As [`Database::acquire`], or the statement's error ([`DatabaseError::Query`]).
    pub async fn run<T>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error> + Clone,
    ) -> Result<T, DatabaseError> {
        let mut connection = self.acquire().await?;
        // A copy for the retry (closures capturing references are copied for free).
        match work.clone()(&mut connection).await {
            Err(error) if connection.reused && is_connection_lost(&error) => {
                debug!(%error, "a pooled connection was dead; retrying on a live one");
                connection.discard();
                self.liveness.dead_seen.fetch_add(1, Ordering::Relaxed);
                drop(connection);
                let mut connection = self.acquire().await?;
                let result = work(&mut connection).await;
                if let Err(error) = &result
                    && is_connection_lost(error)
                {
                    connection.discard();
                }
                Ok(result?)
            }
            Err(error) => {
                if is_connection_lost(&error) {
                    connection.discard();
                }
                Err(DatabaseError::Query(error))
            }
            Ok(value) => Ok(value),
        }
    }

    /// Starts a unit of work: see [`UnitOfWork`].
    ///
    /// # Errors
    ///
    /// As [`Database::acquire`], or [`DatabaseError::Query`] when `BEGIN` fails.
    pub async fn begin(&self) -> Result<UnitOfWork, DatabaseError> {
        let mut connection = self.acquire().await?;
        let begun = sqlx::raw_sql("BEGIN").execute(&mut *connection).await;
        if let Err(error) = begun {
            if is_connection_lost(&error) {
                connection.discard();
            }
            return Err(error.into());
        }
        Ok(UnitOfWork {
            connection,
            finished: false,
        })
    }

    /// Runs `work` in a transaction, the guide's `get_db`: committed when it returns `Ok`,
    /// rolled back when it returns `Err` or panics.
    ///
    /// # Errors
    ///
    /// The error of `work`, or a [`DatabaseError`] (converted into `E`) from the database.
    pub async fn transaction<T, E>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DatabaseError>,
    {
        let mut unit = self.begin().await?;
        let result = work(unit.connection()).await;
        unit.finish(result).await
    }
}

/// A transaction with the guide's `get_db` semantics, usable anywhere: [`UnitOfWork::finish`]
/// commits an `Ok` result and rolls back an `Err`; dropped unfinished (an early return, a panic),
/// its connection is closed, which rolls it back.
#[derive(Debug)]
pub struct UnitOfWork {
    connection: Connection,
    finished: bool,
}

impl Drop for UnitOfWork {
    fn drop(&mut self) {
        if !self.finished {
            self.connection.discard();
        }
    }
}

impl UnitOfWork {
    /// The connection to run statements on.
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.connection
    }

    /// Commits when `result` is `Ok`, rolls back when it is `Err`; returns `result`.
    ///
    /// # Errors
    ///
    /// The `Err` of `result`, or the commit's failure converted into `E`.
    pub async fn finish<T, E>(mut self, result: Result<T, E>) -> Result<T, E>
    where
        E: From<DatabaseError>,
    {
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = sqlx::raw_sql(end).execute(&mut *self.connection).await;
        // Only a connection whose transaction ended goes back to the pool.
        self.finished = ended.is_ok();
        match (result, ended) {
            (Ok(value), Ok(_)) => Ok(value),
            (Ok(_), Err(error)) => Err(E::from(DatabaseError::Query(error))),
            (Err(error), Ok(_)) => Err(error),
            (Err(error), Err(rollback)) => {
                warn!(%rollback, "rollback failed; the connection is discarded");
                Err(error)
            }
        }
    }
}
