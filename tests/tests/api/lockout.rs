//! Account protection that strangers cannot turn against the owner: per-address and per-account
//! limits, the lockout, known devices and addresses, and logins racing account changes.

use std::time::Duration;

use platform_tests::server::{TestServer, TestUser, spawn_server_with};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use sqlx::Row;

use crate::support::{audit_events, db, json, problem};

/// A server behind one trusted proxy, so each test request can come from an address of its own.
async fn behind_a_proxy(customize: impl FnOnce(&mut auth_server::settings::Settings)) -> TestServer {
    spawn_server_with(|s| {
        s.trusted_proxy_hops = 1;
        customize(s);
    })
    .await
}

async fn login_from(server: &TestServer, address: &str, body: &Value) -> Response {
    server
        .request(Method::POST, "/api/auth/login")
        .header("x-forwarded-for", address)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn register_from(server: &TestServer, address: &str) -> TestUser {
    let email = format!("owner-{}@example.com", platform_tests::server::uuid_like());
    let password = "correct horse battery staple";
    let body = server
        .request(Method::POST, "/api/auth/register")
        .header("x-forwarded-for", address)
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    let body = json(body, 201).await;
    TestUser {
        id: body["user"]["id"].as_str().unwrap().to_owned(),
        email,
        password: password.to_owned(),
        access: body["tokens"]["access_token"].as_str().unwrap().to_owned(),
        refresh: body["tokens"]["refresh_token"].as_str().unwrap().to_owned(),
        session: body["session"]["id"].as_str().unwrap().to_owned(),
    }
}

fn credentials(user: &TestUser, password: &str) -> Value {
    json!({ "email": user.email, "password": password })
}

async fn lock_state(server: &TestServer, user: &TestUser) -> (i32, bool) {
    let row = sqlx::query(
        "SELECT failed_login_count, coalesce(locked_until > now(), false) AS locked FROM users WHERE id = $1::uuid",
    )
    .bind(&user.id)
    .fetch_one(&mut db(server).await)
    .await
    .unwrap();
    (row.get("failed_login_count"), row.get("locked"))
}

#[tokio::test]
async fn strangers_failures_never_lock_the_owner_out_of_a_known_address_or_device() {
    let server = behind_a_proxy(|s| {
        s.lockout.threshold = 3;
        s.lockout.duration = Duration::from_secs(3600);
    })
    .await;
    let owner = register_from(&server, "198.51.100.7").await;
    // The attack the review found: wrong passwords from many addresses.
    for stranger in 1..=9 {
        let address = format!("203.0.113.{stranger}");
        let status = login_from(&server, &address, &credentials(&owner, "wrong horse battery"))
            .await
            .status();
        assert!(status == 401 || status == 429, "{status}");
    }
    assert!(
        lock_state(&server, &owner).await.1,
        "the account is locked for strangers"
    );

    // From the address it registered from, the owner gets in, and receives a device token.
    let home = json(
        login_from(&server, "198.51.100.7", &credentials(&owner, &owner.password)).await,
        200,
    )
    .await;
    let device = home["device_token"].as_str().unwrap().to_owned();
    assert_eq!(device.len(), 43);
    for stranger in 10..=20 {
        let address = format!("203.0.113.{stranger}");
        login_from(&server, &address, &credentials(&owner, "wrong horse battery")).await;
    }
    // On the road, from a new address, with the device token: in.
    let mut with_device = credentials(&owner, &owner.password);
    with_device["device_token"] = json!(device);
    let travelling = json(login_from(&server, "192.0.2.50", &with_device).await, 200).await;
    assert!(
        travelling.get("device_token").is_none(),
        "a known device keeps its token"
    );
    // A new address without it is held back like any stranger, and learns nothing.
    let held = login_from(&server, "192.0.2.51", &credentials(&owner, &owner.password)).await;
    assert!(held.status() == 401 || held.status() == 429, "{}", held.status());
    // Another account's device token does not count for this one.
    let other = register_from(&server, "198.51.100.99").await;
    let theirs = json(
        login_from(&server, "198.51.100.99", &credentials(&other, &other.password)).await,
        200,
    )
    .await;
    let mut borrowed = credentials(&owner, &owner.password);
    borrowed["device_token"] = theirs["device_token"].clone();
    assert_ne!(login_from(&server, "192.0.2.52", &borrowed).await.status(), 200);
}

#[tokio::test]
async fn the_right_password_works_from_anywhere_once_the_lock_runs_out_whatever_strangers_do() {
    let server = behind_a_proxy(|s| {
        s.lockout.threshold = 2;
        s.lockout.duration = Duration::from_secs(2);
        s.rate_limits.login_per_account = "off".parse().unwrap();
    })
    .await;
    let owner = register_from(&server, "198.51.100.7").await;
    for stranger in 1..=2 {
        let address = format!("203.0.113.{stranger}");
        problem(
            login_from(&server, &address, &credentials(&owner, "wrong horse battery")).await,
            401,
        )
        .await;
    }
    let started = std::time::Instant::now();
    // Strangers keep failing during the lock: their failures do not extend it.
    while started.elapsed() < Duration::from_millis(1500) {
        login_from(
            &server,
            "203.0.113.3",
            &credentials(&owner, "wrong horse battery"),
        )
        .await;
        assert_eq!(
            lock_state(&server, &owner).await.0,
            2,
            "failures while locked are not counted"
        );
    }
    let wrong = login_from(&server, "192.0.2.50", &credentials(&owner, "wrong horse battery")).await;
    let locked = login_from(&server, "192.0.2.50", &credentials(&owner, &owner.password)).await;
    assert_eq!(locked.status(), 401);
    assert_eq!(
        locked.text().await.unwrap(),
        wrong.text().await.unwrap(),
        "a locked account answers exactly like a wrong password"
    );
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(started.elapsed())).await;
    let mut answered = 0;
    while login_from(&server, "192.0.2.50", &credentials(&owner, &owner.password))
        .await
        .status()
        != 200
    {
        answered += 1;
        assert!(answered < 100, "the lock never ran out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        lock_state(&server, &owner).await,
        (0, false),
        "success clears the count"
    );
    let events = audit_events(&server).await;
    assert!(events.iter().any(|event| event == "account_locked"), "{events:?}");
}

#[tokio::test]
async fn parallel_wrong_guesses_count_no_further_than_the_threshold() {
    let server = behind_a_proxy(|s| {
        s.lockout.threshold = 5;
        s.rate_limits.login_per_account = "off".parse().unwrap();
        s.rate_limits.login_per_ip = "off".parse().unwrap();
    })
    .await;
    let owner = register_from(&server, "198.51.100.7").await;
    let guesses = (0..30).map(|i| {
        let server = &server;
        let body = credentials(&owner, &format!("wrong horse battery {i}"));
        async move {
            login_from(server, &format!("203.0.113.{i}"), &body)
                .await
                .status()
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    assert!(statuses.iter().all(|status| *status == 401), "{statuses:?}");
    assert_eq!(lock_state(&server, &owner).await, (5, true));
}

#[tokio::test]
async fn the_per_account_limit_counts_the_account_found_however_its_name_is_spelled() {
    let server = behind_a_proxy(|s| {
        s.rate_limits.login_per_account = "3/1m".parse().unwrap();
        s.lockout.threshold = 0;
    })
    .await;
    let owner = register_from(&server, "198.51.100.7").await;
    let (local, domain) = owner.email.split_once('@').unwrap();
    // U+0130 lower-cases to `i̇` in Rust but to `i` in PostgreSQL's lower() under many locales.
    let spellings = [
        owner.email.to_uppercase(),
        format!("{local}@{}", domain.to_uppercase()),
        owner.email.replacen('o', "O", 1),
        owner.email.replacen('o', "\u{130}", 1),
    ];
    for (i, spelling) in spellings.iter().enumerate().take(3) {
        let body = json!({ "email": spelling, "password": "wrong horse battery" });
        problem(login_from(&server, &format!("203.0.113.{i}"), &body).await, 401).await;
    }
    let limited = login_from(
        &server,
        "203.0.113.9",
        &json!({ "email": spellings[3], "password": owner.password }),
    )
    .await;
    assert_ne!(limited.status(), 200, "no spelling gets a fresh bucket");
    let limited = login_from(&server, "203.0.113.10", &credentials(&owner, &owner.password)).await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    problem(limited, 429).await;
    let metrics = server.metrics().await;
    assert!(
        !metrics.contains("auth_server_logins_total{result=\"rate_limited\"} 0"),
        "the refusals are counted: {metrics}"
    );
}

#[tokio::test]
async fn one_ipv6_host_is_one_client_for_the_per_address_limit() {
    let server = behind_a_proxy(|s| s.rate_limits.login_per_ip = "3/1m".parse().unwrap()).await;
    let body = json!({ "email": "nobody@example.com", "password": "wrong horse battery" });
    for host in [
        "2001:db8:1:2::1",
        "2001:db8:1:2::2",
        "2001:db8:1:2:ffff:ffff:ffff:fffe",
    ] {
        problem(login_from(&server, host, &body).await, 401).await;
    }
    problem(login_from(&server, "2001:db8:1:2::abcd", &body).await, 429).await;
    problem(login_from(&server, "2001:db8:1:3::1", &body).await, 401).await;
}

#[tokio::test]
async fn a_login_racing_a_password_change_never_keeps_a_session() {
    let server = behind_a_proxy(|s| {
        s.bcrypt_cost = 8;
        s.rate_limits.password_check_per_user = "off".parse().unwrap();
    })
    .await;
    let mut owner = register_from(&server, "198.51.100.7").await;
    let mut survived = 0;
    for round in 0..12 {
        let new_password = format!("another horse battery {round}");
        let old = credentials(&owner, &owner.password);
        let login = login_from(&server, "198.51.100.7", &old);
        let change = server
            .request(Method::POST, "/api/auth/change-password")
            .header("x-forwarded-for", "198.51.100.7")
            .bearer_auth(&owner.access)
            .json(&json!({ "current_password": owner.password, "new_password": new_password }))
            .send();
        let (login, change) = tokio::join!(login, change);
        let changed = json(change.unwrap(), 200).await;
        if login.status() == 200 {
            let logged_in: Value = login.json().await.unwrap();
            let refresh = server
                .post(
                    "/api/auth/refresh",
                    &json!({ "refresh_token": logged_in["tokens"]["refresh_token"] }),
                )
                .await;
            let access = logged_in["tokens"]["access_token"].as_str().unwrap();
            if refresh.status() != 401 || server.get_auth("/api/auth/me", access).await.status() != 401 {
                survived += 1;
            }
        }
        owner.password = new_password;
        owner.access = changed["tokens"]["access_token"].as_str().unwrap().to_owned();
    }
    assert_eq!(
        survived, 0,
        "a login with the old password kept a working session"
    );
}

#[tokio::test]
async fn every_session_an_account_change_ends_is_revoked_by_sid() {
    // A refresh that committed just before the change may mint a token dated after the user's
    // revocation instant; only the session's own revocation covers that token.
    let server = behind_a_proxy(|s| s.rate_limits.password_check_per_user = "off".parse().unwrap()).await;
    let keys = auth_core::revocation::RedisKeys::default();
    let sid_revoked = async |session: &str| -> bool {
        redis::cmd("EXISTS")
            .arg(keys.revoked(auth_core::revocation::RevocationKind::Session, session))
            .query_async(&mut server.redis().await)
            .await
            .unwrap()
    };
    let owner = register_from(&server, "198.51.100.7").await;
    let changed = json(
        server
            .post_auth(
                "/api/auth/change-password",
                &owner.access,
                &json!({ "current_password": owner.password, "new_password": "another horse battery" }),
            )
            .await,
        200,
    )
    .await;
    assert!(sid_revoked(&owner.session).await, "change-password");
    let kept = changed["tokens"]["access_token"].as_str().unwrap();
    let session = changed["session"]["id"].as_str().unwrap();
    assert_eq!(
        server
            .post_auth("/api/auth/logout-all", kept, &json!({}))
            .await
            .status(),
        204
    );
    assert!(sid_revoked(session).await, "logout-all");
    let doomed = register_from(&server, "198.51.100.8").await;
    let deleted = server
        .request(Method::DELETE, "/api/users/account")
        .bearer_auth(&doomed.access)
        .json(&json!({ "password": doomed.password }))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert!(sid_revoked(&doomed.session).await, "account deletion");
}

#[tokio::test]
async fn password_confirmations_are_rate_limited_per_account() {
    let server = behind_a_proxy(|s| {
        s.rate_limits.password_check_per_user = "2/15m".parse().unwrap();
    })
    .await;
    let owner = register_from(&server, "198.51.100.7").await;
    let wrong = json!({ "current_password": "wrong horse battery", "new_password": "another horse battery" });
    for _ in 0..2 {
        problem(
            server
                .post_auth("/api/auth/change-password", &owner.access, &wrong)
                .await,
            422,
        )
        .await;
    }
    problem(
        server
            .post_auth("/api/auth/change-password", &owner.access, &wrong)
            .await,
        429,
    )
    .await;
    let delete = server
        .request(Method::DELETE, "/api/users/account")
        .bearer_auth(&owner.access)
        .json(&json!({ "password": owner.password }))
        .send()
        .await
        .unwrap();
    problem(delete, 429).await;
}
