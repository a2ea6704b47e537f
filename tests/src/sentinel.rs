//! Redis Sentinel for the tests: a primary, a replica and three sentinels (`redis-server
//! --sentinel`, the same binary Debian's `redis-sentinel` runs), on loopback, quick to fail over.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::RedisServer;
use crate::process::{find_binary, free_port, reap_on_exit, spawn_logged, wait_until};

/// The master's name the sentinels monitor.
pub const MASTER: &str = "platform";

/// A primary and a replica watched by three sentinels (quorum two).
pub struct SentinelGroup {
    /// The primary at start.
    pub primary: RedisServer,
    /// The replica at start.
    pub replica: RedisServer,
    sentinels: Vec<(u16, Child)>,
}

impl SentinelGroup {
    /// Starts the servers and the sentinels and waits until every sentinel knows the replica and
    /// the other sentinels (before that, a failover cannot happen).
    pub fn start() -> Self {
        let primary = RedisServer::start();
        let replica = RedisServer::start_replica_of(&primary);
        let sentinels = (0..3).map(|_| start_sentinel(primary.port())).collect();
        let group = Self {
            primary,
            replica,
            sentinels,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !group.sentinels.iter().all(|(port, _)| knows_everyone(*port)) {
            assert!(
                Instant::now() < deadline,
                "the sentinels did not discover each other"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        group
    }

    /// The sentinels' addresses, as the programs are given them.
    pub fn addresses(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect()
    }

    /// The port of the server the sentinels name as primary now.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|(port, _)| {
            let (_, primary): (String, u16) = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER)
                .query(&mut connect(*port)?)
                .ok()?;
            Some(primary)
        })
    }
}

fn connect(port: u16) -> Option<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .ok()?
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()
}

fn knows_everyone(port: u16) -> bool {
    let Some(mut conn) = connect(port) else {
        return false;
    };
    let count = |what: &str, conn: &mut redis::Connection| {
        redis::cmd("SENTINEL")
            .arg(what)
            .arg(MASTER)
            .query::<Vec<redis::Value>>(conn)
            .map_or(0, |list| list.len())
    };
    count("replicas", &mut conn) == 1 && count("sentinels", &mut conn) == 2
}

fn start_sentinel(primary: u16) -> (u16, Child) {
    let port = free_port();
    let dir: PathBuf = tempfile::Builder::new()
        .prefix("auth-platform-sentinel-")
        .tempdir()
        .expect("a temporary directory can be created")
        .keep();
    // Sentinel rewrites its configuration file as it learns the topology, so it must be writable.
    let config = dir.join("sentinel.conf");
    std::fs::write(
        &config,
        format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
             sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n\
             sentinel down-after-milliseconds {MASTER} 1000\n\
             sentinel failover-timeout {MASTER} 5000\n\
             sentinel parallel-syncs {MASTER} 1\n",
            dir = dir.display()
        ),
    )
    .expect("the sentinel's configuration can be written");
    let binary = find_binary(
        "redis-server",
        &[],
        "install Redis (apt-get install -y redis-server)",
    );
    let log = dir.join("sentinel.log");
    let child = spawn_logged(Command::new(binary).arg(&config).arg("--sentinel"), &log);
    reap_on_exit(child.id(), "TERM", &dir);
    wait_until("Redis Sentinel", Duration::from_secs(10), &log, || {
        connect(port).is_some()
    });
    (port, child)
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
