//! Running the workspace's binaries the way a user or Kubernetes would: a clean environment, a
//! command line, an exit code and output to inspect.

use std::process::Stdio;

use crate::binaries::binary;

/// A finished run of a binary.
#[derive(Debug)]
pub struct Finished {
    /// The exit code (`-1` when killed by a signal).
    pub code: i32,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl Finished {
    /// The `error: …` lines on stderr.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|line| line.starts_with("error: "))
            .collect()
    }

    /// The JSON log lines on stderr.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.stderr
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

/// A command for a workspace binary with an empty environment plus `env` (and `PATH`).
pub fn command(name: &str, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary(name));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs a workspace binary to completion.
pub async fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let output = command(name, args, env)
        .output()
        .await
        .unwrap_or_else(|error| panic!("cannot run {name}: {error}"));
    Finished {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
