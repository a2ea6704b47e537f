//! A real nginx (Debian's package) doing `auth_request` against a verifier, configured exactly as
//! the README tells users to, in front of an app.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use crate::process::{find_binary, free_port, is_root, reap_on_exit, spawn_logged, wait_until};

/// A running nginx, stopped when dropped.
pub struct Nginx {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    _dir: PathBuf,
}

/// The README's `location` blocks for an app at `app` and a verifier at `verifier` (`host:port`).
pub fn readme_locations(app: SocketAddr, verifier: &str) -> String {
    format!(
        r#"
    location / {{
      auth_request /_verify;
      auth_request_set $auth_user $upstream_http_x_auth_user_id;
      auth_request_set $auth_email $upstream_http_x_auth_email;
      auth_request_set $auth_roles $upstream_http_x_auth_roles;
      proxy_set_header X-Auth-User-Id $auth_user;
      proxy_set_header X-Auth-Email $auth_email;
      proxy_set_header X-Auth-Roles $auth_roles;
      proxy_pass http://{app};
    }}
    location = /_verify {{
      internal;
      proxy_pass http://{verifier}/verify;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Forwarded-Uri "";
      proxy_set_header X-Forwarded-Method "";
    }}
"#
    )
}

impl Nginx {
    /// Starts nginx with the README's configuration in front of `app`, asking `verifier`.
    pub fn start(app: SocketAddr, verifier: &str) -> Self {
        let nginx = find_binary(
            "nginx",
            &["/usr/sbin".into()],
            "install nginx (apt-get install -y nginx)",
        );
        let dir = tempfile::Builder::new()
            .prefix("auth-platform-nginx-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        let port = free_port();
        let user = if is_root() { "user root;" } else { "" };
        let config = format!(
            r#"{user}
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
{locations}
  }}
}}
"#,
            dir = dir.display(),
            locations = readme_locations(app, verifier),
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config).expect("the configuration is written");
        let test = Command::new(&nginx)
            .arg("-t")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&dir)
            .output()
            .expect("nginx runs");
        assert!(
            test.status.success(),
            "nginx -t: {}",
            String::from_utf8_lossy(&test.stderr)
        );
        let child = spawn_logged(
            Command::new(&nginx).arg("-c").arg(&conf).arg("-p").arg(&dir),
            &dir.join("stdout.log"),
        );
        reap_on_exit(child.id(), "QUIT", &dir);
        wait_until("nginx", Duration::from_secs(10), &dir.join("error.log"), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self {
            port,
            child,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
