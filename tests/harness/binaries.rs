use pgharness::binaries::{self, BinariesError, BinarySources, quiet};

use crate::helpers::binaries as cached_binaries;

#[tokio::test]
async fn a_bin_dir_that_is_not_postgresql_16_is_refused_not_replaced() {
    let directory = tempfile::tempdir().unwrap();
    let bin = directory.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let sources = BinarySources {
        bin_dir: Some(bin.clone()),
        cache_dir: directory.path().join("cache"),
        offline: false,
    };
    let error = binaries::provision(&sources, &quiet()).await.unwrap_err();
    assert!(matches!(error, BinariesError::BadBinDir { .. }));
    let text = error.to_string();
    assert!(
        text.contains("PGHARNESS_PG_BIN_DIR") && text.contains("postgres is missing"),
        "{text}"
    );
}

#[tokio::test]
async fn the_bin_dir_variable_takes_any_postgresql_16_installation() {
    let installed = cached_binaries().await;
    let sources = BinarySources {
        bin_dir: Some(installed.bin_dir()),
        cache_dir: tempfile::tempdir().unwrap().path().join("unused"),
        offline: true,
    };
    let found = binaries::provision(&sources, &quiet()).await.unwrap();
    assert_eq!(found, installed);
    assert_eq!(found.version.major, 16);
}

#[tokio::test]
async fn with_no_source_left_the_error_lists_each_and_the_fix() {
    let directory = tempfile::tempdir().unwrap();
    let sources = BinarySources {
        bin_dir: None,
        cache_dir: directory.path().join("empty-cache"),
        offline: true,
    };
    let text = binaries::provision(&sources, &quiet())
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("empty-cache"), "{text}");
    assert!(text.contains("PGHARNESS_PG_BIN_DIR"), "{text}");
    assert!(text.contains("DATABASE_URL"), "{text}");
}

/// Two first runs at once, into one empty cache: both get working binaries, one copy is kept,
/// no half-extracted directory is left.
#[tokio::test]
async fn concurrent_first_downloads_share_one_intact_cache() {
    let cache = tempfile::tempdir().unwrap();
    let sources = BinarySources {
        bin_dir: None,
        cache_dir: cache.path().to_owned(),
        offline: false,
    };
    let progress = quiet();
    let (first, second) = tokio::join!(
        binaries::provision(&sources, &progress),
        binaries::provision(&sources, &progress)
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first, second);
    assert_eq!(first.version.major, 16);
    let entries: Vec<String> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, vec![first.version.to_string()]);
    // The library symlinks listed by the package were recreated: the server binary runs.
    let version = std::process::Command::new(first.bin_dir().join("postgres"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains("PostgreSQL) 16."));
}
