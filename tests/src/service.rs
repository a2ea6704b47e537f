//! Starting the long-running binaries (auth-server, token-verifier) as real processes.

use std::process::Command;
use std::time::Duration;

use tokio::process::Child;

use crate::command::{Finished, command};
use crate::process::{free_port, wait_for_status};

/// A running service binary with its admin listener on a random port.
pub struct RunningService {
    child: Option<Child>,
    /// `http://127.0.0.1:{admin port}`.
    pub admin_url: String,
}

impl RunningService {
    /// Starts `name` with `env` plus `{prefix}ADMIN_LISTEN` on a free port, and waits until its
    /// admin listener answers `/health/live`.
    pub async fn start(name: &str, prefix: &str, env: &[(&str, &str)]) -> Self {
        let admin_port = free_port();
        let admin_key = format!("{prefix}ADMIN_LISTEN");
        let admin_listen = format!("127.0.0.1:{admin_port}");
        let mut full: Vec<(&str, &str)> = vec![(&admin_key, &admin_listen)];
        full.extend_from_slice(env);
        let child = command(name, &[], &full).spawn().expect("the service starts");
        let service = Self {
            child: Some(child),
            admin_url: format!("http://{admin_listen}"),
        };
        service.wait_for_fast("/health/live", 200).await;
        service
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Polls an admin path until it answers `status`.
    pub async fn wait_for(&self, path: &str, status: u16) {
        self.poll(path, status, Duration::from_millis(25)).await;
    }

    /// Polls every millisecond, to time start-up.
    pub async fn wait_for_fast(&self, path: &str, status: u16) {
        self.poll(path, status, Duration::from_millis(1)).await;
    }

    async fn poll(&self, path: &str, status: u16, every: Duration) {
        wait_for_status(&format!("{}{path}", self.admin_url), status, every).await;
    }

    /// Kills the process (SIGKILL), as a crash or an OOM kill would.
    pub async fn kill(mut self) {
        let mut child = self.child.take().expect("not yet terminated");
        child.kill().await.expect("the service can be killed");
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(mut self) -> Finished {
        let child = self.child.take().expect("not yet terminated");
        let pid = child.id().expect("the service is running");
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("the service exits after SIGTERM")
            .expect("the service's output is readable");
        Finished {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}
