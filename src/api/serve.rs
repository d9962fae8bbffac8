//! The API on a socket. Written out (rather than `axum::serve`) for what a server on a developer
//! machine needs and `axum::serve` does not set: a deadline for request headers (which also
//! closes idle keep-alive connections), a cap on open connections below the file-descriptor
//! limit, with excess connections answered 503 instead of failing `accept`, and a raised soft
//! file-descriptor limit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;
use tracing::warn;

use super::ApiContext;

/// A client must send a request's headers within this, and a kept-alive connection's next
/// request within this of the previous answer; otherwise the connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// File descriptors kept free of client connections: the pool, log files, the listener.
const RESERVED_DESCRIPTORS: u64 = 128;
/// A connection over the cap gets this answer, then is closed.
const OVER_CAPACITY: &str =
    r#"{"detail":"too many open connections: close idle ones and try again"}"#;
/// How long an over-capacity client gets to take its answer.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the API cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "cannot listen on {address}: the port is already in use. Stop the program using it, or \
         choose another with APP_PORT / --port (0 picks a free port)"
    )]
    /// The address is taken by another program.
    InUse {
        /// The address asked for.
        address: String,
    },
    /// Any other failure to bind.
    #[error("cannot listen on {address}: {source}. Check APP_HOST / --host")]
    Other {
        /// The address asked for.
        address: String,
        /// What the system said.
        source: std::io::Error,
    },
}

/// The API bound to its socket.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    connection_limit: usize,
}

impl Application {
    /// Binds `host:port` (port 0: any free port; see [`Application::local_addr`]).
    ///
    /// # Errors
    ///
    /// [`BindError`] naming the address, and the fix for a port in use.
    pub async fn bind(context: ApiContext, host: &str, port: u16) -> Result<Self, BindError> {
        let address = format!("{host}:{port}");
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AddrInUse => BindError::InUse {
                    address: address.clone(),
                },
                _ => BindError::Other {
                    address: address.clone(),
                    source,
                },
            })?;
        Ok(Self {
            listener,
            router: super::router(context),
            connection_limit: connection_limit(),
        })
    }

    /// The address actually bound.
    ///
    /// # Errors
    ///
    /// The socket's error, if it has none.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting and finishes in-flight requests.
    ///
    /// # Errors
    ///
    /// None today: failed accepts (e.g. out of file descriptors) are logged and retried; the
    /// signature leaves room for listener errors that end serving.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(HEADER_READ_TIMEOUT);
        let slots = Arc::new(Semaphore::new(self.connection_limit));
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(error) => {
                        // Out of descriptors, or a connection reset before it was accepted:
                        // sockets close meanwhile, so wait a moment rather than spin.
                        warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                tokio::spawn(refuse(stream));
                continue;
            };
            let service = self
                .router
                .clone()
                .map_request(|request: hyper::Request<Incoming>| request.map(Body::new));
            let connection = builder
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                // Errors here are the client's (reset, timed out headers, bad HTTP).
                let _ = connection.await;
                drop(slot);
            });
        }
        drop(self.listener);
        graceful.shutdown().await;
        Ok(())
    }
}

/// Answers 503 and closes: the client learns why, and the descriptor is free again at once.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{OVER_CAPACITY}",
            super::error::RETRY_AFTER_SECONDS,
            OVER_CAPACITY.len()
        );
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// How many client connections to serve at once: the soft file-descriptor limit (raised to the
/// hard limit first, as servers do) less a reserve.
fn connection_limit() -> usize {
    let descriptors = crate::platform::limits::raise_descriptor_limit();
    let limit = descriptors
        .saturating_sub(RESERVED_DESCRIPTORS)
        .max(RESERVED_DESCRIPTORS / 2);
    usize::try_from(limit).unwrap_or(usize::MAX)
}
