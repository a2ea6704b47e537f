//! Password reset and address verification through a real SMTP server (aiosmtpd): the mail is
//! read as it arrived and its link followed.

use std::time::Duration;

use platform_tests::server::{TestServer, spawn_server_with};
use platform_tests::smtp::{Mail, SmtpServer};
use serde_json::{Value, json};

use crate::support::{audit_events, db, fields, json, login_status, problem, verified};

const WITHIN: Duration = Duration::from_secs(20);
const NEW_PASSWORD: &str = "a brand new passphrase";

/// Mail to the test SMTP server on `port`, polled often, links on https://app.example.com.
fn mail_to(settings: &mut auth_server::settings::Settings, port: u16) {
    settings.mail.smtp_host = Some("127.0.0.1".to_owned());
    settings.mail.smtp_port = port;
    settings.mail.smtp_security = auth_server::mail::SmtpSecurity::None;
    settings.mail.poll_interval = Duration::from_millis(50);
    settings.mail.link_base_url = "https://app.example.com/".to_owned();
}

async fn server_mailing_to(port: u16) -> TestServer {
    spawn_server_with(|settings| mail_to(settings, port)).await
}

async fn mails_with(smtp: &SmtpServer, to: &str, subject: &str, count: usize) -> Vec<Mail> {
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let mails: Vec<Mail> = smtp
            .wait_for(to, 0, WITHIN)
            .await
            .into_iter()
            .filter(|mail| mail.subject == subject)
            .collect();
        if mails.len() >= count {
            return mails;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} \"{subject}\" mail(s) to {to}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reset_mail(smtp: &SmtpServer, to: &str, count: usize) -> Mail {
    mails_with(smtp, to, "Reset your password", count)
        .await
        .pop()
        .unwrap()
}

async fn forgot(server: &TestServer, email: &str) -> reqwest::Response {
    server
        .post("/api/auth/forgot-password", &json!({ "email": email }))
        .await
}

async fn reset(server: &TestServer, token: &str, password: &str) -> reqwest::Response {
    server
        .post(
            "/api/auth/reset-password",
            &json!({ "token": token, "new_password": password }),
        )
        .await
}

async fn outbox_outcomes(server: &TestServer) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT recipient, outcome FROM mail_outbox ORDER BY created_at")
        .fetch_all(&mut db(server).await)
        .await
        .unwrap()
}

/// Waits until the worker has handled every outbox row.
async fn wait_until_outbox_drains(server: &TestServer) {
    let deadline = std::time::Instant::now() + WITHIN;
    while outbox_outcomes(server)
        .await
        .iter()
        .any(|(_, outcome)| outcome.is_none())
    {
        assert!(std::time::Instant::now() < deadline, "the outbox drains");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_forgotten_password_is_reset_through_the_mailed_link_and_every_session_ends() {
    let smtp = SmtpServer::start();
    let server = server_mailing_to(smtp.port).await;
    let user = server.new_user().await;
    let accepted = json(forgot(&server, &user.email).await, 202).await;

    let mail = reset_mail(&smtp, &user.email, 1).await;
    assert!(
        mail.text
            .contains("https://app.example.com/reset-password?token="),
        "the link is built from the configured base URL: {}",
        mail.text
    );
    let token = mail.token();
    assert_eq!(token.len(), 43, "256 bits, base64url");
    assert!(
        mail.html
            .contains(&format!("https://app.example.com/reset-password?token={token}"))
    );
    assert!(!mail.text.contains(&user.password) && !mail.html.contains(&user.password));
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM password_reset_tokens")
        .fetch_all(&mut db(&server).await)
        .await
        .unwrap();
    assert!(
        stored
            .iter()
            .all(|hash| hash.len() == 32 && !String::from_utf8_lossy(hash).contains(&token)),
        "stored hashed"
    );

    let response = reset(&server, &token, NEW_PASSWORD).await;
    assert_eq!(response.status(), 204);
    assert_eq!(login_status(&server, &user.email, &user.password).await, 401);
    assert_eq!(login_status(&server, &user.email, NEW_PASSWORD).await, 200);
    let me = server.get_auth("/api/auth/me", &user.access).await;
    assert_eq!(me.status(), 401, "the tokens issued before the reset are revoked");
    let refreshed = server
        .post("/api/auth/refresh", &json!({ "refresh_token": user.refresh }))
        .await;
    assert_eq!(refreshed.status(), 401, "so are the sessions");

    // Single use.
    let again = problem(reset(&server, &token, "yet another passphrase").await, 422).await;
    assert_eq!(fields(&again), ["token"]);
    assert_eq!(login_status(&server, &user.email, NEW_PASSWORD).await, 200);
    let events = audit_events(&server).await;
    for event in ["password_reset_requested", "password_reset"] {
        assert!(events.iter().any(|e| e == event), "{event} audited: {events:?}");
    }
    assert_eq!(
        mails_sent(&server).await,
        [
            (user.id.clone(), "email_verification".to_owned()),
            (user.id.clone(), "password_reset".to_owned())
        ],
        "which account was mailed what"
    );
    // The reset proved the address.
    let login: Value = json(
        server
            .post(
                "/api/auth/login",
                &json!({ "email": user.email, "password": NEW_PASSWORD }),
            )
            .await,
        200,
    )
    .await;
    let token = login["tokens"]["access_token"].as_str().unwrap();
    assert!(verified(&server, token).await.claims.email_verified);
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .starts_with("If an account uses this address")
    );
}

#[tokio::test]
async fn the_answer_is_the_same_for_an_unknown_address_and_nothing_is_mailed_to_it() {
    let smtp = SmtpServer::start();
    let server = server_mailing_to(smtp.port).await;
    let user = server.new_user().await;
    let stranger = "nobody-here@example.com";
    let unknown = forgot(&server, stranger).await;
    let (unknown_status, unknown_body) = (unknown.status(), unknown.text().await.unwrap());
    let known = forgot(&server, &user.email).await;
    assert_eq!(
        (known.status(), known.text().await.unwrap()),
        (unknown_status, unknown_body)
    );
    assert_eq!(unknown_status, 202);
    reset_mail(&smtp, &user.email, 1).await;
    // The stranger's request was handled before the user's (oldest first): skipped, not mailed.
    assert!(
        smtp.mails()
            .iter()
            .all(|mail| !mail.to.iter().any(|to| to == stranger))
    );
    let outcomes = outbox_outcomes(&server).await;
    assert!(
        outcomes.contains(&(stranger.to_owned(), Some("skipped".to_owned()))),
        "{outcomes:?}"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("auth_server_mails_total{kind=\"password_reset\",outcome=\"skipped\"} 1"),
        "{metrics}"
    );
    assert!(
        !mails_sent(&server)
            .await
            .contains(&(String::new(), "password_reset".to_owned())),
        "an address without an account has no audit row of a mail"
    );
    assert_eq!(
        mails_sent(&server)
            .await
            .iter()
            .filter(|(_, kind)| kind == "password_reset")
            .count(),
        1
    );
}

/// The audited deliveries: (account, kind), oldest first.
async fn mails_sent(server: &TestServer) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT coalesce(user_id::text, ''), data->>'kind' FROM audit_logs \
         WHERE event_type = 'mail_sent' ORDER BY created_at, id",
    )
    .fetch_all(&mut db(server).await)
    .await
    .unwrap()
}

#[tokio::test]
async fn only_the_newest_link_works_and_an_expired_one_or_a_deleted_accounts_never() {
    let smtp = SmtpServer::start();
    let server = server_mailing_to(smtp.port).await;
    let user = server.new_user().await;
    assert_eq!(forgot(&server, &user.email).await.status(), 202);
    let older = reset_mail(&smtp, &user.email, 1).await.token();
    assert_eq!(forgot(&server, &user.email).await.status(), 202);
    let newer = reset_mail(&smtp, &user.email, 2).await.token();
    assert_ne!(older, newer);
    assert_eq!(
        fields(&problem(reset(&server, &older, NEW_PASSWORD).await, 422).await),
        ["token"]
    );

    // A password the policy refuses leaves the token usable.
    let weak = problem(reset(&server, &newer, "short").await, 422).await;
    assert_eq!(fields(&weak), ["new_password"]);
    sqlx::query(
        "UPDATE password_reset_tokens SET expires_at = now() - interval '1 second' WHERE used_at IS NULL",
    )
    .execute(&mut db(&server).await)
    .await
    .unwrap();
    assert_eq!(
        fields(&problem(reset(&server, &newer, NEW_PASSWORD).await, 422).await),
        ["token"]
    );
    assert_eq!(
        login_status(&server, &user.email, &user.password).await,
        200,
        "nothing changed"
    );

    assert_eq!(forgot(&server, &user.email).await.status(), 202);
    let last = reset_mail(&smtp, &user.email, 3).await.token();
    let deleted = server
        .request(reqwest::Method::DELETE, "/api/users/account")
        .bearer_auth(&user.access)
        .json(&json!({ "password": user.password }))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(
        fields(&problem(reset(&server, &last, NEW_PASSWORD).await, 422).await),
        ["token"]
    );
    for token in ["", "not-a-token", &"A".repeat(43)] {
        assert_eq!(
            fields(&problem(reset(&server, token, NEW_PASSWORD).await, 422).await),
            ["token"]
        );
    }
}

#[tokio::test]
async fn the_address_is_verified_through_the_link_mailed_at_registration() {
    let smtp = SmtpServer::start();
    let server = server_mailing_to(smtp.port).await;
    let user = server.new_user().await;
    assert!(!verified(&server, &user.access).await.claims.email_verified);
    let mail = mails_with(&smtp, &user.email, "Confirm your email address", 1)
        .await
        .pop()
        .unwrap();
    assert!(mail.text.contains("https://app.example.com/verify-email?token="));
    let token = mail.token();
    let verify = |token: String| {
        let server = &server;
        async move {
            server
                .post("/api/auth/verify-email", &json!({ "token": token }))
                .await
        }
    };
    assert_eq!(verify(token.clone()).await.status(), 204);
    let me = json(server.get_auth("/api/auth/me", &user.access).await, 200).await;
    assert_eq!(me["email_verified"], true);
    let relogged = server.login(&user).await;
    assert!(
        verified(&server, &relogged.access).await.claims.email_verified,
        "new tokens carry it"
    );
    assert_eq!(fields(&problem(verify(token).await, 422).await), ["token"]);
    assert!(
        audit_events(&server)
            .await
            .iter()
            .any(|event| event == "email_verified")
    );

    // Resending to a verified address answers the same and mails nothing.
    let resend = server
        .post("/api/auth/resend-verification", &json!({ "email": user.email }))
        .await;
    assert_eq!(resend.status(), 202);
    wait_until_outbox_drains(&server).await;
    assert_eq!(
        mails_with(&smtp, &user.email, "Confirm your email address", 1)
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn a_mail_server_that_is_down_loses_no_mail_and_blocks_no_request() {
    let port = platform_tests::process::free_port();
    let server = server_mailing_to(port).await;
    let user = server.new_user().await;
    let started = std::time::Instant::now();
    assert_eq!(forgot(&server, &user.email).await.status(), 202);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the request does not wait for the mail server"
    );
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let failed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE attempts > 0 AND done_at IS NULL")
                .fetch_one(&mut db(&server).await)
                .await
                .unwrap();
        if failed >= 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the worker tries and fails");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The gauge is measured after each round of deliveries.
    let deadline = std::time::Instant::now() + WITHIN;
    while !server.metrics().await.contains("auth_server_mail_outbox_depth 2") {
        assert!(std::time::Instant::now() < deadline, "both mails wait");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let smtp = SmtpServer::start_on(port);
    let mail = reset_mail(&smtp, &user.email, 1).await;
    mails_with(&smtp, &user.email, "Confirm your email address", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.mails().len(), 2, "each mail exactly once");
    assert_eq!(reset(&server, &mail.token(), NEW_PASSWORD).await.status(), 204);
}

#[tokio::test]
async fn requests_are_validated_and_rate_limited_per_address() {
    let server = spawn_server_with(|_| {}).await;
    let invalid = problem(forgot(&server, "not an address").await, 422).await;
    assert_eq!(fields(&invalid), ["email"]);
    let unknown_field = server
        .post(
            "/api/auth/forgot-password",
            &json!({ "email": "a@example.com", "admin": true }),
        )
        .await;
    assert!(unknown_field.status().is_client_error());
    for _ in 0..3 {
        assert_eq!(forgot(&server, "someone@example.com").await.status(), 202);
    }
    let limited = forgot(&server, "SOMEONE@example.com").await;
    assert_eq!(limited.status(), 429, "per address, whatever its case");
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(forgot(&server, "someone-else@example.com").await.status(), 202);
}

#[tokio::test]
async fn with_mail_disabled_requests_are_answered_alike_and_no_token_is_made() {
    let server = spawn_server_with(|settings| {
        settings.mail.disabled = true;
        settings.mail.poll_interval = Duration::from_millis(50);
    })
    .await;
    let user = server.new_user().await;
    assert_eq!(forgot(&server, &user.email).await.status(), 202);
    wait_until_outbox_drains(&server).await;
    assert!(
        outbox_outcomes(&server)
            .await
            .iter()
            .all(|(_, outcome)| outcome.as_deref() == Some("skipped"))
    );
    let tokens: i64 = sqlx::query_scalar("SELECT count(*) FROM password_reset_tokens")
        .fetch_one(&mut db(&server).await)
        .await
        .unwrap();
    assert_eq!(tokens, 0, "no link exists that nobody could receive");
}

async fn from(server: &TestServer, address: &str, path: &str, body: &Value) -> reqwest::Response {
    server
        .request(reqwest::Method::POST, path)
        .header("x-forwarded-for", address)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_lockout_mails_its_owner_once_and_a_reset_lifts_it() {
    let smtp = SmtpServer::start();
    let server = spawn_server_with(|settings| {
        settings.trusted_proxy_hops = 1;
        settings.lockout.threshold = 3;
        mail_to(settings, smtp.port);
    })
    .await;
    let user = server.new_user().await;
    let wrong = json!({ "email": user.email, "password": "not the password" });
    for _ in 0..6 {
        assert_eq!(
            from(&server, "198.51.100.7", "/api/auth/login", &wrong)
                .await
                .status(),
            401
        );
    }
    let notice = mails_with(&smtp, &user.email, "Your account is locked for a while", 1).await;
    assert!(
        notice[0].text.contains("https://app.example.com/forgot-password"),
        "{}",
        notice[0].text
    );
    let right = json!({ "email": user.email, "password": user.password });
    assert_eq!(
        from(&server, "198.51.100.7", "/api/auth/login", &right)
            .await
            .status(),
        401,
        "locked for strangers"
    );

    assert_eq!(forgot(&server, &user.email).await.status(), 202);
    let token = reset_mail(&smtp, &user.email, 1).await.token();
    assert_eq!(reset(&server, &token, NEW_PASSWORD).await.status(), 204);
    let renewed = json!({ "email": user.email, "password": NEW_PASSWORD });
    assert_eq!(
        from(&server, "198.51.100.7", "/api/auth/login", &renewed)
            .await
            .status(),
        200,
        "the reset lifted the lock"
    );
    // Repeated lockouts within the hour did not flood the owner.
    assert_eq!(
        mails_with(&smtp, &user.email, "Your account is locked for a while", 1)
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn enumeration_safe_registration_answers_a_new_and_a_taken_address_alike() {
    let smtp = SmtpServer::start();
    let server = spawn_server_with(|settings| {
        settings.enumeration_safe_registration = true;
        mail_to(settings, smtp.port);
    })
    .await;
    let email = format!("owner-{}@example.com", platform_tests::server::uuid_like());
    let body = json!({ "email": email, "password": "correct horse battery staple" });
    let new = server.post("/api/auth/register", &body).await;
    let (new_status, new_body) = (new.status(), new.text().await.unwrap());
    let again = json!({ "email": email.to_uppercase(), "password": "another passphrase entirely" });
    let taken = server.post("/api/auth/register", &again).await;
    assert_eq!(
        (taken.status(), taken.text().await.unwrap()),
        (new_status, new_body.clone())
    );
    assert_eq!(new_status, 202);
    assert!(!new_body.contains("token"), "no session either way: {new_body}");
    // The new account exists (with the first password); its owner got the verification link and
    // then the notice, never a second account.
    assert_eq!(
        login_status(&server, &email, "correct horse battery staple").await,
        200
    );
    mails_with(&smtp, &email, "Confirm your email address", 1).await;
    let notice = mails_with(&smtp, &email, "Someone tried to sign up with your address", 1).await;
    assert!(!notice[0].text.contains("another passphrase"));
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE lower(email) = lower($1)")
        .bind(&email)
        .fetch_one(&mut db(&server).await)
        .await
        .unwrap();
    assert_eq!(accounts, 1);
}

#[tokio::test]
async fn with_verification_required_a_login_waits_for_the_mailed_link() {
    let smtp = SmtpServer::start();
    let server = spawn_server_with(|settings| {
        settings.require_verified_email = true;
        mail_to(settings, smtp.port);
    })
    .await;
    let email = format!("verify-{}@example.com", platform_tests::server::uuid_like());
    let body = json!({ "email": email, "password": "correct horse battery staple" });
    let registered = json(server.post("/api/auth/register", &body).await, 202).await;
    assert!(
        registered.get("tokens").is_none(),
        "no session before the address is verified"
    );
    let refused = problem(server.post("/api/auth/login", &body).await, 403).await;
    assert_eq!(refused["type"], "urn:auth-platform:problem:email-not-verified");
    let wrong = json!({ "email": email, "password": "not the password" });
    assert_eq!(
        server.post("/api/auth/login", &wrong).await.status(),
        401,
        "a wrong password learns nothing"
    );
    let token = mails_with(&smtp, &email, "Confirm your email address", 1).await[0].token();
    assert_eq!(
        server
            .post("/api/auth/verify-email", &json!({ "token": token }))
            .await
            .status(),
        204
    );
    assert_eq!(
        login_status(&server, &email, "correct horse battery staple").await,
        200
    );
}
