//! HTTPS and WSS against the real server with a self-signed certificate: a
//! client that trusts it streams and reads REST; a plaintext or garbled client
//! gets nothing and the server keeps serving; bad TLS settings stop the start.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::Process;
use common::store::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

struct Pki {
    dir: TempDir,
    client: Arc<rustls::ClientConfig>,
}

/// A self-signed certificate for 127.0.0.1, its files, and a client trusting it.
fn pki() -> Pki {
    let dir = TempDir::new("tls");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    std::fs::write(dir.path("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.path("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Pki { dir, client: Arc::new(client) }
}

/// `GET path` over TLS: the status line.
async fn https_status(addr: SocketAddr, client: &Arc<rustls::ClientConfig>, path: &str) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = TlsConnector::from(client.clone()).connect(name, tcp).await.unwrap();
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await; // peers may skip close_notify
    String::from_utf8_lossy(&response).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_https_serve_and_plaintext_is_refused() {
    let pki = pki();
    let (cert, key) = (pki.dir.path("cert.pem"), pki.dir.path("key.pem"));
    let server = common::start(&["--rate", "200", "--tls-cert", &cert, "--tls-key", &key]).await;
    let addr = server.addr;

    assert_eq!(https_status(addr, &pki.client, "/healthz").await, "HTTP/1.1 200 OK");

    let request = format!("wss://127.0.0.1:{}/v1/ws", addr.port()).into_client_request().unwrap();
    let connector = Connector::Rustls(pki.client.clone());
    let (socket, _) =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector)).await.unwrap();
    let mut client = common::Client { socket };
    client.subscribe(&["quotes"], &["BTC-USD"]).await;
    assert_eq!(client.until_type("snapshot").await["symbol"], "BTC-USD");

    // Plain HTTP on the TLS port gets no HTTP answer; garbage neither.
    for bytes in [&b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0x16, 0x03, 0x01, 0xff, 0xff, 0x00][..]] {
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain.write_all(bytes).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the server closes a failed handshake");
        assert!(!String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"), "no plaintext answer");
    }
    // The stream and new clients are unaffected.
    client.round_trip(1).await;
    assert_eq!(https_status(addr, &pki.client, "/v1/instruments").await, "HTTP/1.1 200 OK");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_settings_stop_the_start() {
    let pki = pki();
    let (cert, key) = (pki.dir.path("cert.pem"), pki.dir.path("key.pem"));
    let empty = pki.dir.path("empty.pem");
    std::fs::write(&empty, "").unwrap();
    for (flags, expect) in [
        (vec!["--tls-cert", cert.as_str()], "both"),
        (vec!["--tls-cert", empty.as_str(), "--tls-key", key.as_str()], "no certificate"),
        (vec!["--tls-cert", cert.as_str(), "--tls-key", "/nonexistent/key.pem"], "/nonexistent/key.pem"),
        (vec!["--tls-cert", key.as_str(), "--tls-key", cert.as_str()], "certificate chain"),
    ] {
        let mut args = vec!["--listen", "127.0.0.1:0", "--store", "none"];
        args.extend(flags.iter().copied());
        let args = tickwire::config::ServeArgs::parse_from_args(args).unwrap();
        let error = tickwire::app::start(&args).await.err().expect("refused").to_string();
        assert!(error.contains(expect), "{flags:?}: {error}");
    }
}

/// The binary says where it listens with the scheme it serves, and the test
/// harness (like `tickwire bench`) still finds the address in that line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listening_line_names_https_under_tls() {
    let pki = pki();
    let (cert, key) = (pki.dir.path("cert.pem"), pki.dir.path("key.pem"));
    let server = Process::serve(&["--rate", "100", "--tls-cert", &cert, "--tls-key", &key]);
    assert_eq!(server.listening, format!("tickwire listening on https://{}", server.addr));
    assert_eq!(https_status(server.addr, &pki.client, "/healthz").await, "HTTP/1.1 200 OK");
    let plain = Process::serve(&["--rate", "100"]);
    assert_eq!(plain.listening, format!("tickwire listening on http://{}", plain.addr));
}
