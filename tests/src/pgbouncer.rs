//! A real PgBouncer (Debian's `pgbouncer`) in front of the shared PostgreSQL.

use std::process::Command;
use std::time::Duration;

use crate::postgres::{as_postgres, server};
use crate::process::{find_binary, free_port, is_root, reap_on_exit, spawn_logged, wait_until};

/// A `pgbouncer` process on loopback (stopped when the test process ends).
pub struct PgBouncer {
    port: u16,
}

impl PgBouncer {
    /// Starts one pooling in `mode` (`session` or `transaction`) for every database.
    pub fn start(mode: &str) -> Self {
        let binary = find_binary(
            "pgbouncer",
            &["/usr/sbin".into()],
            "install PgBouncer (apt-get install -y pgbouncer)",
        );
        let dir = tempfile::Builder::new()
            .prefix("auth-platform-pgbouncer-")
            .tempdir()
            .expect("a temporary directory can be created")
            .keep();
        let port = free_port();
        let config = format!(
            "[databases]\n* = host=127.0.0.1 port={postgres}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {dir}/users.txt\npool_mode = {mode}\n\
             max_client_conn = 500\ndefault_pool_size = 20\n\
             ignore_startup_parameters = extra_float_digits\npidfile = {dir}/pgbouncer.pid\n",
            postgres = server().port(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), config).expect("the configuration can be written");
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").expect("the user list can be written");
        let root = is_root();
        if root {
            let status = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&dir)
                .status();
            assert!(status.is_ok_and(|status| status.success()), "chown of {dir:?}");
        }
        let log = dir.join("pgbouncer.log");
        let child = spawn_logged(as_postgres(root, &binary).arg(dir.join("pgbouncer.ini")), &log);
        wait_until("PgBouncer", Duration::from_secs(10), &log, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        // PgBouncer's own pid (not runuser's).
        drop(child);
        let pid = std::fs::read_to_string(dir.join("pgbouncer.pid"))
            .ok()
            .and_then(|content| content.trim().parse().ok())
            .expect("a running PgBouncer writes its pid");
        reap_on_exit(pid, "TERM", &dir);
        Self { port }
    }

    /// The URL of database `name` through this PgBouncer.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}
