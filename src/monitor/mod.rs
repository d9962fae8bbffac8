//! Health over time, below the API: a sample every [`SAMPLE_INTERVAL`] (database latency, pool
//! use, requests/s, error rate) kept for [`HISTORY`], and a timeline of what happened (server
//! stopped, started, crashed, recovered and taken over; migrations; pool exhausted; connection
//! errors; slow statements; resets). [`Monitor`] holds them; [`Monitor::start_sampling`], called
//! by whoever runs the stack (`Stack`), starts the background sampler. The API serves them
//! (`GET /api/health/history`, `GET /api/health/events`) and records what it does.

mod probe;
mod statements;

pub use self::probe::{DatabaseCheck, probe_database};
pub(crate) use self::statements::INTERNAL_STATEMENT;
pub use self::statements::{SlowQuery, slowest};

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::database::{Database, PoolStats};
use crate::embedded::EmbeddedServer;

/// How often a sample is taken (the UI refreshes at the same pace).
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(2);
/// How far back samples are kept.
pub const HISTORY: Duration = Duration::from_mins(15);
/// Events kept, newest first out.
const EVENTS_KEPT: usize = 500;
/// Slow statements are looked for every this many samples (a `pg_stat_statements` read).
const SLOW_STATEMENT_EVERY: u64 = 5;
/// How long `/health` reports a full disk after the last write that failed for it, unless a
/// write succeeds sooner.
const DISK_FULL_REMEMBERED: Duration = Duration::from_mins(1);

/// One sample.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Sample {
    at: DateTime<Utc>,
    /// `SELECT 1` through the pool; null when the database did not answer.
    latency_ms: Option<f64>,
    in_use: u32,
    idle: u32,
    /// Acquisitions that waited for a connection since the previous sample.
    waits: u64,
    requests_per_second: f64,
    /// Share of those requests answered with a 5xx status, 0 to 1.
    error_rate: f64,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The API started (with the database it uses).
    Started,
    /// Migrations were applied.
    MigrationsApplied,
    /// The embedded server was stopped on request.
    ServerStopped,
    /// The embedded server was started on request.
    ServerStarted,
    /// The embedded server was restarted on request.
    ServerRestarted,
    /// The embedded server exited unexpectedly.
    ServerCrashed,
    /// The embedded server was started again after it exited unexpectedly.
    ServerRecovered,
    /// The pgharness that ran the embedded server stopped, and this one took the server over.
    ServerTakenOver,
    /// The database answers again after an outage.
    DatabaseRecovered,
    /// The database stopped answering.
    DatabaseUnreachable,
    /// Requests found every connection busy for the pool timeout.
    PoolExhausted,
    /// Connections could not be had.
    ConnectionErrors,
    /// A statement ran longer than `PGHARNESS_SLOW_QUERY_MS`.
    SlowStatement,
    /// Statement statistics were reset.
    StatisticsReset,
    /// The database was dropped, recreated and migrated.
    DatabaseReset,
    /// A fixture was loaded.
    FixtureLoaded,
    /// The database was saved as a snapshot.
    SnapshotSaved,
    /// The database was replaced by a snapshot.
    SnapshotRestored,
    /// A write failed because the disk holding the database's data directory is full.
    DiskFull,
}

/// One entry of the timeline.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Event {
    at: DateTime<Utc>,
    kind: EventKind,
    message: String,
}

/// Samples, events and the request counters the samples are made from. One per API.
#[derive(Debug, Default)]
pub struct Monitor {
    samples: Mutex<VecDeque<Sample>>,
    events: Mutex<VecDeque<Event>>,
    requests: AtomicU64,
    server_errors: AtomicU64,
    /// When a write last failed for lack of disk space; cleared when a write succeeds.
    last_disk_full: Mutex<Option<Instant>>,
}

impl Monitor {
    /// A write failed for lack of disk space: `/health` turns degraded, and the timeline tells
    /// (once per episode).
    pub fn disk_full(&self) {
        let previous = self
            .last_disk_full
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(Instant::now());
        if previous.is_none_or(|at| at.elapsed() >= DISK_FULL_REMEMBERED) {
            self.record(
                EventKind::DiskFull,
                "A write failed: the disk holding the database's data directory is full",
            );
        }
    }

    /// A write succeeded: the disk has room again.
    pub fn write_succeeded(&self) {
        *self
            .last_disk_full
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Whether a write failed for lack of disk space lately, and none succeeded since.
    #[must_use]
    pub fn disk_full_lately(&self) -> bool {
        self.last_disk_full
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < DISK_FULL_REMEMBERED)
    }

    /// Counts a finished request, and whether it failed on the server's side.
    pub fn count_request(&self, server_error: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if server_error {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds an event to the timeline.
    pub fn record(&self, kind: EventKind, message: impl Into<String>) {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(Event {
            at: Utc::now(),
            kind,
            message: message.into(),
        });
    }

    /// The samples kept, oldest first.
    #[must_use]
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// The timeline, newest first.
    #[must_use]
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .cloned()
            .collect()
    }

    fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = usize::try_from(HISTORY.as_secs() / SAMPLE_INTERVAL.as_secs()).unwrap_or(450);
        while samples.len() >= kept {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Samples `database` (and watches the embedded `server`) every [`SAMPLE_INTERVAL`] until
    /// this monitor is dropped. Needs a Tokio runtime; without one nothing is sampled.
    pub fn start_sampling(
        self: &Arc<Self>,
        database: Database,
        server: Option<&Arc<EmbeddedServer>>,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let sampler = Sampler {
            monitor: Arc::downgrade(self),
            server: server.map(Arc::downgrade),
            slow_after_ms: database.settings().slow_statement.as_secs_f64() * 1000.0,
            database,
            previous: Previous::default(),
            reported_slow: HashSet::new(),
        };
        runtime.spawn(sampler.run());
    }
}

/// Counters at the previous sample, to report what changed.
#[derive(Default)]
struct Previous {
    requests: u64,
    server_errors: u64,
    pool: Option<PoolStats>,
    reachable: Option<bool>,
    crashes_and_recoveries: (u64, u64),
    takeovers: u64,
}

struct Sampler {
    monitor: Weak<Monitor>,
    server: Option<Weak<EmbeddedServer>>,
    database: Database,
    slow_after_ms: f64,
    previous: Previous,
    reported_slow: HashSet<String>,
}

impl Sampler {
    async fn run(mut self) {
        let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for round in 0_u64.. {
            ticks.tick().await;
            let Some(monitor) = self.monitor.upgrade() else {
                return;
            };
            let server = self.server.as_ref().and_then(Weak::upgrade);
            self.sample(&monitor, server.as_deref()).await;
            if round % SLOW_STATEMENT_EVERY == SLOW_STATEMENT_EVERY - 1 {
                self.report_slow_statements(&monitor).await;
            }
        }
    }

    async fn sample(&mut self, monitor: &Monitor, server: Option<&EmbeddedServer>) {
        let check = probe_database(&self.database, server).await;
        let pool = self.database.stats();
        let requests = monitor.requests.load(Ordering::Relaxed);
        let server_errors = monitor.server_errors.load(Ordering::Relaxed);
        let new_requests = requests.saturating_sub(self.previous.requests);
        let new_errors = server_errors.saturating_sub(self.previous.server_errors);
        let before = self.previous.pool.unwrap_or(pool);
        #[expect(clippy::cast_precision_loss)] // request counts over 2 s
        monitor.push(Sample {
            at: Utc::now(),
            latency_ms: check.latency_ms,
            in_use: pool.in_use,
            idle: pool.idle,
            waits: pool.waited.saturating_sub(before.waited),
            requests_per_second: new_requests as f64 / SAMPLE_INTERVAL.as_secs_f64(),
            error_rate: if new_requests == 0 {
                0.0
            } else {
                new_errors as f64 / new_requests as f64
            },
        });
        let exhausted = pool.exhausted.saturating_sub(before.exhausted);
        if exhausted > 0 {
            monitor.record(
                EventKind::PoolExhausted,
                format!(
                    "{exhausted} request(s) found all {} connections busy for the pool timeout",
                    pool.max
                ),
            );
        }
        let failed = pool
            .connection_errors
            .saturating_sub(before.connection_errors)
            .saturating_sub(exhausted);
        if failed > 0 {
            monitor.record(
                EventKind::ConnectionErrors,
                format!("{failed} attempt(s) to get a connection failed"),
            );
        }
        // Counted by the supervisor: a crash and restart between two samples is not missed.
        let crashes_and_recoveries = server.map_or((0, 0), EmbeddedServer::crashes_and_recoveries);
        let (crashed, recovered) = (
            crashes_and_recoveries
                .0
                .saturating_sub(self.previous.crashes_and_recoveries.0),
            crashes_and_recoveries
                .1
                .saturating_sub(self.previous.crashes_and_recoveries.1),
        );
        if crashed > 0 {
            monitor.record(
                EventKind::ServerCrashed,
                server
                    .and_then(EmbeddedServer::outage)
                    .unwrap_or_else(|| "the embedded server exited unexpectedly".to_owned()),
            );
        }
        if recovered > 0 {
            monitor.record(
                EventKind::ServerRecovered,
                "the embedded server runs again on the same data and port",
            );
        }
        let takeovers = server.map_or(0, EmbeddedServer::takeovers);
        if takeovers > self.previous.takeovers {
            monitor.record(
                EventKind::ServerTakenOver,
                "the pgharness that ran the embedded server stopped; this one took the server \
                 over and runs it now, on the same data and port",
            );
        }
        let reachable = check.latency_ms.is_some();
        match (self.previous.reachable, reachable) {
            (Some(true), false) => monitor.record(
                EventKind::DatabaseUnreachable,
                check.reason.unwrap_or_else(|| "no answer".to_owned()),
            ),
            (Some(false), true) => monitor.record(
                EventKind::DatabaseRecovered,
                "the database answers again".to_owned(),
            ),
            _ => {}
        }
        self.previous = Previous {
            requests,
            server_errors,
            pool: Some(pool),
            reachable: Some(reachable),
            crashes_and_recoveries,
            takeovers,
        };
    }

    /// Application statements whose slowest run passed the threshold, each reported once.
    async fn report_slow_statements(&mut self, monitor: &Monitor) {
        let Ok(mut connection) = self.database.acquire().await else {
            return;
        };
        let Ok(slow) = slowest(&mut connection, false, self.slow_after_ms, 20).await else {
            return;
        };
        for statement in slow {
            if self.reported_slow.insert(statement.query.clone()) {
                monitor.record(
                    EventKind::SlowStatement,
                    format!(
                        "{:.0} ms (slowest run): {}",
                        statement.max_ms, statement.query
                    ),
                );
            }
        }
    }
}
