//! The REST API described as OpenAPI 3.1, generated from the handlers' own
//! annotations (`#[utoipa::path]` beside each handler, `IntoParams` on each
//! query) and served at `/v1/openapi.json`.
//!
//! Every route of the API is registered through [`utoipa_axum::routes!`] in
//! [`super::router`], which adds it to the router and to the document in one
//! step: a route cannot be served without being described. The streaming
//! protocols the WebSocket and SSE routes speak are described in
//! `proto/asyncapi.yaml` (and `proto/tickwire.proto`).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The body of every error answer: a stable code and a message for people.
#[derive(ToSchema)]
#[allow(dead_code)] // documents `ApiError`'s body; never built
pub struct ErrorBody {
    /// Stable, machine-readable (`unknown_symbol`, `bad_time`, `too_many_connections`, …).
    code: String,
    /// What went wrong, for a person.
    message: String,
}

/// The document's fixed parts; the paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tickwire",
        description = "Live market data: instruments, snapshots, stored history, candles, feed health, \
                       and the streaming endpoints (WebSocket, SSE, long-poll, replay). The wire protocol \
                       of the streams is in docs/PROTOCOL.md, proto/tickwire.proto and proto/asyncapi.yaml.",
        license(name = "MIT")
    ),
    components(schemas(ErrorBody)),
    modifiers(&Security),
    security((), ("bearer" = []), ("token" = [])),
    tags(
        (name = "stream", description = "Live and stored streams: WebSocket, SSE, long-poll, replay"),
        (name = "market", description = "Instruments and current state"),
        (name = "history", description = "Stored trades, quotes and candles"),
        (name = "operations", description = "Health, readiness, metrics, feed state")
    )
)]
pub struct ApiDoc;

/// Tokens, when the server requires them (`--auth-token`): a bearer header,
/// or `?token=` where a header cannot be set (browsers' WebSocket and
/// EventSource).
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme("token", SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("token"))));
    }
}

/// The finished document, serialised once.
static DOCUMENT: OnceLock<String> = OnceLock::new();

/// Keeps the finished document for [`openapi_json`] (the same for every
/// server of the process: it is built from the code).
pub(super) fn publish(document: &utoipa::openapi::OpenApi) {
    DOCUMENT.get_or_init(|| document.to_pretty_json().unwrap_or_default());
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json"))
)]
pub(super) async fn openapi_json() -> Response {
    let body = DOCUMENT.get().cloned().unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
