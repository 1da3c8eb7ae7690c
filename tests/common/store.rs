//! Store test helpers: an isolated PostgreSQL database per test, temp
//! directories, and a TCP proxy in front of PostgreSQL that a test can cut and
//! restore without disturbing anything else on the machine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};

/// The PostgreSQL server tests use (trust auth).
pub fn pg_server() -> String {
    std::env::var("TICKWIRE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn psql(database: &str, sql: &str) -> std::process::Output {
    std::process::Command::new("psql")
        .args([&format!("{}/{database}", pg_server()), "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("psql runs")
}

/// A database of its own, dropped at the end of the test.
pub struct PgDb {
    pub name: String,
}

impl PgDb {
    pub fn create() -> PgDb {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "tw_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            tickwire::model::now_nanos() % 1_000_000
        );
        let out = psql("postgres", &format!("CREATE DATABASE {name}"));
        assert!(out.status.success(), "CREATE DATABASE: {}", String::from_utf8_lossy(&out.stderr));
        PgDb { name }
    }

    pub fn url(&self) -> String {
        format!("{}/{}", pg_server(), self.name)
    }

    /// The URL of this database through a proxy at `addr`.
    pub fn url_via(&self, addr: SocketAddr) -> String {
        format!("postgres://postgres@{addr}/{}", self.name)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = psql("postgres", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

/// A directory of its own, removed at the end of the test.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "tickwire-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}/history.db", self.0.display())
    }

    pub fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP proxy to PostgreSQL. `cut` drops every connection and refuses new ones
/// (the database looks down); `restore` lets them through again.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let accept = tokio::spawn({
            let (cut, links) = (cut.clone(), links.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let link = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    links.lock().push(link.abort_handle());
                }
            }
        });
        Proxy { addr, cut, links, accept }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().drain(..) {
            link.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A PostgreSQL cluster of the test's own (`initdb` in a temporary directory,
/// on a free port), so that a test may stop and start it without touching the
/// machine's server. Removed when dropped.
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

impl PgCluster {
    /// Creates and starts a cluster (trust auth, user `postgres`, fsync off).
    pub fn start() -> PgCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
            .map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")))
            .unwrap();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tickwire-pgc-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cluster = PgCluster { dir, bin, port };
        // PostgreSQL refuses to run as root: the cluster belongs to `postgres`.
        cluster.own_by_postgres();
        cluster.run("initdb", &["-D", &cluster.data(), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
        cluster.up();
        cluster
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn is_root() -> bool {
        std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"))
    }

    fn own_by_postgres(&self) {
        if Self::is_root() {
            let ok = std::process::Command::new("chown").args(["-R", "postgres:postgres"]).arg(&self.dir).status();
            assert!(ok.unwrap().success(), "chown the cluster directory");
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let path = self.bin.join(tool);
        let mut command = if Self::is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            std::process::Command::new(&path)
        };
        let out = command.args(args).output().expect("PostgreSQL tool runs");
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn up(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=50",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-o", &options, "-w", "start"]);
    }

    /// Stops the server at once (`-m fast`: connections are cut, as in an outage).
    pub fn down(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} {}/pg_ctl -D {} -m immediate -w stop",
                if Self::is_root() { "runuser -u postgres --" } else { "" },
                self.bin.display(),
                self.data()
            ))
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
