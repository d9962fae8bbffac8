//! `GET /metrics`: Prometheus text. Requests by route and status with a latency histogram,
//! and the pool's gauges and counters read at scrape time.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::ApiContext;
use super::error::DiskFull;
use crate::database::Database;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

/// The methods labelled by name; any other is `_OTHER` (OpenTelemetry's convention): a label
/// per made-up method would let any client add series, and memory, without bound.
static KNOWN_METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
    Method::CONNECT,
];

fn method_label(method: &Method) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|known| *known == method)
        .map_or("_OTHER", Method::as_str)
}

type LatencyFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// The registry of one API instance (no global state: tests run many side by side).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 4 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

impl Metrics {
    #[must_use]
    pub fn new(database: Database) -> Self {
        let mut registry = Registry::with_prefix("pgharness");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = LatencyFamily::new_with_constructor(latency_histogram);
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method, route and status",
            latency.clone(),
        );
        registry.register_collector(Box::new(PoolCollector(database)));
        Self {
            registry,
            requests,
            latency,
        }
    }

    fn observe(&self, labels: &RequestLabels, seconds: f64) {
        self.requests.get_or_create(labels).inc();
        self.latency.get_or_create(labels).observe(seconds);
    }

    fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "cannot encode metrics");
        }
        text
    }
}

/// Middleware: counts and times every request under its route pattern (not its raw path,
/// which would make one series per user id).
pub async fn track(State(context): State<ApiContext>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    // The request's span (`super::router`) is made before routing.
    tracing::Span::current().record("route", route.as_str());
    let write = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let response = next.run(request).await;
    if response.extensions().get::<DiskFull>().is_some() {
        context.monitor.disk_full();
    } else if write && response.status().is_success() {
        context.monitor.write_succeeded();
    }
    context
        .monitor
        .count_request(response.status().is_server_error());
    context.metrics.observe(
        &RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        },
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "monitoring",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(context): State<ApiContext>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        context.metrics.render(),
    )
}

#[derive(Debug)]
struct PoolCollector(Database);

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        for (name, help, value) in [
            ("pool_size", "Open connections", stats.size),
            ("pool_idle", "Idle connections", stats.idle),
            ("pool_in_use", "Connections in use", stats.in_use),
            ("pool_max", "Pool size + max overflow", stats.max),
        ] {
            let gauge = ConstGauge::new(i64::from(value));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let waits = ConstCounter::new(stats.waited);
        waits.encode(encoder.encode_descriptor(
            "pool_waits",
            "Acquisitions that waited for a connection",
            None,
            waits.metric_type(),
        )?)?;
        #[expect(clippy::cast_precision_loss)] // milliseconds fit f64 exactly for ages
        let wait_seconds = ConstCounter::new(stats.wait_ms as f64 / 1000.0);
        wait_seconds.encode(encoder.encode_descriptor(
            "pool_wait_seconds",
            "Total time spent waiting for a connection",
            None,
            wait_seconds.metric_type(),
        )?)?;
        let errors = ConstCounter::new(stats.connection_errors);
        errors.encode(encoder.encode_descriptor(
            "pool_connection_errors",
            "Failed attempts to get a connection",
            None,
            errors.metric_type(),
        )?)?;
        Ok(())
    }
}
