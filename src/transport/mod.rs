//! The HTTP edge: WebSocket streaming, REST, health, metrics and the dashboard.
//!
//! [`router`] builds the whole axum application from an [`AppState`], so tests can
//! serve it on port 0 exactly as `tickwire serve` does.

pub mod access;
mod fallback;
pub mod history;
mod openapi;
mod page;
pub mod quota;
mod replay;
mod rest;
pub mod serve;
pub mod tls;
mod upgrade;
mod writer;
pub mod ws;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::codec::Format;
use crate::fanout::{Fanout, Item};
use crate::feed::FeedHealth;
use crate::latency::{LATENCIES, Transport};
use crate::model::{InstrumentId, Instruments, Lookup, now_nanos};
pub use history::HistoryAccess;
use openapi::ErrorBody;
pub use writer::{frame_header, frame_len, payload_len};
pub use ws::SessionLimits;

/// Everything request handlers share.
pub struct AppState {
    pub fanout: Arc<Fanout>,
    pub feeds: Vec<Arc<FeedHealth>>,
    pub limits: SessionLimits,
    /// Streaming connections (WebSocket, SSE, held polls, replay) beyond this are refused with 503.
    pub max_connections: usize,
    /// Cancelled when the server shuts down: sessions close with 1001.
    pub shutdown: CancellationToken,
    /// Tracks session tasks, which axum's graceful shutdown does not wait for.
    pub sessions: TaskTracker,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Built dashboard to serve at `/`; the built-in page when absent.
    pub static_dir: Option<PathBuf>,
    pub started: Instant,
    /// The history store, when this server keeps one.
    pub history: Option<HistoryAccess>,
    /// Tokens and origins the API accepts.
    pub access: access::AccessPolicy,
    /// Per-address, per-subject and per-key quotas.
    pub quotas: Arc<quota::Quotas>,
    connections: AtomicUsize,
    /// The same, per transport (index: [`Transport`]).
    by_transport: [AtomicUsize; 4],
    /// What `/readyz` last saw of the history writer.
    store_watch: parking_lot::Mutex<rest::StoreWatch>,
    /// Writer shards for plain-TCP WebSocket sessions, started with the first.
    writers: std::sync::OnceLock<writer::WriterShards>,
    /// How many writer shards to start (0: one per core).
    writer_shards: usize,
    /// `--conformance-echo`: serve the echo route `/v1/echo` (`make conformance` only).
    conformance_echo: bool,
    /// Venue instruments' reference data (`/v1/instruments`).
    pub reference: Arc<crate::feed::reference::ReferenceBoard>,
    /// This node's cluster role (`all` for a single process).
    pub role: &'static str,
}

impl AppState {
    #[allow(clippy::too_many_arguments)] // one constructor, called from the composition root
    pub fn new(
        fanout: Arc<Fanout>,
        feeds: Vec<Arc<FeedHealth>>,
        limits: SessionLimits,
        max_connections: usize,
        shutdown: CancellationToken,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
        static_dir: Option<PathBuf>,
    ) -> Self {
        Self {
            fanout,
            feeds,
            limits,
            max_connections,
            shutdown,
            sessions: TaskTracker::new(),
            metrics,
            static_dir,
            started: Instant::now(),
            history: None,
            access: access::AccessPolicy::default(),
            quotas: Arc::default(),
            connections: AtomicUsize::new(0),
            by_transport: Default::default(),
            store_watch: parking_lot::Mutex::new(rest::StoreWatch::default()),
            writers: std::sync::OnceLock::new(),
            writer_shards: 0,
            conformance_echo: false,
            reference: Arc::default(),
            role: "all",
        }
    }

    /// Names this node's cluster role (`/v1/feeds`, `/v1/stats`).
    pub fn with_reference(mut self, board: Arc<crate::feed::reference::ReferenceBoard>) -> Self {
        self.reference = board;
        self
    }

    pub fn with_role(mut self, role: &'static str) -> Self {
        self.role = role;
        self
    }

    /// Sets who may use the API.
    pub fn with_access(mut self, access: access::AccessPolicy) -> Self {
        self.access = access;
        self
    }

    /// Sets the quotas (`--max-connections-per-ip`, `--max-replays-per-key`, …).
    pub fn with_quotas(mut self, limits: quota::QuotaLimits) -> Self {
        self.quotas = Arc::new(quota::Quotas::new(limits));
        self
    }

    /// Serves the echo route `/v1/echo` that `make conformance` tests the
    /// WebSocket stack through (`--conformance-echo`; never in production).
    pub fn with_conformance_echo(mut self, on: bool) -> Self {
        self.conformance_echo = on;
        self
    }

    /// Sets how many writer shards write WebSocket sessions (0: one per core).
    pub fn with_writer_shards(mut self, shards: usize) -> Self {
        self.writer_shards = shards;
        self
    }

    /// Adds the history store (REST history, candles, replay).
    pub fn with_history(mut self, history: Option<HistoryAccess>) -> Self {
        self.history = history;
        self
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Open streaming connections of `transport`.
    pub fn connections_of(&self, transport: Transport) -> usize {
        self.by_transport[transport as usize].load(Ordering::Relaxed)
    }

    /// The writer shards (one per core), started on first use.
    fn writers(&self) -> &writer::WriterShards {
        self.writers.get_or_init(|| {
            let shards = match self.writer_shards {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            };
            writer::WriterShards::start(shards, &self.fanout, self.limits.max_frame_bytes, &self.sessions)
        })
    }

    /// Takes a place among `--max-connections` for a streaming client (a
    /// WebSocket, an SSE stream, a held long-poll, a replay socket), released
    /// when the slot is dropped; refused with 503 `too_many_connections` when
    /// every place is taken.
    ///
    /// A connection made with a key also takes one of the key's places
    /// (`tickwire keys add --max-connections`): 429 `too_many_connections`
    /// when it holds them all.
    pub(crate) fn open_connection(
        self: &Arc<Self>,
        transport: Transport,
        caller: &quota::Caller,
    ) -> Result<ConnectionSlot, ApiError> {
        let name = transport.name();
        let quotas = self.quotas.open_connection(caller).inspect_err(|_| {
            metrics::counter!("tickwire_connections_refused_total", "transport" => name).increment(1);
        })?;
        let key = match caller.grant() {
            None => None,
            Some(access::Grant(key)) => match key.open_connection() {
                Some(taken) => Some(taken),
                None => {
                    metrics::counter!("tickwire_connections_refused_total", "transport" => name).increment(1);
                    let max = key.entitlements.max_connections.unwrap_or_default();
                    return Err(ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_connections",
                        format!("key {:?} holds its maximum of {max} connections", key.name),
                    ));
                }
            },
        };
        let max = self.max_connections;
        match self.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)) {
            Ok(_) => {
                metrics::gauge!("tickwire_connections", "transport" => name).increment(1.0);
                self.by_transport[transport as usize].fetch_add(1, Ordering::Relaxed);
                Ok(ConnectionSlot { app: self.clone(), transport, _key: key, _quotas: quotas })
            }
            Err(_) => {
                metrics::counter!("tickwire_connections_refused_total", "transport" => name).increment(1);
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_connections",
                    format!("the server holds its maximum of {max} connections"),
                ))
            }
        }
    }
}

/// A streaming client's place among `--max-connections`; given back on drop.
pub(crate) struct ConnectionSlot {
    app: Arc<AppState>,
    transport: Transport,
    /// The key's place, when the connection was made with a key.
    _key: Option<crate::keys::KeyConnection>,
    /// Its places under the per-address and per-subject caps.
    _quotas: Vec<quota::Held>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.app.connections.fetch_sub(1, Ordering::AcqRel);
        self.app.by_transport[self.transport as usize].fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("tickwire_connections", "transport" => self.transport.name()).decrement(1.0);
    }
}

/// An error at the HTTP boundary: a status and a JSON body with a stable code.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds to wait before asking again (`Retry-After`), for refusals that pass.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code, "message": self.message });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Records what `transport` hands to a socket: `items` framed into `bytes`
/// (counted per transport), and receive->write for the oldest update among
/// them.
pub fn record_write(items: &[Item], transport: Transport, bytes: usize) {
    let mut messages = 0;
    let mut oldest = None;
    for item in items {
        match item {
            Item::Update(update) => {
                oldest = oldest.or(Some(update.ts_recv));
                messages += 1;
            }
            Item::Raw(_) => {}
            _ => messages += 1,
        }
    }
    LATENCIES.written(transport).add(messages, bytes as u64);
    if let Some(oldest) = oldest {
        LATENCIES.receive_to_write(transport).record_between(oldest, now_nanos());
    }
}

/// The instrument a REST query names by its symbol or another spelling
/// (`BTCUSDT`); 404 `unknown_symbol`, or 400 `ambiguous_symbol` with the
/// symbols to choose from.
pub(crate) fn lookup_symbol(instruments: &Instruments, name: &str) -> Result<InstrumentId, ApiError> {
    match instruments.resolve(name) {
        Lookup::Symbol(id) | Lookup::Alias(id) => Ok(id),
        Lookup::Ambiguous(ids) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "ambiguous_symbol", instruments.ambiguity(name, &ids)))
        }
        Lookup::Unknown => Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_symbol", format!("no instrument {name}"))),
    }
}

/// The whole HTTP application.
///
/// Every API route goes through `routes!`, which registers it with the
/// router and describes it in the OpenAPI document (`/v1/openapi.json`) at
/// once, from the handler's `#[utoipa::path]`.
pub fn router(state: Arc<AppState>) -> Router {
    let (guarded, document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(ws_upgrade))
        .routes(routes!(fallback::sse))
        .routes(routes!(fallback::poll))
        .routes(routes!(rest::instruments))
        .routes(routes!(rest::snapshot))
        .routes(routes!(rest::feeds))
        .routes(routes!(rest::stats))
        .routes(routes!(history::trades))
        .routes(routes!(history::quotes))
        .routes(routes!(history::candles))
        .routes(routes!(replay::upgrade))
        .routes(routes!(rest::metrics))
        .routes(routes!(openapi::openapi_json))
        .split_for_parts();
    // Probes need no token.
    let (probes, probes_document) =
        OpenApiRouter::new().routes(routes!(rest::health)).routes(routes!(rest::ready)).split_for_parts();
    let mut document = document;
    document.merge(probes_document);
    openapi::publish(&document);
    // Registered outside `routes!`: the echo is no part of the API, and is
    // served (and guarded like the rest) only when the flag asks for it.
    let guarded = if state.conformance_echo { guarded.route("/v1/echo", get(echo_upgrade)) } else { guarded };
    let api = guarded
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), access::guard))
        // Outside the guard: a preflight carries no token.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), access::cors))
        .merge(probes);
    let site = match &state.static_dir {
        Some(dir) if dir.join("index.html").is_file() => Router::new()
            .fallback_service(tower_http::services::ServeDir::new(dir).append_index_html_on_directories(true)),
        _ => Router::new().route("/", get(page::index)),
    };
    api.merge(site).with_state(state)
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct WsQuery {
    /// `json` (default) or `proto`; the subprotocols `tickwire.v1.json` and
    /// `tickwire.v1.proto` say the same and win when offered.
    format: Option<String>,
}

/// The connection's format: from `Sec-WebSocket-Protocol` (the first of ours the
/// client offers) or `?format=`; JSON when neither is given. A client that offers
/// only subprotocols we do not speak, or names an unknown format, is refused with
/// 400 before the upgrade.
pub(crate) fn negotiate<'a>(
    requested_protocols: impl Iterator<Item = &'a axum::http::HeaderValue>,
    format: Option<&str>,
) -> Result<(Format, bool), ApiError> {
    let offered: Vec<&str> = requested_protocols
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        // A token (`bearer.<token>`) is no format: never chosen, never echoed.
        .filter(|name| !name.is_empty() && !name.starts_with(access::BEARER_PROTOCOL))
        .collect();
    let from_query = match format {
        None => None,
        Some(name) => Some(Format::from_param(name).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_format", format!("no format {name:?} (json, proto)"))
        })?),
    };
    if offered.is_empty() {
        return Ok((from_query.unwrap_or(Format::Json), false));
    }
    let format = offered.iter().find_map(|name| Format::from_subprotocol(name)).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_protocol",
            format!("none of the subprotocols {offered:?} is spoken here (tickwire.v1.json, tickwire.v1.proto)"),
        )
    })?;
    if from_query.is_some_and(|q| q != format) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_format", "?format= contradicts the subprotocol"));
    }
    Ok((format, true))
}

/// The live stream over WebSocket: subscribe by message; snapshots, batched
/// updates, gaps and resumes as docs/PROTOCOL.md and proto/asyncapi.yaml say.
#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "stream",
    params(WsQuery),
    responses(
        (status = 101, description = "Switching Protocols: the stream"),
        (status = 400, description = "Not a WebSocket upgrade, or an unknown format or subprotocol", body = ErrorBody),
        (status = 401, description = "A token is required (`--auth-token`) and was missing or invalid", body = ErrorBody),
        (status = 403, description = "The request's Origin is not allowed (`--allowed-origin`)", body = ErrorBody),
        (status = 429, description = "`too_many_connections`: the key, JWT subject or client address holds its maximum", body = ErrorBody),
        (status = 503, description = "`too_many_connections` or `shutting_down`", body = ErrorBody)
    )
)]
async fn ws_upgrade(State(app): State<Arc<AppState>>, Query(query): Query<WsQuery>, request: Request) -> Response {
    accept_session(app, request, |request| {
        let protocols = request.headers().get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL).iter();
        let (format, echo_protocol) = negotiate(protocols, query.format.as_deref())?;
        Ok((ws::Service::Stream(format), echo_protocol.then(|| format.subprotocol())))
    })
}

/// `serve --conformance-echo` only (never in production, and not in the
/// OpenAPI document): a WebSocket that writes each message back unchanged,
/// through the same handshake, limits, reader, outbox and writers as
/// `/v1/ws`, so that `make conformance` tests the server's own stack
/// (docs/CONFORMANCE.md).
async fn echo_upgrade(State(app): State<Arc<AppState>>, request: Request) -> Response {
    accept_session(app, request, |_| Ok((ws::Service::Echo, None)))
}

/// Takes a connection place, checks the upgrade, asks `choose` what the
/// session serves (and the subprotocol to answer with), and starts the session
/// once the connection is upgraded.
fn accept_session(
    app: Arc<AppState>,
    mut request: Request,
    choose: impl FnOnce(&Request) -> Result<(ws::Service, Option<&'static str>), ApiError>,
) -> Response {
    if app.shutdown.is_cancelled() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down")
            .into_response();
    }
    let grant = request.extensions().get::<access::Grant>().cloned();
    let caller = quota::Caller { grant: grant.clone(), ip: request.extensions().get::<quota::Peer>().map(|p| p.0) };
    let slot = match app.open_connection(Transport::Ws, &caller) {
        Ok(slot) => slot,
        Err(error) => {
            metrics::counter!("tickwire_ws_refused_total", "reason" => "max_connections").increment(1);
            return error.into_response();
        }
    };
    let handshake = match upgrade::Handshake::check(&mut request) {
        Ok(handshake) => handshake,
        Err(error) => {
            metrics::counter!("tickwire_ws_refused_total", "reason" => error.code).increment(1);
            return error.into_response();
        }
    };
    let (service, protocol) = match choose(&request) {
        Ok(chosen) => chosen,
        Err(error) => {
            metrics::counter!("tickwire_ws_refused_total", "reason" => error.code).increment(1);
            return error.into_response();
        }
    };
    let (response, on_upgrade) = handshake.accept(protocol);
    let sessions = app.sessions.clone();
    sessions.spawn(async move {
        let _slot = slot; // held until the session ends
        match on_upgrade.await {
            Ok(upgraded) => ws::run(upgraded, app, service, grant).await,
            Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
        }
    });
    response
}
