//! The network side of downloads: a quick reachability probe, a small blocking HTTP client
//! (run off the async threads), retries.

use std::time::Duration;

use tracing::warn;

use super::SourceError;
use crate::progress::{Progress, ProgressSink};

/// Long enough for a slow registry, short enough that an unreachable one does not stall `run`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Resolves and connects to the host of `url`, so an offline machine fails in seconds.
pub(super) async fn reachable(url: &str) -> Result<(), SourceError> {
    let parsed = url::Url::parse(url).map_err(|source| SourceError::BadUrl {
        url: url.to_owned(),
        source,
    })?;
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    match tokio::time::timeout(
        PROBE_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(SourceError::Unreachable { host, source }),
        Err(_) => Err(SourceError::NoAnswer {
            host,
            seconds: PROBE_TIMEOUT.as_secs(),
        }),
    }
}

/// Runs blocking work (HTTP, extraction) off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
) -> Result<T, SourceError> {
    tokio::task::spawn_blocking(work).await?
}

/// Three attempts, a second apart: a registry that is reachable but answers slowly or drops a
/// connection under load should not fail a first run.
///
/// A plain closure returning a future, not an async closure: the future of an async closure
/// borrows the closure, and rustc cannot prove such a future `Send` for every borrow
/// (rust-lang/rust#110338), which made every caller's future non-`Send`.
pub(super) async fn with_retries<T, Attempt>(
    mut attempt: impl FnMut() -> Attempt,
) -> Result<T, SourceError>
where
    Attempt: Future<Output = Result<T, SourceError>>,
{
    let mut failures = Vec::new();
    for _ in 0..3 {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                warn!(%error, "registry request failed; retrying");
                failures.push(error);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    Err(SourceError::Retried(failures))
}

/// A small blocking HTTP client (ureq: a fraction of an async client's dependencies, which
/// matters to crates that take only `pgharness::testing`), verifying certificates against the
/// platform's trust store.
pub(super) fn agent() -> ureq::Agent {
    // Several TLS stacks may be linked in; ring is the one this crate asks for.
    let _ = rustls::crypto::ring::default_provider().install_default();
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        )
        .build()
        .new_agent()
}

/// `action` failed with `source`.
pub(super) fn http(action: &'static str) -> impl FnOnce(ureq::Error) -> SourceError {
    move |source| SourceError::Http {
        action,
        source: Box::new(source),
    }
}

/// Downloads `url` whole, reporting progress.
pub(super) fn fetch_with_progress(
    url: &str,
    progress: &ProgressSink,
) -> Result<Vec<u8>, SourceError> {
    let mut response = agent().get(url).call().map_err(http("download"))?;
    let total = response.body().content_length();
    let mut reader = response.body_mut().with_config().reader();
    let mut bytes = Vec::with_capacity(usize::try_from(total.unwrap_or(0)).unwrap_or(0));
    let mut chunk = vec![0; 256 * 1024];
    loop {
        let read =
            std::io::Read::read(&mut reader, &mut chunk).map_err(|source| SourceError::Io {
                action: "download interrupted:",
                path: url.into(),
                source,
            })?;
        if read == 0 {
            return Ok(bytes);
        }
        bytes.extend_from_slice(&chunk[..read]);
        progress(Progress::Download {
            received: bytes.len() as u64,
            total,
        });
    }
}
