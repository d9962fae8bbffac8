//! The `OpenAPI` document: generated from the handlers, then completed with the answers every
//! route can give whatever its handler (refused host, cross-site, body errors), so that the
//! document lists every status a client can meet.

use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Schema};
use utoipa::{Modify, OpenApi as _};

use super::error::{ErrorBody, ErrorDetail, FieldError};
use super::{admin, dev_data, health, metrics, monitor, overview, snapshots, statements, users};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "pgharness", description = "The database stack of a web service: health, users, connection and database control."),
    paths(
        health::health, health::live, health::ready, monitor::history, monitor::events,
        users::list_users, users::get_user, users::create_user, users::create_batch,
        users::update_user, users::delete_user,
        admin::connection, admin::database_state, admin::stop_database, admin::start_database,
        admin::restart_database, admin::reveal_connection_string, admin::access,
        statements::slow_queries, statements::reset_statistics, statements::explain, overview::overview,
        dev_data::reset_database, dev_data::list_fixtures, dev_data::load_fixture,
        snapshots::list_snapshots, snapshots::save_snapshot, snapshots::restore_snapshot,
        snapshots::delete_snapshot,
        metrics::metrics,
    ),
    components(schemas(FieldError, ErrorBody, ErrorDetail)),
    modifiers(&CommonResponses),
    tags(
        (name = "health", description = "Liveness, readiness and the guide's health report"),
        (name = "users", description = "The users table"),
        (name = "database", description = "Connection details, statements, tables and sessions, embedded-server control, dev data and snapshots"),
        (name = "monitoring", description = "Prometheus metrics"),
    )
)]
struct ApiDoc;

/// The `OpenAPI` 3 document of every route.
#[must_use]
pub fn openapi() -> OpenApi {
    ApiDoc::openapi()
}

/// Adds to each operation the answers given before its handler runs.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        // utoipa takes only literals for patterns; these are the ones the handlers check.
        for schema in ["NewUser", "UserPatch"] {
            set_pattern(openapi, schema, "username", &users::USERNAME_PATTERN);
            set_pattern(openapi, schema, "email", &users::EMAIL_PATTERN);
        }
        limit_batch(openapi);
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ]
            .into_iter()
            .flatten()
            {
                add_common(operation, false);
            }
            for operation in [
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                add_common(operation, true);
            }
        }
    }
}

fn add_common(operation: &mut Operation, changes_state: bool) {
    let mut statuses = vec![(
        "421",
        "The Host header names another server (DNS rebinding protection)",
    )];
    if changes_state {
        statuses.push((
            "403",
            "A cross-site request (Origin or Sec-Fetch-Site of another site)",
        ));
        statuses.push((
            "415",
            "A body that is not `application/json` (what a cross-site form could send)",
        ));
    }
    let uses_database = operation
        .tags
        .as_ref()
        .is_some_and(|tags| tags.iter().any(|tag| tag == "users"));
    if uses_database {
        statuses.push((
            "503",
            "The database is down, restarting, or every connection is busy (with Retry-After)",
        ));
    }
    if operation.request_body.is_some() {
        statuses.extend([
            ("400", "Malformed JSON"),
            ("408", "The body did not arrive within 10 s"),
            ("413", "The body is larger than 1 MiB"),
            ("422", "Invalid fields, each named"),
        ]);
    }
    let responses = &mut operation.responses.responses;
    for (status, description) in statuses {
        responses.entry(status.to_owned()).or_insert_with(|| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
                .into()
        });
    }
}

fn set_pattern(openapi: &mut OpenApi, schema: &str, property: &str, pattern: &str) {
    let Some(components) = openapi.components.as_mut() else {
        return;
    };
    if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(schema)
        && let Some(RefOr::T(Schema::Object(field))) = object.properties.get_mut(property)
    {
        field.pattern = Some(pattern.to_owned());
    }
}

/// `POST /users/batch` takes 1 to [`users::BATCH_LIMIT`] users.
fn limit_batch(openapi: &mut OpenApi) {
    let body = openapi
        .paths
        .paths
        .get_mut("/users/batch")
        .and_then(|item| item.post.as_mut())
        .and_then(|operation| operation.request_body.as_mut())
        .and_then(|body| body.content.get_mut("application/json"));
    if let Some(Some(RefOr::T(Schema::Array(array)))) = body.map(|content| content.schema.as_mut())
    {
        array.min_items = Some(1);
        array.max_items = Some(users::BATCH_LIMIT);
    }
}
