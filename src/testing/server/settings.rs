//! Every variable the test harness reads, read once per process.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::config::{ConfigError, parse_number};

/// `PGHARNESS_TEST_KEEP`: which test databases outlive their test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepPolicy {
    /// Those of tests that panicked (the default): something to inspect.
    Failed,
    /// Keep every test's database.
    Always,
    /// Keep none.
    Never,
}

/// The test harness's settings, from the environment.
#[derive(Debug, Clone)]
pub struct TestSettings {
    /// `CARGO_MANIFEST_DIR`: the crate whose tests run (cargo sets it for test processes).
    pub crate_dir: Option<PathBuf>,
    /// `CARGO_PKG_NAME`: whose templates are whose.
    pub crate_name: String,
    /// `PGHARNESS_TEST_MIGRATIONS_DIR`: instead of `<crate>/migrations` (relative: to the crate).
    pub migrations_dir: Option<PathBuf>,
    /// `PGHARNESS_TEST_FIXTURES_DIR`: instead of `<crate>/fixtures` (relative: to the crate).
    pub fixtures_dir: Option<PathBuf>,
    /// `PGHARNESS_TEST_KEEP`: `failed` (default), `always` or `never`.
    pub keep: KeepPolicy,
    /// `PGHARNESS_TEST_KEEP_MAX` (default 20) kept databases at most, each for
    /// `PGHARNESS_TEST_KEEP_HOURS` (default 24).
    pub keep_max: usize,
    /// How long kept databases are kept (`PGHARNESS_TEST_KEEP_HOURS`).
    pub keep_for: Duration,
    /// `PGHARNESS_TEST_TEMPLATES` (default 3): templates kept per crate, the most recently used.
    pub templates_per_crate: usize,
    /// `PGHARNESS_TEST_PREFETCH` (default 2; 0 when nextest runs each test in its own process,
    /// where a prefetched database would never be used).
    pub prefetch: usize,
    /// `NEXTEST_EXECUTION_MODE=process-per-test`: the process ends with its test, so nothing
    /// is prefetched and its database is dropped on the admin connection (no second one).
    pub process_per_test: bool,
    /// `PGHARNESS_TEST_DIR`: the run directory (default `pgharness-test-<uid>` in
    /// `/dev/shm` when it has room, else in the temp directory).
    pub run_dir: PathBuf,
    /// `PGHARNESS_TEST_IDLE_SECONDS` (default 10): the shared server stops this long after its
    /// last test process.
    pub idle_seconds: u64,
    /// `TEST_DATABASE_URL`: a server to use instead of the shared embedded one.
    pub server_url: Option<String>,
    /// `PGHARNESS_TEST_POOL_URL`: a `pgharness testdb serve` (`http://host:port`, set by
    /// `pgharness testdb run`) whose pool a process running one test takes its database from.
    pub pool_url: Option<String>,
}

impl TestSettings {
    /// The settings of this process, or the first variable that is refused.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the variable, its value and what is allowed.
    pub fn load() -> Result<&'static Self, ConfigError> {
        static SETTINGS: OnceLock<Result<TestSettings, ConfigError>> = OnceLock::new();
        SETTINGS
            .get_or_init(|| Self::from_lookup(|name| std::env::var(name).ok()))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The settings of this process. Every way to a test database starts with
    /// [`attach`](super::attach), which stops at a refused value ([`TestSettings::load`]), so
    /// the defaults this falls back to are never used for a value that was refused.
    #[must_use]
    pub fn get() -> &'static Self {
        static DEFAULTS: OnceLock<TestSettings> = OnceLock::new();
        Self::load().unwrap_or_else(|_| {
            DEFAULTS.get_or_init(|| {
                Self::from_lookup(|name| {
                    // Only where the tests run, none of the tunable values.
                    matches!(name, "CARGO_MANIFEST_DIR" | "CARGO_PKG_NAME")
                        .then(|| std::env::var(name).ok())
                        .flatten()
                })
                .unwrap_or_else(|_| unreachable!("the defaults are valid"))
            })
        })
    }

    /// From any variable lookup, parsed as [`Config`](crate::config::Config) parses its own.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the variable, its value and what is allowed.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let number = |name: &'static str, default: u64| parse_number(&var, name, default, 0);
        let count = |name: &'static str, default: usize| parse_number(&var, name, default, 0);
        let crate_dir = var("CARGO_MANIFEST_DIR").map(PathBuf::from);
        let in_crate = |name: &str| {
            var(name).map(|dir| match &crate_dir {
                Some(crate_dir) => crate_dir.join(dir),
                None => PathBuf::from(dir),
            })
        };
        let process_per_test = var("NEXTEST_EXECUTION_MODE").as_deref() == Some("process-per-test");
        let keep = match var("PGHARNESS_TEST_KEEP").as_deref().map(str::trim) {
            None | Some("failed") => KeepPolicy::Failed,
            Some("always") => KeepPolicy::Always,
            Some("never") => KeepPolicy::Never,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    variable: "PGHARNESS_TEST_KEEP",
                    value: other.to_owned(),
                    reason: "not a keep policy".to_owned(),
                    allowed: "failed (the default), always or never".to_owned(),
                });
            }
        };
        Ok(Self {
            migrations_dir: in_crate("PGHARNESS_TEST_MIGRATIONS_DIR"),
            fixtures_dir: in_crate("PGHARNESS_TEST_FIXTURES_DIR"),
            crate_dir,
            crate_name: var("CARGO_PKG_NAME").unwrap_or_else(|| "unknown".to_owned()),
            keep,
            keep_max: count("PGHARNESS_TEST_KEEP_MAX", 20)?,
            keep_for: Duration::from_secs(
                number("PGHARNESS_TEST_KEEP_HOURS", 24)?.saturating_mul(3600),
            ),
            templates_per_crate: parse_number(&var, "PGHARNESS_TEST_TEMPLATES", 3, 1)?,
            prefetch: count(
                "PGHARNESS_TEST_PREFETCH",
                if process_per_test { 0 } else { 2 },
            )?,
            process_per_test,
            run_dir: var("PGHARNESS_TEST_DIR").map_or_else(
                || {
                    default_run_parent().join(format!(
                        "pgharness-test-{}",
                        crate::platform::privilege::user_tag()
                    ))
                },
                PathBuf::from,
            ),
            idle_seconds: number("PGHARNESS_TEST_IDLE_SECONDS", 10)?,
            server_url: var("TEST_DATABASE_URL"),
            pool_url: pool_url(var("PGHARNESS_TEST_POOL_URL"))?,
        })
    }
}

/// The pool's root URL, without a trailing `/`: plain HTTP, as `testdb serve` speaks it.
fn pool_url(value: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let root = value.trim().trim_end_matches('/');
    match root.strip_prefix("http://") {
        Some(address) if !address.is_empty() && !address.contains('/') => Ok(Some(root.to_owned())),
        _ => Err(ConfigError::Invalid {
            variable: "PGHARNESS_TEST_POOL_URL",
            value,
            reason: "not the root URL of a `pgharness testdb serve`".to_owned(),
            allowed: "http://host:port, as `pgharness testdb serve` prints it (and `pgharness \
                      testdb run` sets it)"
                .to_owned(),
        }),
    }
}

/// Memory (Linux's `/dev/shm`) when it is writable and has room, else the temp directory. Every
/// clone creates a file per relation, and on an aged disk each file creation cost ~2 ms (a clone
/// 27–350 ms) against 0.1 ms in memory (12 ms). Containers often give `/dev/shm` 64 MB: too little
/// for a server and its templates, so they get the temp directory.
fn default_run_parent() -> PathBuf {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{Access, access, statvfs};
        const ROOM_NEEDED: u64 = 2 << 30;
        let memory = std::path::Path::new("/dev/shm");
        let has_room = statvfs(memory)
            .is_ok_and(|stats| stats.f_bavail.saturating_mul(stats.f_frsize) >= ROOM_NEEDED);
        if has_room && access(memory, Access::WRITE_OK | Access::EXEC_OK).is_ok() {
            return memory.to_owned();
        }
    }
    std::env::temp_dir()
}

#[cfg(test)]
mod tests {
    use super::{KeepPolicy, TestSettings};

    fn settings(variables: &[(&str, &str)]) -> Result<TestSettings, crate::config::ConfigError> {
        TestSettings::from_lookup(|name| {
            variables
                .iter()
                .find(|(variable, _)| *variable == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn a_misspelt_or_negative_value_is_refused_naming_the_variable_and_what_is_allowed() {
        let misspelt = settings(&[("PGHARNESS_TEST_KEEP", "alwyas")])
            .unwrap_err()
            .to_string();
        assert!(misspelt.contains("PGHARNESS_TEST_KEEP"), "{misspelt}");
        assert!(misspelt.contains("alwyas"), "{misspelt}");
        assert!(misspelt.contains("always"), "{misspelt}");
        let negative = settings(&[("PGHARNESS_TEST_PREFETCH", "-1")])
            .unwrap_err()
            .to_string();
        assert!(negative.contains("PGHARNESS_TEST_PREFETCH"), "{negative}");
        let pool = settings(&[("PGHARNESS_TEST_POOL_URL", "127.0.0.1:5000/api")])
            .unwrap_err()
            .to_string();
        assert!(pool.contains("PGHARNESS_TEST_POOL_URL"), "{pool}");
        assert!(pool.contains("http://host:port"), "{pool}");
        let no_templates = settings(&[("PGHARNESS_TEST_TEMPLATES", "0")])
            .unwrap_err()
            .to_string();
        assert!(no_templates.contains("at least 1"), "{no_templates}");
    }

    #[test]
    fn good_values_are_taken_and_unset_ones_default() {
        let taken = settings(&[
            ("PGHARNESS_TEST_KEEP", "never"),
            ("PGHARNESS_TEST_PREFETCH", "5"),
            ("PGHARNESS_TEST_POOL_URL", "http://127.0.0.1:5000/"),
        ])
        .unwrap();
        assert_eq!(taken.keep, KeepPolicy::Never);
        assert_eq!(taken.prefetch, 5);
        assert_eq!(taken.pool_url.as_deref(), Some("http://127.0.0.1:5000"));
        let defaults = settings(&[]).unwrap();
        assert_eq!(defaults.keep, KeepPolicy::Failed);
        assert_eq!(defaults.templates_per_crate, 3);
    }
}
