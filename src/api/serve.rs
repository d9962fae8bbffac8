//! The API on a socket. Written out (rather than `axum::serve`) for what a server on a developer
//! machine needs and `axum::serve` does not set: a deadline for request headers counted from the
//! connection's opening (hyper's own starts at the first byte, so a connection that never sends
//! one would be held forever) and after each answer (which closes idle keep-alive connections), a cap on open connections below the file-descriptor
//! limit, with excess connections answered 503 instead of failing `accept`, and a raised soft
//! file-descriptor limit.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tower::ServiceExt as _;
use tracing::warn;

use super::ApiContext;

/// A client must send its first request's headers within this of opening the connection, and
/// a kept-alive connection's next request within this of the previous answer; otherwise the
/// connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// What a connection gets when its first request's headers are late, before it is closed.
const HEADERS_TOO_LATE: &str = r#"{"detail":"no complete request headers within 10 seconds of connecting: send the request at once after opening the connection"}"#;
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
            let stream = FirstHeadDeadline::new(stream);
            let head_received = Arc::clone(&stream.head_received);
            let service =
                self.router
                    .clone()
                    .map_request(move |request: hyper::Request<Incoming>| {
                        head_received.store(true, Ordering::Relaxed);
                        request.map(Body::new)
                    });
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

/// A client's socket that fails its reads, after answering 408, once [`HEADER_READ_TIMEOUT`]
/// has passed since it was opened without a complete request head: hyper's own deadline starts
/// at the first byte, and its HTTP version detection has none, so a connection that stays silent
/// would otherwise hold a descriptor and a connection slot for ever.
struct FirstHeadDeadline {
    stream: TcpStream,
    /// Dropped once the first request head has arrived: hyper's deadline takes over.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Set by the service when hyper hands it a request.
    head_received: Arc<AtomicBool>,
}

impl FirstHeadDeadline {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            deadline: Some(Box::pin(tokio::time::sleep(HEADER_READ_TIMEOUT))),
            head_received: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the deadline has passed without a request head; registers for a wake-up at the
    /// deadline otherwise.
    fn is_late(&mut self, context: &mut Context<'_>) -> bool {
        let Some(deadline) = &mut self.deadline else {
            return false;
        };
        if self.head_received.load(Ordering::Relaxed) {
            self.deadline = None;
            return false;
        }
        deadline.as_mut().poll(context).is_ready()
    }
}

impl AsyncRead for FirstHeadDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.stream).poll_read(context, buffer);
        if read.is_pending() && this.is_late(context) {
            let response = closing_answer("408 Request Timeout", "", HEADERS_TOO_LATE);
            // Best effort, without waiting: a client that does not read loses only the answer.
            let _ = this.stream.try_write(response.as_bytes());
            return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
        }
        read
    }
}

impl AsyncWrite for FirstHeadDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(context, buffer)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(context)
    }
}

/// Answers 503 and closes: the client learns why, and the descriptor is free again at once.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        let response = closing_answer(
            "503 Service Unavailable",
            &format!("retry-after: {}\r\n", super::error::RETRY_AFTER_SECONDS),
            OVER_CAPACITY,
        );
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// An HTTP/1.1 answer with a JSON `body` and `headers` (each ending in CRLF), for a socket
/// answered outside hyper, which is then closed.
fn closing_answer(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{headers}connection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
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
