//! `echo-app`: a tiny app for the container tests, standing in for the chart's demo image (it
//! takes the same `--port N`): it answers every request with the path and the identity headers it
//! received, as JSON.

use poem::listener::TcpListener;
use poem::web::Json;
use poem::{Request, Route, Server, handler};
use serde_json::json;

#[handler]
fn echo(req: &Request) -> Json<serde_json::Value> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Json(json!({
        "path": req.uri().path(),
        "user": header("x-auth-user-id"),
        "email": header("x-auth-email"),
        "roles": header("x-auth-roles"),
    }))
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port = args
        .iter()
        .position(|arg| arg == "--port")
        .and_then(|at| args.get(at + 1))
        .map_or("8080", String::as_str)
        .to_owned();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(Server::new(TcpListener::bind(format!("0.0.0.0:{port}"))).run(Route::new().at("/*", echo)))
}
