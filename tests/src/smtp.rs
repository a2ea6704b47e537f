//! A real SMTP server for the mail tests: aiosmtpd (PyPI, installed by `scripts/test` through
//! `ensure_mail_tools`) running `tests/support/smtp_sink.py`, which writes each accepted message,
//! parsed, to a JSON file the test reads.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;

use crate::process::{find_binary, free_port, reap_on_exit, spawn_logged, wait_until};

const HINT: &str = "run scripts/test (ensure_mail_tools in scripts/deps.sh installs aiosmtpd)";

/// A running SMTP server and the messages it received.
pub struct SmtpServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Envelope recipients.
    pub to: Vec<String>,
    /// The subject.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

impl Mail {
    /// The token of the first link in the text part.
    pub fn token(&self) -> String {
        let start = self.text.find("token=").expect("a link with a token") + "token=".len();
        self.text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    }
}

fn python() -> PathBuf {
    let tools = std::env::var_os("AUTH_PLATFORM_TOOLS").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/auth-platform"),
        PathBuf::from,
    );
    find_binary("python", &[tools.join("mail-venv/bin")], HINT)
}

impl SmtpServer {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a server on `port` (to bring one up where a client already expects it).
    pub fn start_on(port: u16) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("auth-platform-smtp-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        std::fs::create_dir_all(dir.join("mail")).expect("a mail directory");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/smtp_sink.py");
        let log = dir.join("smtp.log");
        let child = spawn_logged(
            Command::new(python())
                .arg(script)
                .args(["127.0.0.1", &port.to_string()])
                .arg(dir.join("mail")),
            &log,
        );
        reap_on_exit(child.id(), "TERM", &dir);
        wait_until("the SMTP server", Duration::from_secs(20), &log, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self {
            port,
            dir,
            child: Some(child),
        }
    }

    /// Every message received so far, in order.
    pub fn mails(&self) -> Vec<Mail> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("mail"))
            .expect("the mail directory")
            .map(|entry| entry.expect("an entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| {
                let record: Value =
                    serde_json::from_slice(&std::fs::read(path).expect("a message")).expect("JSON");
                let text = |key: &str| record[key].as_str().unwrap_or_default().to_owned();
                Mail {
                    to: record["to"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|to| to.as_str().map(str::to_owned))
                        .collect(),
                    subject: text("subject"),
                    text: text("text"),
                    html: text("html"),
                }
            })
            .collect()
    }

    /// Waits until `count` messages have arrived for `to`, and returns them.
    pub async fn wait_for(&self, to: &str, count: usize, within: Duration) -> Vec<Mail> {
        let started = std::time::Instant::now();
        loop {
            let mails: Vec<Mail> = self
                .mails()
                .into_iter()
                .filter(|mail| mail.to.iter().any(|rcpt| rcpt.eq_ignore_ascii_case(to)))
                .collect();
            if mails.len() >= count {
                return mails;
            }
            assert!(
                started.elapsed() < within,
                "{count} mail(s) to {to} within {within:?}; got {}",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server (its port stays free for [`SmtpServer::start_on`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}
