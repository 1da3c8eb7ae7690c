//! The `tickwire` binary: parses the command line and runs a sub-command.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tickwire::config::{ReplayArgs, ServeArgs, StoreArgs, TailArgs};

#[derive(Debug, Parser)]
#[command(name = "tickwire", version, about = "Live market-data streaming gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway: feeds, fan-out, WebSocket, REST and the dashboard.
    Serve(Box<ServeArgs>),
    /// Print a live stream from a running gateway in the terminal.
    Tail(TailArgs),
    /// End-to-end load bench: N clients, latency per leg, throughput, server CPU and RSS.
    Bench(Box<tickwire::loadgen::command::BenchArgs>),
    /// Create or update the history store's schema, then exit.
    Migrate(StoreArgs),
    /// Print stored history to the terminal (JSONL or CSV), at a chosen speed.
    Replay(ReplayArgs),
    /// API keys for `serve --auth keys`: add, list, show, revoke (in the store).
    Keys(KeysArgs),
}

#[derive(Debug, clap::Args)]
struct KeysArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    action: KeysAction,
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Create a key and print it once (only its hash is stored).
    Add {
        /// A name for the key (unique among live keys).
        #[arg(long)]
        name: String,
        /// Symbol patterns the key may use, comma-separated (`BTC-USD,binance:*,*-USD`); default all.
        #[arg(long)]
        symbols: Option<String>,
        /// What the key may use, comma-separated: quotes, trades, book, candles, history, replay; default all.
        #[arg(long)]
        channels: Option<String>,
        /// Connections the key may hold at once (every transport); default the server's limit.
        #[arg(long)]
        max_connections: Option<u32>,
        /// Subscriptions (symbol x channel) per connection; default the server's limit.
        #[arg(long)]
        max_subscriptions: Option<u32>,
    },
    /// Every key, revoked ones included (never a secret), one JSON object per line.
    List,
    /// One key by name or key id.
    Show { key: String },
    /// Revoke a live key by name or key id: servers refuse it, and close its
    /// connections, within about a second.
    Revoke { key: String },
}

fn main() -> ExitCode {
    // `serve --config FILE`: the file's settings join the command line where
    // neither it nor the environment set them.
    let argv = match tickwire::config::file::apply(&Cli::command(), "serve", std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let cli = match Cli::command().try_get_matches_from(argv).and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TICKWIRE_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            // Every connection is a file descriptor: use all the kernel allows.
            let limit = tickwire::app::raise_open_file_limit();
            tracing::debug!(limit, "open-file limit");
            // Handlers first: a signal that arrives once we said we listen must
            // get the graceful path, not the default action.
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
            // Starting may wait (a gateway waits for its bus's first ingest
            // node): a signal meanwhile stops it there.
            let server = tokio::select! {
                server = tickwire::app::start(&args) => server?,
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
            };
            // Tests and `tickwire bench` read the address from this line.
            let scheme = if args.tls_cert.is_some() { "https" } else { "http" };
            println!("tickwire listening on {scheme}://{}", server.addr);
            if args.static_dir.join("index.html").exists() {
                // A log line, not stdout: whoever reads the line above may stop reading.
                tracing::info!("dashboard ready: open {scheme}://{}/ in a browser", server.addr);
            }
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            server.shutdown().await;
            Ok(())
        }
        Command::Bench(args) => {
            tickwire::loadgen::command::bench(*args).await?;
            Ok(())
        }
        Command::Tail(args) => {
            let config = tickwire::client::ClientConfig {
                url: args.url,
                format: args.format,
                symbols: args.symbols,
                channels: args.channels,
                reconnect: !args.no_reconnect,
                max_backoff: std::time::Duration::from_secs(10),
                from_time: args.from_time,
                token: args.token,
            };
            let mut stdout = std::io::stdout();
            tokio::select! {
                result = tickwire::client::tail(config, args.count, &mut stdout) => Ok(result?),
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
        Command::Keys(args) => keys(args).await,
        Command::Migrate(args) => {
            let url = args.url().ok_or_else(|| anyhow::anyhow!("--store none: no store to migrate"))?;
            let store = tickwire::store::Store::open(&url).await?;
            store.close().await;
            eprintln!("{url}: schema up to date");
            Ok(())
        }
        Command::Replay(args) => {
            let url = args.store.url().ok_or_else(|| anyhow::anyhow!("--store none: no history to replay"))?;
            anyhow::ensure!(args.from < args.to, "--from must be before --to");
            let store = tickwire::store::Store::connect(&url).await?;
            let range = tickwire::replay::ReplayRange { from: args.from, to: args.to, speed: args.speed };
            let mut stdout = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
            let events = tokio::select! {
                result = tickwire::replay::print(store, &args.symbols, &args.channels, range, args.format, &mut stdout) => result?,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            tracing::info!(events, "replay complete");
            Ok(())
        }
    }
}

async fn keys(args: KeysArgs) -> anyhow::Result<()> {
    use tickwire::keys;
    let url = args.store.url().ok_or_else(|| anyhow::anyhow!("--store none: keys live in the store"))?;
    let store = tickwire::store::Store::open(&url).await?;
    let now = tickwire::model::now_nanos() as i64;
    let result = match args.action {
        KeysAction::Add { name, symbols, channels, max_connections, max_subscriptions } => {
            let entitlements =
                keys::Entitlements::parse(symbols.as_deref(), channels.as_deref(), max_connections, max_subscriptions)?;
            let key = keys::add(&store, &name, &entitlements, now).await?;
            eprintln!("key {name:?} ({}) created; the key is shown once, here:", key.stored.key_id);
            println!("{}", key.secret);
            Ok(())
        }
        KeysAction::List => {
            for key in store.keys().await? {
                println!("{}", keys::describe(&key));
            }
            Ok(())
        }
        KeysAction::Show { key } => {
            let all = store.keys().await?;
            let found = all.iter().rev().find(|k| k.key_id == key || k.name == key);
            match found {
                Some(stored) => {
                    println!("{}", serde_json::to_string_pretty(&keys::describe(stored))?);
                    Ok(())
                }
                None => Err(anyhow::anyhow!("no key named {key:?}")),
            }
        }
        KeysAction::Revoke { key } => {
            keys::revoke(&store, &key, now).await?;
            eprintln!("key {key:?} revoked");
            Ok(())
        }
    };
    store.close().await;
    result
}
