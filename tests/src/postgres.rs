//! A real PostgreSQL server for the tests, started once per test process, and a fresh database
//! per test (cloned from a migrated template, which takes milliseconds).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::{Mutex, OnceCell};

use crate::process::{find_binary, free_port, is_root, reap_on_exit, spawn_logged, wait_until};

const TEMPLATE: &str = "template_migrated";
const INSTALL_HINT: &str = "install PostgreSQL's server (apt-get install -y postgresql-15)";

/// The running server of this test process.
pub struct PostgresServer {
    port: u16,
    bin: PathBuf,
    dir: PathBuf,
    // The postmaster's pid (a restart changes it).
    pid: AtomicU32,
}

static SERVER: OnceLock<PostgresServer> = OnceLock::new();
static TEMPLATE_READY: OnceCell<()> = OnceCell::const_new();
static CREATE_LOCK: Mutex<()> = Mutex::const_new(());
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The shared server, started on first use.
pub fn server() -> &'static PostgresServer {
    SERVER.get_or_init(PostgresServer::start)
}

impl PostgresServer {
    fn start() -> Self {
        Self::launch(None)
    }

    /// A dedicated server (stopped when the test process ends), for tests that restart or freeze
    /// PostgreSQL.
    pub fn start_dedicated() -> Self {
        Self::launch(None)
    }

    /// A dedicated server (stopped when the test process ends) with TLS on, serving the PKI's
    /// server certificate; it still accepts plain connections, so what is tested is the client's
    /// refusal to go without TLS.
    pub fn start_tls(pki: &crate::tls::TestPki) -> Self {
        Self::launch(Some(pki))
    }

    fn launch(tls: Option<&crate::tls::TestPki>) -> Self {
        let bin = server_bindir();
        let initdb = find_binary("initdb", std::slice::from_ref(&bin), INSTALL_HINT);
        let postgres = find_binary("postgres", std::slice::from_ref(&bin), INSTALL_HINT);
        let root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("auth-platform-pg-")
            .tempdir()
            .expect("a temporary directory can be created")
            .keep();
        if root {
            // PostgreSQL refuses to run as root, so the cluster belongs to the `postgres` user.
            run_checked(Command::new("chown").arg("postgres:postgres").arg(&dir));
        }
        let data = dir.join("data");
        run_checked(as_postgres(root, &initdb).arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]));
        let mut ssl = Vec::new();
        if let Some(pki) = tls {
            // The key must belong to the server's user and be private to it.
            for name in ["server.pem", "server.key"] {
                std::fs::copy(pki.file(name), dir.join(name)).expect("the certificate can be copied");
                if root {
                    run_checked(Command::new("chown").arg("postgres:postgres").arg(dir.join(name)));
                }
            }
            run_checked(Command::new("chmod").arg("600").arg(dir.join("server.key")));
            ssl = vec![
                "-c".to_owned(),
                "ssl=on".to_owned(),
                "-c".to_owned(),
                format!("ssl_cert_file={}", dir.join("server.pem").display()),
                "-c".to_owned(),
                format!("ssl_key_file={}", dir.join("server.key").display()),
            ];
        }
        let port = free_port();
        let log = dir.join("postgres.log");
        let child = spawn_logged(
            as_postgres(root, &postgres)
                .arg("-D")
                .arg(&data)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(&dir)
                .args(["-c", "listen_addresses=127.0.0.1"])
                // Durability is pointless for throw-away test data and costs seconds.
                .args([
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ])
                .args(["-c", "max_connections=400", "-c", "log_min_messages=warning"])
                .args(&ssl),
            &log,
        );
        let isready = find_binary("pg_isready", std::slice::from_ref(&bin), INSTALL_HINT);
        wait_until("PostgreSQL", Duration::from_secs(30), &log, || {
            Command::new(&isready)
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
                .status()
                .is_ok_and(|status| status.success())
        });
        // The postmaster's own pid (not runuser's); SIGQUIT is its immediate shutdown.
        drop(child);
        let pid = postmaster_pid(&data);
        reap_on_exit(pid, "QUIT", &dir);
        Self {
            port,
            bin,
            dir,
            pid: AtomicU32::new(pid),
        }
    }

    /// Restarts the server (`pg_ctl restart -m fast`: every connection is closed) and waits until
    /// it accepts connections again.
    pub fn restart(&self) {
        let pg_ctl = find_binary("pg_ctl", std::slice::from_ref(&self.bin), INSTALL_HINT);
        let data = self.dir.join("data");
        run_checked(
            as_postgres(is_root(), &pg_ctl)
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(self.dir.join("postgres-restarted.log"))
                .args(["-m", "fast", "-w", "restart"]),
        );
        let pid = postmaster_pid(&data);
        reap_on_exit(pid, "QUIT", &self.dir);
        self.pid.store(pid, Ordering::Release);
    }

    /// Freezes the postmaster and every backend (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal_all("STOP");
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal_all("CONT");
    }

    fn signal_all(&self, signal: &str) {
        let pid = self.pid.load(Ordering::Acquire).to_string();
        // The postmaster first on STOP (it forks no new backend meanwhile), last on CONT.
        let postmaster = || Command::new("kill").args([&format!("-{signal}"), &pid]).status();
        let backends = || {
            Command::new("pkill")
                .args([&format!("-{signal}"), "-P", &pid])
                .status()
        };
        if signal == "STOP" {
            postmaster().expect("kill runs");
            backends().expect("pkill runs");
        } else {
            backends().expect("pkill runs");
            postmaster().expect("kill runs");
        }
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` as the superuser.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The directory of the server binaries (`pg_dump` and friends).
    pub fn bindir(&self) -> &Path {
        &self.bin
    }
}

fn postmaster_pid(data: &Path) -> u32 {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|content| content.lines().next()?.trim().parse().ok())
        .expect("a running postmaster writes its pid")
}

fn server_bindir() -> PathBuf {
    Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .filter(|dir| dir.join("initdb").is_file())
        .or_else(|| {
            let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
                .filter(|dir| dir.join("initdb").is_file())
                .collect();
            versions.sort();
            versions.pop()
        })
        .unwrap_or_else(|| panic!("PostgreSQL server binaries not found: {INSTALL_HINT}"))
}

/// `program` run as the `postgres` user when the tests run as root (PostgreSQL and PgBouncer refuse
/// to run as root).
pub(crate) fn as_postgres(root: bool, program: &Path) -> Command {
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run_checked(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One test's own database.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// The database name.
    pub name: String,
    /// Its URL (superuser, no password).
    pub url: String,
}

impl TestDatabase {
    /// Connection options for it.
    pub fn options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&self.url).expect("harness URLs parse")
    }

    /// A small pool on it.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(5)
            .connect_with(self.options())
            .await
            .expect("the test database accepts connections")
    }
}

/// A fresh database with every migration applied.
pub async fn migrated_database() -> TestDatabase {
    TEMPLATE_READY
        .get_or_init(|| async {
            create_database(TEMPLATE, None).await;
            let mut conn = PgConnection::connect(&server().url(TEMPLATE))
                .await
                .expect("the template accepts connections");
            migrator::schema::MIGRATOR
                .run(&mut conn)
                .await
                .expect("the migrations apply to an empty database");
            conn.close().await.expect("the template connection closes");
        })
        .await;
    new_database(Some(TEMPLATE)).await
}

/// A fresh database with nothing in it.
pub async fn empty_database() -> TestDatabase {
    new_database(None).await
}

async fn new_database(template: Option<&str>) -> TestDatabase {
    let name = format!(
        "test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    create_database(&name, template).await;
    TestDatabase {
        url: server().url(&name),
        name,
    }
}

async fn create_database(name: &str, template: Option<&str>) {
    // Cloning needs the template to have no other session; serialising the clones guarantees it.
    let _guard = CREATE_LOCK.lock().await;
    let mut conn = PgConnection::connect(&server().url("postgres"))
        .await
        .expect("the test server accepts connections");
    let sql = match template {
        Some(template) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""),
        None => format!("CREATE DATABASE \"{name}\""),
    };
    sqlx::query(AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .expect("the test database can be created");
    conn.close().await.expect("the admin connection closes");
}
