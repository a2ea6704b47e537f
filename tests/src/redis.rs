//! A real Redis for the tests: one shared server per test process with a database number per test,
//! and dedicated servers for tests that stop or restart Redis.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::process::{find_binary, free_port, reap_on_exit, redis_command, spawn_logged, wait_until};

const DATABASES: u32 = 1024;
const INSTALL_HINT: &str = "install Redis (apt-get install -y redis-server)";

static SHARED: OnceLock<RedisServer> = OnceLock::new();
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(0);

/// A `redis-server` process on loopback.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    // Arguments beyond the defaults (TLS, replication).
    extra: Vec<String>,
}

/// One test's own Redis database on the shared server.
#[derive(Debug, Clone)]
pub struct TestRedis {
    /// `redis://127.0.0.1:{port}/{db}`.
    pub url: String,
    /// The server's port.
    pub port: u16,
    /// The database number.
    pub db: u32,
}

/// A fresh, empty Redis database of the shared server.
pub fn test_redis() -> TestRedis {
    let server = SHARED.get_or_init(RedisServer::start);
    let db = NEXT_DATABASE.fetch_add(1, Ordering::Relaxed);
    assert!(
        db < DATABASES,
        "more than {DATABASES} tests in one process need Redis"
    );
    TestRedis {
        url: format!("redis://127.0.0.1:{}/{db}", server.port),
        port: server.port,
        db,
    }
}

impl RedisServer {
    /// Starts a dedicated server (stopped when dropped, and in any case when the process ends).
    pub fn start() -> Self {
        Self::start_with(Vec::new())
    }

    fn start_with(extra: Vec<String>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("auth-platform-redis-")
            .tempdir()
            .expect("a temporary directory can be created")
            .keep();
        let mut server = Self {
            port: free_port(),
            dir,
            child: None,
            extra,
        };
        server.launch();
        server
    }

    /// Starts a dedicated server replicating `primary`, and waits until its first sync is done.
    pub fn start_replica_of(primary: &RedisServer) -> Self {
        let replica = Self::start_with(vec![
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            primary.port.to_string(),
        ]);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !replicating(replica.port) {
            assert!(std::time::Instant::now() < deadline, "the replica never synced");
            std::thread::sleep(Duration::from_millis(50));
        }
        replica
    }

    /// Starts a dedicated one-node Redis Cluster owning every hash slot: commands behave as on any
    /// cluster node, so a command naming keys of two slots fails with `CROSSSLOT`.
    pub fn start_cluster_node() -> Self {
        let server = Self::start_with(vec![
            "--cluster-enabled".to_owned(),
            "yes".to_owned(),
            "--cluster-config-file".to_owned(),
            "nodes.conf".to_owned(),
        ]);
        let added = redis_command(server.port, "CLUSTER ADDSLOTSRANGE 0 16383");
        assert_eq!(added.ok().as_deref(), Some("+OK"), "the node takes every slot");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cluster_ok(server.port) {
            assert!(
                std::time::Instant::now() < deadline,
                "the one-node cluster never became ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Starts a dedicated server that also listens with TLS on `tls_port`, with the PKI's server
    /// certificate, requiring a client certificate from its CA when `client_certificates`. (The
    /// plain port stays open for the harness's own readiness check.)
    pub fn start_tls(pki: &crate::tls::TestPki, tls_port: u16, client_certificates: bool) -> Self {
        let path = |name: &str| pki.file(name).display().to_string();
        Self::start_with(vec![
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".to_owned(),
            path("server.pem"),
            "--tls-key-file".to_owned(),
            path("server.key"),
            "--tls-ca-cert-file".to_owned(),
            path("ca.pem"),
            "--tls-auth-clients".to_owned(),
            if client_certificates { "yes" } else { "no" }.to_owned(),
        ])
    }

    fn launch(&mut self) {
        let binary = find_binary("redis-server", &[], INSTALL_HINT);
        let log = self.dir.join("redis.log");
        let child = spawn_logged(
            Command::new(binary)
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .args(["--databases", &DATABASES.to_string()])
                .args(&self.extra)
                .arg("--dir")
                .arg(&self.dir),
            &log,
        );
        reap_on_exit(child.id(), "TERM", &self.dir);
        self.child = Some(child);
        let port = self.port;
        wait_until("Redis", Duration::from_secs(10), &log, || {
            redis_command(port, "PING").is_ok_and(|reply| reply == "+PONG")
        });
    }

    /// The plain port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}/{db}`.
    pub fn url(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// Kills the server (as a crash would), keeping its port for [`RedisServer::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let status = Command::new("kill").args([signal, &pid.to_string()]).status();
        assert!(status.is_ok_and(|status| status.success()), "kill {signal} {pid}");
    }

    /// Starts the server again on the same port, empty (it never persists).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cluster_ok(port: u16) -> bool {
    info_contains(port, &["CLUSTER", "INFO"], "cluster_state:ok")
}

fn replicating(port: u16) -> bool {
    info_contains(port, &["INFO", "replication"], "master_link_status:up")
}

fn info_contains(port: u16, command: &[&str], line: &str) -> bool {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|client| client.get_connection())
        .and_then(|mut conn| {
            redis::cmd(command[0])
                .arg(&command[1..])
                .query::<String>(&mut conn)
        })
        .is_ok_and(|info| info.contains(line))
}

/// Marks the revocation state as restored under the default namespace, the way the auth server
/// does after a restore, for tests that write the stream themselves without a server.
pub async fn mark_restored(conn: &mut redis::aio::MultiplexedConnection) {
    use auth_core::revocation::RedisKeys;
    use auth_core::revocation::epoch::{RestoreClaim, begin_restore, commit_restore};
    let keys = RedisKeys::default();
    if let RestoreClaim::Restore(token) = begin_restore(conn, &keys, None).await.expect("Redis answers") {
        assert!(commit_restore(conn, &keys, &token).await.expect("Redis answers"));
    }
}
