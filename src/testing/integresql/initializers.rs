//! Watching templates being initialized: one is finalized once its initializer has come and
//! gone, and discarded when the initializer goes away without finalizing it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use super::databases::execute;
use super::pool::{Refusal, Service, Status};
use crate::database::sql;

/// How long a template's initializer must have been gone before a finalize takes effect.
const SETTLE: Duration = Duration::from_millis(500);

/// What to do with a template being initialized.
enum Verdict {
    Wait,
    Finalize { terminate: bool },
    Abandon(String),
}

impl Service {
    /// Watches templates being initialized: finalizes a requested one once its initializer has
    /// come and gone, and discards one whose initializer went away without finalizing it.
    pub(super) async fn watch_initializers(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while !self.stopping() {
            tick.tick().await;
            let initializing: Vec<String> = self
                .lock()
                .iter()
                .filter(|(_, template)| matches!(template.status, Status::Initializing(_)))
                .map(|(hash, _)| hash.clone())
                .collect();
            for hash in initializing {
                if let Err(refusal) = self.check_initializer(&hash).await {
                    warn!(
                        hash,
                        detail = refusal.detail,
                        "could not check a template's initializer"
                    );
                }
            }
        }
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one decision over the initializer's sessions, told in order"
    )]
    pub(super) async fn check_initializer(&self, hash: &str) -> Result<(), Refusal> {
        let Some(name) = self.lock().get(hash).map(|template| template.name.clone()) else {
            return Ok(());
        };
        // Sessions now, those of them busy (in a statement or transaction, or idle only
        // briefly), and every session the database has had (counted when one ends): a short one
        // between two looks still counts.
        let (open, busy, ended): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = $1),
                    (SELECT count(*) FROM pg_stat_activity WHERE datname = $1
                        AND (state <> 'idle' OR state_change > now() - make_interval(secs => $2))),
                    coalesce((SELECT sessions FROM pg_stat_database WHERE datname = $1), 0)",
        )
        .bind(&name)
        .bind(self.settings.abandon_after.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        let verdict = {
            let mut templates = self.lock();
            let Some(template) = templates.get_mut(hash) else {
                return Ok(());
            };
            let Status::Initializing(state) = &mut template.status else {
                return Ok(());
            };
            if state.finalizing {
                return Ok(());
            }
            if open > 0 {
                state.connected = true;
                state.last_seen = Instant::now();
            } else if ended > 0 {
                state.connected = true;
            }
            let abandon = self.settings.abandon_after;
            let verdict = match state.finalize_requested {
                // A finalize may come from a caller that got 423 while the initializer works
                // (the Python client's `with` block): it takes effect once the initializer has
                // been connected and gone for a moment (not between two of its connections).
                Some(requested)
                    if open == 0
                        && ((state.connected && state.last_seen.elapsed() >= SETTLE)
                            || requested.elapsed() > abandon) =>
                {
                    Verdict::Finalize { terminate: false }
                }
                // Finished but still connected (a pool kept its connection), idle that long:
                // its sessions would block every clone.
                Some(requested) if open > 0 && busy == 0 && requested.elapsed() > abandon => {
                    Verdict::Finalize { terminate: true }
                }
                None if state.connected && open == 0 && state.last_seen.elapsed() > abandon => {
                    Verdict::Abandon(format!(
                        "its initializer disconnected without finalizing it for {} s",
                        abandon.as_secs()
                    ))
                }
                None if !state.connected && state.since.elapsed() > abandon * 10 => {
                    Verdict::Abandon(format!(
                        "its initializer never connected to it in {} s",
                        (abandon * 10).as_secs()
                    ))
                }
                Some(_) | None => Verdict::Wait,
            };
            state.finalizing = matches!(verdict, Verdict::Finalize { .. });
            verdict
        };
        match verdict {
            Verdict::Wait => Ok(()),
            Verdict::Abandon(reason) => {
                warn!(hash, reason, "discarded a template");
                if let Ok(doomed) = self.discard_as(hash, reason) {
                    for name in doomed {
                        self.drop_database(&name).await;
                    }
                }
                Ok(())
            }
            Verdict::Finalize { terminate } => {
                let role = sql::identifier(&name);
                let mut statements = vec![format!("ALTER ROLE {role} NOLOGIN")];
                if terminate {
                    statements.push(format!(
                        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = {}",
                        sql::literal(&name)
                    ));
                }
                // Nobody connects to it any more (a connection would block clones); its
                // objects keep their owner, whose role is reassigned in each clone.
                statements.push(format!(
                    "ALTER DATABASE {role} OWNER TO {}",
                    sql::identifier(&self.admin.username)
                ));
                statements.push(format!("ALTER DATABASE {role} ALLOW_CONNECTIONS false"));
                let mut finalized = Ok(());
                for statement in statements {
                    finalized = execute(&self.pool, statement).await;
                    if finalized.is_err() {
                        break;
                    }
                }
                if let Some(template) = self.lock().get_mut(hash)
                    && let Status::Initializing(state) = &mut template.status
                {
                    if finalized.is_ok() {
                        template.status = Status::Finalized;
                    } else {
                        // Tried again on the next look.
                        state.finalizing = false;
                    }
                }
                finalized?;
                self.changed.notify_waiters();
                self.refill.notify_waiters();
                Ok(())
            }
        }
    }
}
