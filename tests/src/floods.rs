//! Floods a hostile client sends, shared by the tests and the benchmarks.

use std::time::Duration;

use serde_json::json;

/// `clients` logins with wrong passwords to the API at `api`, each client giving up after
/// `patience`; returns once every one of them has given up or been answered.
pub async fn impatient_login_flood(api: &str, clients: usize, patience: Duration) {
    let impatient = reqwest::Client::builder()
        .timeout(patience)
        .build()
        .expect("an HTTP client");
    let flood = (0..clients).map(|i| {
        let client = impatient.clone();
        let body = json!({ "email": format!("flood-{i}@example.com"), "password": "wrong horse battery" });
        async move {
            client
                .post(format!("{api}/api/auth/login"))
                .json(&body)
                .send()
                .await
        }
    });
    futures_util::future::join_all(flood).await;
}
