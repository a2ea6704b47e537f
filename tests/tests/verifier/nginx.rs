//! Real nginx (Debian's package) doing `auth_request` against the verifier.

use std::process::Command;
use std::time::Duration;

use platform_tests::process::{find_binary, free_port, reap_on_exit, spawn_logged, wait_until};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Json;
use poem::{Request, Route, Server, handler};
use serde_json::{Value, json};

use crate::support::fixture;

#[handler]
fn whoami(req: &Request) -> Json<Value> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Json(
        json!({ "user": header("x-auth-user-id"), "email": header("x-auth-email"), "roles": header("x-auth-roles") }),
    )
}

#[tokio::test]
async fn nginx_auth_request_passes_the_identity_and_never_a_forged_one() {
    let fx = fixture().await;
    let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
    let app = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    tokio::spawn(Server::new_with_acceptor(acceptor).run(Route::new().at("/*", whoami)));

    let nginx = find_binary(
        "nginx",
        &["/usr/sbin".into()],
        "install nginx (apt-get install -y nginx-light)",
    );
    let dir = tempfile::Builder::new()
        .prefix("auth-platform-nginx-")
        .tempdir()
        .unwrap()
        .keep();
    let port = free_port();
    let verifier = fx.verifier.url.trim_start_matches("http://");
    let user = if platform_tests::process::is_root() {
        "user root;"
    } else {
        ""
    };
    let config = format!(
        r#"{user}
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
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
    }}
  }}
}}
"#,
        dir = dir.display()
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config).unwrap();
    let test = Command::new(&nginx)
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&test.stderr)
    );
    let mut child = spawn_logged(
        Command::new(&nginx).arg("-c").arg(&conf).arg("-p").arg(&dir),
        &dir.join("stdout.log"),
    );
    reap_on_exit(child.id(), "QUIT", &dir);
    wait_until("nginx", Duration::from_secs(10), &dir.join("error.log"), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/orders");
    let seen: Value = client
        .get(&url)
        .bearer_auth(&fx.user.access)
        .header("x-auth-user-id", "00000000-0000-0000-0000-000000000000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["user"], fx.user.id.as_str());
    assert_eq!(seen["email"], fx.user.email.as_str());
    assert_eq!(seen["roles"], "user");

    let anonymous = client
        .get(&url)
        .header("x-auth-user-id", "00000000-0000-0000-0000-000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "nginx refuses without reaching the app");

    fx.server
        .post_auth("/api/auth/logout", &fx.user.access, &json!({}))
        .await;
    fx.verifier
        .wait_for_status(&fx.user.access, 401, Duration::from_secs(5))
        .await;
    let revoked = client
        .get(&url)
        .bearer_auth(&fx.user.access)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 401);
    let _ = child.kill();
    let _ = child.wait();
}
