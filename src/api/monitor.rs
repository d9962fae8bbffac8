//! `GET /api/health/history` and `GET /api/health/events`: the Health screen's samples and
//! timeline, as [`crate::monitor::Monitor`] keeps them.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::ApiContext;
use crate::monitor::{Event, SAMPLE_INTERVAL, Sample};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/health/history", get(history))
        .route("/api/health/events", get(events))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct History {
    interval_seconds: u64,
    /// Oldest first.
    samples: Vec<Sample>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Events {
    /// Newest first.
    events: Vec<Event>,
}

/// Samples of the last 15 minutes, one every 2 seconds, oldest first.
#[utoipa::path(get, path = "/api/health/history", tag = "health", responses(
    (status = 200, description = "Samples, oldest first", body = History),
))]
pub async fn history(State(context): State<ApiContext>) -> Json<History> {
    Json(History {
        interval_seconds: SAMPLE_INTERVAL.as_secs(),
        samples: context.monitor.samples(),
    })
}

/// The timeline, newest first.
#[utoipa::path(get, path = "/api/health/events", tag = "health", responses(
    (status = 200, description = "Events, newest first", body = Events),
))]
pub async fn events(State(context): State<ApiContext>) -> Json<Events> {
    Json(Events {
        events: context.monitor.events(),
    })
}
