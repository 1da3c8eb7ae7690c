//! Who may use the API: bearer tokens and allowed browser origins.
//!
//! Both are off by default (a first run needs no set-up). With tokens configured,
//! every `/v1/*` endpoint and `/metrics` require one, sent as
//! `Authorization: Bearer <token>`, as a `bearer.<token>` WebSocket subprotocol
//! (what a browser can send on a WebSocket), or with `--allow-query-token` as
//! `?token=<token>`; `/healthz` and the dashboard's static files stay
//! open, so probes and the login-less page load work. With origins configured, a
//! request carrying an `Origin` header (a browser) from any other origin is refused,
//! which stops other sites' pages from opening streams with a user's credentials.
//! Refusals are decided before any upgrade: `401` / `403` with a JSON reason, a log
//! line and a metric.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::jwt::JwtVerifier;
use crate::keys::{KeyRing, LiveKey, Use};
use crate::model::{InstrumentId, Instruments};

/// The configured access rules.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// SHA-256 of each accepted token: lookups compare digests, so how long a
    /// comparison takes says nothing about a token's prefix.
    tokens: HashSet<[u8; 32]>,
    /// Exact `Origin` values (scheme://host[:port]) browsers may connect from.
    origins: Vec<String>,
    /// API keys (`--auth keys`), when accepted.
    keys: Option<Arc<KeyRing>>,
    /// JSON Web Tokens (`--auth jwt`), when accepted, and how long before
    /// expiry a connection is warned.
    jwt: Option<(Arc<JwtVerifier>, std::time::Duration)>,
    /// Whether `?token=` is read (`--allow-query-token`).
    query_token: bool,
}

/// The key a request was let in with (a request extension): what it may use.
/// Requests with a static token, or to an open API, carry none and may use
/// everything.
#[derive(Debug, Clone)]
pub struct Grant(pub Arc<LiveKey>);

/// Why a token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read token file {path}: {source}")]
    TokenFile { path: String, source: std::io::Error },
    #[error("token file {0} holds no token")]
    NoTokens(String),
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl AccessPolicy {
    /// Tokens from `tokens` and from `file` (one per line; blank lines and `#`
    /// comments ignored), and the allowed origins.
    pub fn new(
        tokens: &[String],
        file: Option<&std::path::Path>,
        origins: &[String],
    ) -> Result<AccessPolicy, AccessError> {
        let mut all: Vec<String> = tokens.iter().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| AccessError::TokenFile { path: path.display().to_string(), source })?;
            let before = all.len();
            all.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned));
            if all.len() == before {
                return Err(AccessError::NoTokens(path.display().to_string()));
            }
        }
        Ok(AccessPolicy {
            tokens: all.iter().map(|t| digest(t)).collect(),
            origins: origins.iter().map(|o| o.trim().trim_end_matches('/').to_owned()).collect(),
            keys: None,
            jwt: None,
            query_token: true,
        })
    }

    /// Whether a token in the URL (`?token=`) is read.
    pub fn with_query_token(mut self, allowed: bool) -> AccessPolicy {
        self.query_token = allowed;
        self
    }

    /// Accepts JSON Web Tokens verified by `verifier`; connections are warned
    /// `warn` before their token expires.
    pub fn with_jwt(mut self, verifier: Arc<JwtVerifier>, warn: std::time::Duration) -> AccessPolicy {
        self.jwt = Some((verifier, warn));
        self
    }

    /// The JWT verifier and warning lead, when tokens are accepted.
    pub fn jwt(&self) -> Option<&(Arc<JwtVerifier>, std::time::Duration)> {
        self.jwt.as_ref()
    }

    /// Accepts API keys from `ring` as well.
    pub fn with_keys(mut self, ring: Arc<KeyRing>) -> AccessPolicy {
        self.keys = Some(ring);
        self
    }

    pub fn requires_token(&self) -> bool {
        !self.tokens.is_empty() || self.keys.is_some() || self.jwt.is_some()
    }

    fn token_ok(&self, token: &str) -> bool {
        self.tokens.contains(&digest(token))
    }

    fn origin_ok(&self, origin: &str) -> bool {
        self.origins.is_empty() || self.origins.iter().any(|o| o == origin.trim_end_matches('/'))
    }
}

/// The token a request presents, if any.
///
/// In order: `Authorization: Bearer <token>`; a WebSocket subprotocol entry
/// `bearer.<token>` (what a browser can send on a WebSocket, beside the format
/// protocol; the server echoes only the format); `?token=` when `query` allows
/// it (for tools that can do nothing else: EventSource). Never logged.
fn presented_token(request: &Request, query: bool) -> Option<String> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned());
    }
    let protocols = request.headers().get_all(header::SEC_WEBSOCKET_PROTOCOL);
    if let Some(token) = protocols
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(BEARER_PROTOCOL))
    {
        return Some(token.to_owned());
    }
    if !query {
        return None;
    }
    let query = request.uri().query()?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "token").then(|| percent_decode(value))
    })
}

/// The prefix of a WebSocket subprotocol that carries a token.
pub const BEARER_PROTOCOL: &str = "bearer.";

/// Minimal `%XX` / `+` decoding for a token in a query string.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Middleware guarding the API routes.
pub async fn guard(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let policy = &app.access;
    if let Some(origin) = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && !policy.origin_ok(origin)
    {
        metrics::counter!("tickwire_access_refused_total", "reason" => "origin").increment(1);
        tracing::info!(origin, path = request.uri().path(), "request from a disallowed origin refused");
        return ApiError::new(StatusCode::FORBIDDEN, "origin_not_allowed", format!("origin {origin} is not allowed"))
            .into_response();
    }
    let mut request = request;
    if policy.requires_token() {
        let refusal = match presented_token(&request, policy.query_token) {
            None if policy.query_token => {
                Some(("missing", "a token is required: Authorization: Bearer <token>, or ?token="))
            }
            None => Some((
                "missing",
                "a token is required: Authorization: Bearer <token> (tokens in the URL are off: --allow-query-token)",
            )),
            Some(token) => match &policy.keys {
                Some(ring) if crate::keys::is_key(&token) => match ring.check(&token) {
                    Some(key) => {
                        request.extensions_mut().insert(Grant(key));
                        None
                    }
                    None => Some(("invalid", "the key is not valid, or was revoked")),
                },
                _ if policy.token_ok(&token) => None,
                _ if crate::jwt::is_jwt(&token) && policy.jwt.is_some() => {
                    let (verifier, _) = policy.jwt.as_ref().expect("checked");
                    match verifier.verify(&token) {
                        Ok(verified) => {
                            let live =
                                LiveKey::for_token(&verified.subject, verified.entitlements, verified.expires_ns);
                            request.extensions_mut().insert(Grant(Arc::new(live)));
                            None
                        }
                        Err(error) => {
                            tracing::info!(%error, path = request.uri().path(), "token refused");
                            Some(("invalid", "the token is not valid (signature, expiry, audience or issuer)"))
                        }
                    }
                }
                _ => Some(("invalid", "the token is not valid")),
            },
        };
        if let Some((reason, message)) = refusal {
            metrics::counter!("tickwire_access_refused_total", "reason" => reason).increment(1);
            tracing::info!(reason, path = request.uri().path(), "unauthenticated request refused");
            let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

/// Resolves when the request's credential ends: its key revoked (4003), or
/// its token expired (4001); never for a request without one.
pub async fn credential_ended(grant: Option<&Grant>) -> (u16, &'static str) {
    use crate::codec::close;
    match grant {
        None => std::future::pending().await,
        Some(Grant(key)) => tokio::select! {
            () = key.revoked.cancelled() => (close::KEY_REVOKED, "key revoked"),
            () = key.expired() => (close::TOKEN_EXPIRED, "token expired"),
        },
    }
}

impl Grant {
    /// Whether the request's key (if any) may see instrument `id`.
    pub fn allows_instrument(grant: Option<&Grant>, instruments: &Instruments, id: InstrumentId) -> bool {
        grant.is_none_or(|g| g.0.entitlements.allows_symbol(instruments.get(id)))
    }

    /// Subscriptions one connection may hold: the server's limit, or the
    /// key's when it is lower.
    pub fn subscription_limit(grant: Option<&Grant>, server_limit: usize) -> usize {
        match grant.and_then(|Grant(key)| key.entitlements.max_subscriptions) {
            Some(key_limit) => server_limit.min(key_limit as usize),
            None => server_limit,
        }
    }

    /// Refuses a REST request for `ids` and `uses` the key may not have: 403
    /// `not_entitled`, naming what was denied.
    pub fn check(
        grant: Option<&Grant>,
        instruments: &Instruments,
        ids: &[InstrumentId],
        uses: &[Use],
    ) -> Result<(), ApiError> {
        let Some(Grant(key)) = grant else { return Ok(()) };
        let denied = ids
            .iter()
            .map(|&id| instruments.get(id))
            .filter(|i| !key.entitlements.allows_symbol(i))
            .map(|i| &*i.symbol);
        match key.entitlements.denial(denied, uses) {
            None => Ok(()),
            Some(message) => {
                metrics::counter!("tickwire_access_refused_total", "reason" => "not_entitled").increment(1);
                Err(ApiError::new(StatusCode::FORBIDDEN, "not_entitled", message))
            }
        }
    }
}

/// Methods the API answers (every route is a `GET`; preflights are `OPTIONS`).
const CORS_METHODS: &str = "GET, OPTIONS";
/// Request headers a browser may send cross-origin: the bearer token, and the
/// resume point an EventSource sends on reconnect.
const CORS_HEADERS: &str = "authorization, content-type, last-event-id";
/// Response headers a cross-origin page may read besides the simple ones.
const CORS_EXPOSE: &str = "x-next-cursor";
/// How long a browser may cache a preflight answer, in seconds.
const CORS_MAX_AGE: &str = "600";

/// CORS for the API routes, by the same origin rule as [`guard`] (which it runs
/// before). A preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) carries no token, so it is answered here:
/// `204` with the allowed methods and headers when the origin is allowed, `403`
/// without `Access-Control-Allow-Origin` when not. Other responses to an allowed
/// origin (refusals included, so a page can read why) carry
/// `Access-Control-Allow-Origin`. Every answer that depends on `Origin` says so
/// with `Vary: Origin`.
pub async fn cors(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
        let mut response = next.run(request).await;
        response.headers_mut().append(header::VARY, HeaderValue::from_static("origin"));
        return response;
    };
    let allowed = origin.to_str().is_ok_and(|o| app.access.origin_ok(o));
    let preflight =
        request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        if !allowed {
            metrics::counter!("tickwire_access_refused_total", "reason" => "origin").increment(1);
            tracing::info!(origin = ?origin, path = request.uri().path(), "preflight from a disallowed origin refused");
            let mut response = ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                format!("origin {} is not allowed", String::from_utf8_lossy(origin.as_bytes())),
            )
            .into_response();
            response.headers_mut().append(header::VARY, HeaderValue::from_static("origin"));
            return response;
        }
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(CORS_METHODS));
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(CORS_HEADERS));
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(CORS_MAX_AGE));
        response
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if allowed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if !preflight {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(CORS_EXPOSE));
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_origins() {
        let policy =
            AccessPolicy::new(&["s3cret".into(), " ".into()], None, &["https://desk.example/".into()]).unwrap();
        assert!(policy.requires_token());
        assert!(policy.token_ok("s3cret"));
        assert!(!policy.token_ok("s3cre"));
        assert!(!policy.token_ok(""));
        assert!(policy.origin_ok("https://desk.example"));
        assert!(!policy.origin_ok("https://evil.example"));
        let open = AccessPolicy::default();
        assert!(!open.requires_token());
        assert!(open.origin_ok("https://anything.example"));
    }

    #[test]
    fn token_file_lines() {
        let path = std::env::temp_dir().join(format!("tickwire-tokens-{}", std::process::id()));
        std::fs::write(&path, "# operators\nalpha\n\n  beta  \n").unwrap();
        let policy = AccessPolicy::new(&[], Some(&path), &[]).unwrap();
        assert!(policy.token_ok("alpha") && policy.token_ok("beta") && !policy.token_ok("# operators"));
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(matches!(AccessPolicy::new(&[], Some(&path), &[]), Err(AccessError::NoTokens(_))));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn query_tokens_decode() {
        assert_eq!(percent_decode("a%2Bb+c%3d"), "a+b c=");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
    }
}
