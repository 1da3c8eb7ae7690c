//! JSON Web Tokens against the real server over loopback (`serve --auth jwt`):
//! signature, algorithm, `exp`, `nbf`, `aud`, `iss`; entitlements in claims;
//! a token that expires on an open connection is warned, refreshed in place,
//! or closed with 4001; EC keys from a PEM file and from a JWKS file.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::store::TempDir;
use common::{Client, Received, get_json};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

fn now_s() -> u64 {
    tickwire::model::now_nanos() / 1_000_000_000
}

fn hs256(claims: &Value, secret: &str) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

/// Claims that pass the server below, changed by `patch`.
fn claims(patch: &Value) -> Value {
    let mut claims = json!({"sub":"desk-7","aud":"tickwire","iss":"idp.example","exp":now_s() + 600,"nbf":now_s() - 1});
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

async fn hs256_server(dir: &TempDir, extra: &[&str]) -> tickwire::app::Server {
    let secret_file = dir.path("jwt.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let mut args = vec![
        "--auth",
        "jwt",
        "--allow-query-token",
        "--jwt-secret-file",
        &secret_file,
        "--jwt-audience",
        "tickwire",
        "--jwt-issuer",
        "idp.example",
        "--jwt-leeway-s",
        "5",
        "--rate",
        "200",
    ];
    args.extend_from_slice(extra);
    common::start(&args).await
}

async fn status(addr: SocketAddr, token: &str) -> u16 {
    get_json(addr, &format!("/v1/instruments?token={token}")).await.0
}

async fn connect(addr: SocketAddr, token: &str) -> Client {
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws?token={token}")).await.unwrap();
    Client { socket }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_for_signature_time_audience_issuer_and_algorithm() {
    let dir = TempDir::new("jwt-checks");
    let server = hs256_server(&dir, &[]).await;
    let addr = server.addr;
    assert_eq!(status(addr, &hs256(&claims(&json!({})), SECRET)).await, 200, "a valid token");
    for (why, token) in [
        ("expired", hs256(&claims(&json!({"exp": now_s() - 60})), SECRET)),
        ("not yet valid", hs256(&claims(&json!({"nbf": now_s() + 60})), SECRET)),
        ("wrong audience", hs256(&claims(&json!({"aud": "elsewhere"})), SECRET)),
        ("wrong issuer", hs256(&claims(&json!({"iss": "evil.example"})), SECRET)),
        ("no exp", hs256(&claims(&json!({"exp": null})), SECRET)),
        ("no subject", hs256(&claims(&json!({"sub": null})), SECRET)),
        ("wrong signature", hs256(&claims(&json!({})), "another-secret-another-secret-another")),
        (
            "alg none",
            format!(
                "{}.{}.",
                base64url(br#"{"alg":"none","typ":"JWT"}"#),
                base64url(claims(&json!({})).to_string().as_bytes())
            ),
        ),
        (
            "HS384",
            encode(&Header::new(Algorithm::HS384), &claims(&json!({})), &EncodingKey::from_secret(SECRET.as_bytes()))
                .unwrap(),
        ),
    ] {
        assert_eq!(status(addr, &token).await, 401, "{why}");
    }
    // Within the leeway (5 s), a token just past its exp still passes.
    assert_eq!(status(addr, &hs256(&claims(&json!({"exp": now_s() - 2})), SECRET)).await, 200, "leeway");

    // Entitlements ride in the claims.
    let limited = hs256(&claims(&json!({"tw_symbols": ["BTC-USD"], "tw_channels": ["quotes"]})), SECRET);
    let mut client = connect(addr, &limited).await;
    client.send(json!({"op":"subscribe","channels":["trades"],"symbols":["BTC-USD"]})).await;
    let error = client.until_type("error").await;
    assert_eq!(error["code"], "not_entitled", "{error}");
    let (status, body) = get_json(addr, &format!("/v1/sse?symbols=ETH-USD&channels=quotes&token={limited}")).await;
    assert_eq!((status, &body["code"]), (403, &json!("not_entitled")));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_warned_then_refreshed_in_place_or_closed_with_4001() {
    let dir = TempDir::new("jwt-expiry");
    let server = hs256_server(&dir, &["--jwt-warn-s", "30"]).await;
    let addr = server.addr;
    let soon = now_s() + 3;

    // Refreshed on the open connection: it goes on past the first token's exp.
    let mut kept = connect(addr, &hs256(&claims(&json!({"exp": soon})), SECRET)).await;
    kept.subscribe(&["quotes", "trades"], &["BTC-USD", "ETH-USD", "AAPL"]).await;
    let warning = kept.until_type("auth").await;
    assert_eq!((&warning["state"], warning["expires_at"].as_u64()), (&json!("expiring"), Some(soon * 1_000_000_000)));
    let other_subject = hs256(&claims(&json!({"sub": "someone-else", "exp": now_s() + 120})), SECRET);
    kept.send(json!({"op":"auth","token": other_subject})).await;
    let error = kept.until_type("error").await;
    assert_eq!((&error["code"], &error["op"]), (&json!("unauthorized"), &json!("auth")), "{error}");
    let later = now_s() + 120;
    kept.send(json!({"op":"auth","token": hs256(&claims(&json!({"exp": later})), SECRET)})).await;
    let refreshed = kept.until_type("auth").await;
    assert_eq!(
        (&refreshed["state"], refreshed["expires_at"].as_u64()),
        (&json!("refreshed"), Some(later * 1_000_000_000))
    );

    // Not refreshed: warned, then closed with 4001 once the token expires.
    let mut dropped = connect(addr, &hs256(&claims(&json!({"exp": soon})), SECRET)).await;
    dropped.subscribe(&["trades"], &["BTC-USD"]).await;
    assert_eq!(dropped.until_type("auth").await["state"], "expiring");
    let close = loop {
        match dropped.next(Duration::from_secs(6)).await {
            Some(Received::Json(_)) => continue,
            Some(Received::Close(code, reason)) => break (code, reason),
            None => panic!("no close after the token expired"),
        }
    };
    assert_eq!(close, (4001, "token expired".to_owned()));
    assert!(now_s() >= soon, "not before the expiry");

    // The refreshed connection is still streaming, well past the first exp.
    let until = tokio::time::Instant::now() + Duration::from_millis(2_500);
    let mut batches = 0;
    while tokio::time::Instant::now() < until {
        match kept.next(Duration::from_secs(2)).await {
            Some(Received::Json(message)) => batches += usize::from(message["type"] == "batch"),
            Some(other) => panic!("the refreshed connection ended: {other:?}"),
            None => panic!("the refreshed connection went quiet or broke"),
        }
    }
    assert!(now_s() > soon + 1 && batches > 0, "{batches} batches");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_keys_from_a_pem_file_or_a_jwks_file() {
    let dir = TempDir::new("jwt-es256");
    let pair = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
    let signing = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let pem = dir.path("public.pem");
    std::fs::write(&pem, pair.public_key_pem()).unwrap();
    let es256 = |kid: Option<&str>| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        encode(&header, &claims(&json!({"aud": null, "iss": null})), &signing).unwrap()
    };

    let server = common::start(&["--auth", "jwt", "--allow-query-token", "--jwt-public-key", &pem]).await;
    assert_eq!(status(server.addr, &es256(None)).await, 200);
    // An HS256 token "signed" with the public key's text must not pass (algorithm confusion).
    let confused = hs256(&claims(&json!({"aud": null, "iss": null})), &pair.public_key_pem());
    assert_eq!(status(server.addr, &confused).await, 401);
    server.shutdown().await;

    // The same key as a JWK (uncompressed point 04 || x || y).
    let raw = pair.public_key_raw();
    let (x, y) = raw[1..].split_at(32);
    let jwks = json!({"keys": [{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","use":"sig","x":base64url(x),"y":base64url(y)}]});
    let jwks_file = dir.path("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    let server = common::start(&["--auth", "jwt", "--allow-query-token", "--jwt-jwks-file", &jwks_file]).await;
    assert_eq!(status(server.addr, &es256(Some("k1"))).await, 200, "kid k1");
    assert_eq!(status(server.addr, &es256(Some("k2"))).await, 401, "a kid the JWKS does not hold");
    assert_eq!(status(server.addr, &es256(None)).await, 401, "no kid");
    server.shutdown().await;
}

#[tokio::test]
async fn a_subject_holds_at_most_its_connections_across_tokens() {
    let dir = TempDir::new("jwt-subject-cap");
    let server = hs256_server(&dir, &[]).await;
    let addr = server.addr;
    let first = hs256(&claims(&json!({"tw_max_connections": 2, "jti": "a"})), SECRET);
    let second = hs256(&claims(&json!({"tw_max_connections": 2, "jti": "b"})), SECRET);
    let third = hs256(&claims(&json!({"tw_max_connections": 2, "jti": "c"})), SECRET);
    let a = connect(addr, &first).await;
    let _b = connect(addr, &second).await;
    let url = format!("ws://{addr}/v1/ws?token={third}");
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("a third connection of the subject must be refused: {:?}", other.map(|_| ())),
    }
    let (status, body) = get_json(addr, &format!("/v1/sse?symbols=BTC-USD&channels=quotes&token={third}")).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("too_many_connections")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("subject \"desk-7\""), "{body}");
    let other = hs256(&claims(&json!({"sub": "desk-8", "tw_max_connections": 1})), SECRET);
    let _c = connect(addr, &other).await; // another subject is not affected
    drop(a);
    assert!(
        common::ws_connects_within(&url, Duration::from_secs(5)).await,
        "a closed connection gives the subject its place back"
    );
    server.shutdown().await;
}
