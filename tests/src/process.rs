//! Starting server processes for tests, and making sure they die with the test process.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The reapers' pipes: held open for the life of the process and never written to. When the test
/// process exits (normally, by panic or by a signal) the kernel closes them, and each reaper, which
/// was blocked reading its pipe, kills its server and deletes its directory.
static REAPER_PIPES: Mutex<Vec<ChildStdin>> = Mutex::new(Vec::new());

/// Arranges for `pid` to be killed with `signal` and `dir` to be removed once this process ends.
pub fn reap_on_exit(pid: u32, signal: &str, dir: &Path) {
    let script = format!(
        "cat >/dev/null; kill -{signal} {pid} 2>/dev/null; \
         for _ in $(seq 50); do kill -0 {pid} 2>/dev/null || break; sleep 0.1; done; \
         kill -KILL {pid} 2>/dev/null; rm -rf '{}'",
        dir.display()
    );
    // Never waited for: the reaper is meant to outlive this process.
    #[allow(clippy::zombie_processes)]
    let mut reaper = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so a Ctrl-C aimed at the test run does not kill it before it reaps.
        .process_group(0)
        .spawn()
        .expect("sh starts");
    let pipe = reaper.stdin.take().expect("the reaper's stdin is piped");
    REAPER_PIPES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(pipe);
}

/// A free TCP port on loopback (the listener is closed again, so a server can take it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("an ephemeral loopback port is available")
        .port()
}

/// Whether we run as root, where PostgreSQL refuses to start and must run as `postgres`.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Finds `name` on `PATH` or in `extra` directories, or panics saying what to install.
pub fn find_binary(name: &str, extra: &[PathBuf], install_hint: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    extra
        .iter()
        .cloned()
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed: {install_hint}"))
}

/// Spawns a server with its output going to `log` and in its own process group.
pub fn spawn_logged(command: &mut Command, log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("the log file can be created");
    let file_err = file.try_clone().expect("the log file handle can be cloned");
    command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file_err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"))
}

/// Polls `probe` until it succeeds, or panics with the server's log after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, log: &Path, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !probe() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} did not become ready within {timeout:?}; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Polls `url` until it answers `status` (at most ten seconds), or panics.
pub async fn wait_for_status(url: &str, status: u16, every: Duration) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(url).send().await
            && response.status().as_u16() == status
        {
            return;
        }
        tokio::time::sleep(every).await;
    }
    panic!("{url} never answered {status}");
}

/// The body of `GET url`, as text.
pub async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
        .text()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
}

/// Sends one inline Redis command and returns the first reply line (`+PONG`, `:1`, …).
pub fn redis_command(port: u16, command: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{command}\r\n").as_bytes())?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte)? == 1 && byte[0] != b'\n' {
        reply.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
}

/// Serves `endpoint` on `listener` with the platform's own HTTP server (as the programs do) until
/// the returned task is dropped or aborted.
pub fn serve_in_background<E>(listener: tokio::net::TcpListener, endpoint: E) -> tokio::task::JoinHandle<()>
where
    E: poem::IntoEndpoint + Send + 'static,
    E::Endpoint: 'static,
{
    tokio::spawn(async move {
        let registry = prometheus::Registry::new();
        let [metrics] =
            auth_core::server::ListenerMetrics::register(&registry, ["test"]).expect("fresh metrics");
        let _ = auth_core::server::serve(
            listener,
            endpoint,
            auth_core::server::ConnectionLimits::default(),
            metrics,
            std::future::pending::<()>(),
            None,
        )
        .await;
    })
}
