//! `tickwire serve` settings as an operator gives them: a TOML config file
//! under flags and `TICKWIRE_*` variables, contradictions refused at start
//! naming the setting, `--profile production` refusing to run unprotected, and
//! tokens kept out of URLs unless allowed.

mod common;

use std::process::{Command, Stdio};

use common::store::TempDir;
use common::{Process, get_json};

/// Runs `tickwire serve ARGS` expecting it to refuse to start: its stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--store", "none", "--static-dir", "/nonexistent"])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("tickwire runs");
    assert!(!output.status.success(), "serve {args:?} should refuse to start");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn production_refuses_to_start_unprotected_and_says_what_is_missing() {
    let stderr = refused(&["--profile", "production"], &[]);
    for missing in ["needs TLS: set tls-cert and tls-key", "needs authentication", "set allowed-origin"] {
        assert!(stderr.contains(missing), "{missing:?} in {stderr}");
    }
    let stderr = refused(&["--profile", "production", "--allowed-origin", "https://desk.example"], &[]);
    assert!(!stderr.contains("allowed-origin"), "only what is missing: {stderr}");
    let stderr = refused(&[], &[("TICKWIRE_PROFILE", "production")]);
    assert!(stderr.contains("needs TLS"), "the environment sets it too: {stderr}");
}

#[test]
fn contradictory_settings_are_refused_by_name() {
    let stderr = refused(&["--conflate-after", "9000", "--outbox-max", "8192"], &[]);
    assert!(stderr.contains("conflate-after (9000) is above outbox-max (8192)"), "{stderr}");
}

#[tokio::test]
async fn a_config_file_sets_what_flags_and_variables_do_not() {
    let dir = TempDir::new("settings-file");
    let file = dir.path("tickwire.toml");
    std::fs::write(
        &file,
        "# an operator's file\nmax-connections = 1\nsymbols = [\"BTC-USD\", \"ETH-USD\"]\n[conflate]\nmin-ms = 20\n",
    )
    .unwrap();
    let server = Process::serve(&["--config", &file]);
    let (_, body) = get_json(server.addr, "/v1/instruments").await;
    let symbols: Vec<&str> =
        body["instruments"].as_array().unwrap().iter().filter_map(|i| i["symbol"].as_str()).collect();
    assert_eq!(symbols, ["BTC-USD", "ETH-USD"], "{body}");
    // max-connections = 1 from the file: a second stream is refused.
    let _first = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", server.addr)).await.unwrap();
    assert!(tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", server.addr)).await.is_err());
    drop(server);

    std::fs::write(&file, "max-conections = 5\n").unwrap();
    let stderr = refused(&["--config", &file], &[]);
    assert!(stderr.contains("unknown setting `max-conections`"), "{stderr}");
    std::fs::write(&file, "rate = \"fast\"\n").unwrap();
    let stderr = refused(&["--config", &file], &[]);
    assert!(stderr.contains("--rate"), "{stderr}");
    // A variable overrides the file; the file's bad value is then never used.
    std::fs::write(&file, "conflate-after = 9000\n").unwrap();
    let stderr = refused(&["--config", &file], &[]);
    assert!(stderr.contains("conflate-after (9000)"), "{stderr}");
    let _ok = Process::serve_with_env(&["--config", &file], &[("TICKWIRE_CONFLATE_AFTER", "100")]);
}

#[tokio::test]
async fn tokens_in_urls_are_refused_unless_allowed() {
    let closed = common::start(&["--auth-token", "s3cret"]).await;
    let (status, body) = get_json(closed.addr, "/v1/instruments?token=s3cret").await;
    assert_eq!(status, 401, "{body}");
    assert!(body["message"].as_str().unwrap().contains("--allow-query-token"), "{body}");
    closed.shutdown().await;
    let open = common::start(&["--auth-token", "s3cret", "--allow-query-token"]).await;
    assert_eq!(get_json(open.addr, "/v1/instruments?token=s3cret").await.0, 200, "an operator may opt in");
    open.shutdown().await;
}
