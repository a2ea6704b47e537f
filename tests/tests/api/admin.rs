//! The admin API and `auth-server admin create`, against real PostgreSQL and Redis.

use platform_tests::command::run;
use platform_tests::server::{TestServer, TestUser, spawn_server, start};
use serde_json::{Value, json};

use crate::support::{db, fields, json, login_status, problem};

const PASSWORD: &str = "correct horse battery staple";

/// Makes `email` an administrator with the real binary, as an operator would.
async fn admin_create(server: &TestServer, email: &str, password: &str) -> platform_tests::command::Finished {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    run(
        "auth-server",
        &[
            "admin",
            "create",
            "--email",
            email,
            "--password-file",
            file.to_str().unwrap(),
        ],
        &[
            ("DATABASE_URL", server.db.url.as_str()),
            ("AUTH_BCRYPT_COST", "4"),
            ("AUTH_LOG_LEVEL", "warn"),
        ],
    )
    .await
}

/// A logged-in administrator.
async fn admin(server: &TestServer) -> TestUser {
    let email = format!("admin-{}@example.com", platform_tests::server::uuid_like());
    let created = admin_create(server, &email, PASSWORD).await;
    assert_eq!(created.code, 0, "{created:#?}");
    let placeholder = TestUser {
        id: String::new(),
        email,
        password: PASSWORD.to_owned(),
        access: String::new(),
        refresh: String::new(),
        session: String::new(),
    };
    let mut logged_in = server.login(&placeholder).await;
    let me = json(server.get_auth("/api/auth/me", &logged_in.access).await, 200).await;
    logged_in.id = me["id"].as_str().unwrap().to_owned();
    logged_in
}

async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = server.request(method, path);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn get(server: &TestServer, path: &str, token: &str) -> Value {
    json(
        call(server, reqwest::Method::GET, path, Some(token), None).await,
        200,
    )
    .await
}

async fn post(server: &TestServer, path: &str, token: &str, body: Value) -> reqwest::Response {
    call(server, reqwest::Method::POST, path, Some(token), Some(body)).await
}

#[tokio::test]
async fn the_first_admin_comes_from_the_command_line_and_running_it_again_changes_nothing() {
    let server = spawn_server().await;
    let created = admin_create(&server, "root@example.com", PASSWORD).await;
    assert_eq!(created.code, 0, "{created:#?}");
    assert!(
        created.stdout.contains("created as an administrator"),
        "{}",
        created.stdout
    );
    let again = admin_create(&server, "ROOT@example.com", "another passphrase entirely").await;
    assert_eq!(again.code, 0);
    assert!(
        again.stdout.contains("was an administrator already"),
        "{}",
        again.stdout
    );
    assert_eq!(
        login_status(&server, "root@example.com", PASSWORD).await,
        200,
        "the password was left alone"
    );

    let user = server.new_user().await;
    let promoted = admin_create(&server, &user.email, "ignored for an existing account").await;
    assert!(
        promoted.stdout.contains("it is an administrator now"),
        "{}",
        promoted.stdout
    );
    let token = server.login(&user).await.access;
    assert_eq!(
        call(
            &server,
            reqwest::Method::GET,
            "/api/admin/users",
            Some(&token),
            None
        )
        .await
        .status(),
        200
    );

    let weak = admin_create(&server, "weak@example.com", "short").await;
    assert_ne!(weak.code, 0);
    assert!(weak.stderr.contains("password"), "{}", weak.stderr);
    assert_eq!(
        login_status(&server, "weak@example.com", "short").await,
        401,
        "nothing was created"
    );
}

/// Settings that make `email` the first administrator at start.
fn bootstrapping(email: &str) -> impl FnOnce(&mut auth_server::settings::Settings) {
    let email = email.to_owned();
    move |settings| {
        settings.admin_bootstrap = auth_server::service::admin::BootstrapSettings {
            email: Some(email),
            password: Some(PASSWORD.into()),
        }
    }
}

async fn bootstrap_audits(server: &TestServer) -> Vec<Value> {
    sqlx::query_scalar("SELECT data FROM audit_logs WHERE event_type = 'admin_bootstrapped'")
        .fetch_all(&mut db(server).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_first_admin_comes_from_configuration_once_whatever_the_replicas_and_restarts() {
    let db = platform_tests::migrated_database().await;
    let redis = platform_tests::test_redis();
    // Two replicas starting together on an empty database; each is ready only once it is done.
    let (first, second) = tokio::join!(
        start(db.clone(), &redis.url, bootstrapping("root@example.com")),
        start(db.clone(), &redis.url, bootstrapping("root@example.com")),
    );
    let audits = bootstrap_audits(&first).await;
    assert_eq!(
        audits,
        [json!({"outcome": "created as an administrator"})],
        "one account, made once"
    );
    for server in [&first, &second] {
        let token = json(
            server
                .post(
                    "/api/auth/login",
                    &json!({"email": "root@example.com", "password": PASSWORD}),
                )
                .await,
            200,
        )
        .await["tokens"]["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            get(server, "/api/admin/users", &token).await["users"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    // Once an administrator exists, configuration names nobody new, even after a restart with
    // another address; the command line still can.
    second.stop().await;
    let restarted = start(db.clone(), &redis.url, bootstrapping("other@example.com")).await;
    assert_eq!(login_status(&restarted, "other@example.com", PASSWORD).await, 401);
    assert_eq!(bootstrap_audits(&restarted).await.len(), 1);
    let created = admin_create(&restarted, "other@example.com", PASSWORD).await;
    assert!(
        created.stdout.contains("created as an administrator"),
        "{created:#?}"
    );
    assert_eq!(login_status(&restarted, "other@example.com", PASSWORD).await, 200);
}

#[test]
fn configured_bootstrap_settings_that_cannot_work_stop_the_start_naming_the_setting() {
    use auth_core::settings::SettingsSource;
    use auth_server::settings::{ENV_PREFIX, Settings, UNPREFIXED};
    let load = |environment: &[(&str, &str)]| {
        SettingsSource::new(ENV_PREFIX, UNPREFIXED)
            .with_environment(environment.iter().copied())
            .load::<Settings>()
            .map(drop)
            .map_err(|error| error.to_string())
    };
    assert_eq!(
        load(&[
            ("AUTH_ADMIN_BOOTSTRAP__EMAIL", "root@example.com"),
            ("AUTH_ADMIN_BOOTSTRAP__PASSWORD", PASSWORD)
        ]),
        Ok(())
    );
    for (environment, expected) in [
        (
            &[("AUTH_ADMIN_BOOTSTRAP__EMAIL", "root@example.com")][..],
            "AUTH_ADMIN_BOOTSTRAP__PASSWORD: is required",
        ),
        (
            &[("AUTH_ADMIN_BOOTSTRAP__PASSWORD", PASSWORD)][..],
            "AUTH_ADMIN_BOOTSTRAP__EMAIL: is required",
        ),
        (
            &[
                ("AUTH_ADMIN_BOOTSTRAP__EMAIL", "root"),
                ("AUTH_ADMIN_BOOTSTRAP__PASSWORD", PASSWORD),
            ][..],
            "AUTH_ADMIN_BOOTSTRAP__EMAIL: not a valid email address",
        ),
        (
            &[
                ("AUTH_ADMIN_BOOTSTRAP__EMAIL", "root@example.com"),
                ("AUTH_ADMIN_BOOTSTRAP__PASSWORD", "short"),
            ][..],
            "AUTH_ADMIN_BOOTSTRAP__PASSWORD: must be at least",
        ),
    ] {
        let error = load(environment).unwrap_err();
        assert!(error.contains(expected), "{error}");
    }
}

#[tokio::test]
async fn every_admin_route_refuses_anonymous_callers_and_users_without_the_role() {
    let server = spawn_server().await;
    let user = server.new_user().await;
    let id = &user.id;
    let routes = [
        (reqwest::Method::GET, "/api/admin/users".to_owned(), None),
        (reqwest::Method::GET, format!("/api/admin/users/{id}"), None),
        (
            reqwest::Method::PUT,
            format!("/api/admin/users/{id}/roles"),
            Some(json!({"roles": ["admin"]})),
        ),
        (
            reqwest::Method::POST,
            format!("/api/admin/users/{id}/lock"),
            Some(json!({})),
        ),
        (
            reqwest::Method::POST,
            format!("/api/admin/users/{id}/unlock"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("/api/admin/users/{id}/revoke-sessions"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("/api/admin/users/{id}/force-password-reset"),
            None,
        ),
        (reqwest::Method::DELETE, format!("/api/admin/users/{id}"), None),
        (reqwest::Method::GET, "/api/admin/audit".to_owned(), None),
        (reqwest::Method::POST, "/api/admin/cleanup".to_owned(), None),
    ];
    for (method, path, body) in routes {
        let anonymous = call(&server, method.clone(), &path, None, body.clone()).await;
        problem(anonymous, 401).await;
        let forbidden = call(&server, method.clone(), &path, Some(&user.access), body).await;
        assert_eq!(forbidden.status(), 403, "{method} {path}");
    }
    let me = json(server.get_auth("/api/auth/me", &user.access).await, 200).await;
    assert_eq!(me["roles"], json!(["user"]), "nothing changed");
}

#[tokio::test]
async fn accounts_are_searched_and_paged_newest_first() {
    let server = spawn_server().await;
    let admin = admin(&server).await;
    let mut emails = Vec::new();
    for n in 0..5 {
        let email = format!("paged-{n}-{}@example.com", platform_tests::server::uuid_like());
        server.register(&email, PASSWORD).await;
        emails.push(email);
    }
    let mut seen = Vec::new();
    let mut path = "/api/admin/users?email_prefix=PAGED-&limit=2".to_owned();
    loop {
        let page = get(&server, &path, &admin.access).await;
        let users = page["users"].as_array().unwrap();
        assert!(users.len() <= 2);
        seen.extend(
            users
                .iter()
                .map(|user| user["email"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => path = format!("/api/admin/users?email_prefix=PAGED-&limit=2&after={next}"),
            None => break,
        }
    }
    emails.reverse();
    assert_eq!(seen, emails, "every match once, newest first");

    let admins = get(&server, "/api/admin/users?role=admin", &admin.access).await;
    assert_eq!(admins["users"].as_array().unwrap().len(), 1);
    let unverified = get(
        &server,
        "/api/admin/users?verified=false&email_prefix=paged-",
        &admin.access,
    )
    .await;
    assert_eq!(unverified["users"].as_array().unwrap().len(), 5);
    // `%` and `_` in a prefix match themselves only.
    let literal = get(&server, "/api/admin/users?email_prefix=%25", &admin.access).await;
    assert!(literal["users"].as_array().unwrap().is_empty());
    let bad = problem(
        call(
            &server,
            reqwest::Method::GET,
            "/api/admin/users?limit=0",
            Some(&admin.access),
            None,
        )
        .await,
        400,
    )
    .await;
    assert_eq!(fields(&bad), ["limit"]);
    let bad = problem(
        call(
            &server,
            reqwest::Method::GET,
            "/api/admin/users?after=nonsense",
            Some(&admin.access),
            None,
        )
        .await,
        422,
    )
    .await;
    assert_eq!(fields(&bad), ["after"]);
}

#[tokio::test]
async fn a_locked_account_is_refused_like_a_wrong_password_until_unlocked() {
    let server = spawn_server().await;
    let admin = admin(&server).await;
    let user = server.new_user().await;
    let wrong = server
        .post(
            "/api/auth/login",
            &json!({ "email": user.email, "password": "not the password" }),
        )
        .await;
    let wrong = (wrong.status(), wrong.text().await.unwrap());

    let locked = json(
        post(
            &server,
            &format!("/api/admin/users/{}/lock", user.id),
            &admin.access,
            json!({}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(locked["locked"], true);
    let refused = server
        .post(
            "/api/auth/login",
            &json!({ "email": user.email, "password": PASSWORD }),
        )
        .await;
    assert_eq!(
        (refused.status(), refused.text().await.unwrap()),
        wrong,
        "no oracle"
    );
    assert_eq!(
        server.get_auth("/api/auth/me", &user.access).await.status(),
        401,
        "its sessions ended"
    );
    let listed = get(&server, "/api/admin/users?locked=true", &admin.access).await;
    assert_eq!(listed["users"][0]["id"], user.id.as_str());

    let unlocked = json(
        post(
            &server,
            &format!("/api/admin/users/{}/unlock", user.id),
            &admin.access,
            json!({}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(unlocked["locked"], false);
    assert_eq!(login_status(&server, &user.email, PASSWORD).await, 200);

    let until = "2999-01-02T03:04:05Z";
    let timed = json(
        post(
            &server,
            &format!("/api/admin/users/{}/lock", user.id),
            &admin.access,
            json!({ "until": until }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        (&timed["locked"], &timed["locked_until"]),
        (&json!(true), &json!(until))
    );
}

#[tokio::test]
async fn roles_change_at_once_and_the_last_admin_stays() {
    let server = spawn_server().await;
    let admin = admin(&server).await;
    let user = server.new_user().await;
    let path = format!("/api/admin/users/{}/roles", user.id);
    let set = |roles: Value| {
        let (server, path, token) = (&server, path.clone(), admin.access.clone());
        async move {
            call(
                server,
                reqwest::Method::PUT,
                &path,
                Some(&token),
                Some(json!({ "roles": roles })),
            )
            .await
        }
    };
    let invalid = problem(set(json!(["Admin!"])).await, 422).await;
    assert_eq!(fields(&invalid), ["roles"]);

    let promoted = json(set(json!(["user", "admin"])).await, 200).await;
    assert_eq!(promoted["roles"], json!(["admin", "user"]));
    assert_eq!(
        server.get_auth("/api/auth/me", &user.access).await.status(),
        401,
        "its older tokens are revoked"
    );
    let second_admin = server.login(&user).await;
    assert_eq!(
        server
            .get_auth("/api/admin/users", &second_admin.access)
            .await
            .status(),
        200
    );

    // Two administrators: one may demote the other, whose next request is refused.
    let demoted = json(set(json!(["user"])).await, 200).await;
    assert_eq!(demoted["roles"], json!(["user"]));
    assert_eq!(
        server
            .get_auth("/api/admin/users", &second_admin.access)
            .await
            .status(),
        401
    );
    let relogged = server.login(&user).await;
    assert_eq!(
        server
            .get_auth("/api/admin/users", &relogged.access)
            .await
            .status(),
        403
    );

    // Alone, the administrator can neither drop the role nor be locked or deleted.
    let own = format!("/api/admin/users/{}/roles", admin.id);
    let refused = call(
        &server,
        reqwest::Method::PUT,
        &own,
        Some(&admin.access),
        Some(json!({"roles": ["user"]})),
    )
    .await;
    problem(refused, 409).await;
    problem(
        post(
            &server,
            &format!("/api/admin/users/{}/lock", admin.id),
            &admin.access,
            json!({}),
        )
        .await,
        409,
    )
    .await;
    let delete = call(
        &server,
        reqwest::Method::DELETE,
        &format!("/api/admin/users/{}", admin.id),
        Some(&admin.access),
        None,
    )
    .await;
    problem(delete, 409).await;
    let me = json(server.get_auth("/api/auth/me", &admin.access).await, 200).await;
    assert_eq!(me["roles"], json!(["admin", "user"]));
}

#[tokio::test]
async fn sessions_revoked_a_reset_forced_and_an_account_deleted_each_take_effect_and_are_audited() {
    let server = spawn_server().await;
    let admin = admin(&server).await;
    let user = server.new_user().await;
    let other_session = server.login(&user).await;
    let detail = get(&server, &format!("/api/admin/users/{}", user.id), &admin.access).await;
    assert_eq!(detail["user"]["email"], user.email.as_str());
    assert_eq!(detail["sessions"].as_array().unwrap().len(), 2);
    let missing = call(
        &server,
        reqwest::Method::GET,
        &format!("/api/admin/users/{}", uuid::Uuid::new_v4()),
        Some(&admin.access),
        None,
    )
    .await;
    problem(missing, 404).await;

    assert_eq!(
        post(
            &server,
            &format!("/api/admin/users/{}/revoke-sessions", user.id),
            &admin.access,
            json!({})
        )
        .await
        .status(),
        204
    );
    for token in [&user.access, &other_session.access] {
        assert_eq!(server.get_auth("/api/auth/me", token).await.status(), 401);
    }

    let fresh = server.login(&user).await;
    assert_eq!(
        post(
            &server,
            &format!("/api/admin/users/{}/force-password-reset", user.id),
            &admin.access,
            json!({})
        )
        .await
        .status(),
        204
    );
    assert_eq!(
        login_status(&server, &user.email, PASSWORD).await,
        401,
        "the old password stops working"
    );
    assert_eq!(server.get_auth("/api/auth/me", &fresh.access).await.status(), 401);
    let queued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mail_outbox WHERE kind = 'password_reset' AND recipient = $1",
    )
    .bind(&user.email)
    .fetch_one(&mut db(&server).await)
    .await
    .unwrap();
    assert_eq!(queued, 1, "a reset link is on its way");

    let delete = call(
        &server,
        reqwest::Method::DELETE,
        &format!("/api/admin/users/{}", user.id),
        Some(&admin.access),
        None,
    )
    .await;
    assert_eq!(delete.status(), 204);
    problem(
        call(
            &server,
            reqwest::Method::GET,
            &format!("/api/admin/users/{}", user.id),
            Some(&admin.access),
            None,
        )
        .await,
        404,
    )
    .await;

    // The audit trail: who did what to whom, newest first, paged.
    let trail = get(
        &server,
        &format!("/api/admin/audit?user_id={}&limit=2", user.id),
        &admin.access,
    )
    .await;
    let entries = trail["entries"].as_array().unwrap();
    assert_eq!(entries[0]["event_type"], "admin_user_deleted");
    assert_eq!(entries[0]["data"]["admin_id"], admin.id.as_str());
    assert_eq!(
        entries[1]["event_type"], "login_failed",
        "the old password, tried after the forced reset"
    );
    let next = trail["next"].as_i64().expect("more pages");
    let older = get(
        &server,
        &format!("/api/admin/audit?user_id={}&before={next}", user.id),
        &admin.access,
    )
    .await;
    let types: Vec<&str> = older["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["event_type"].as_str().unwrap())
        .collect();
    for expected in [
        "admin_password_reset_forced",
        "admin_sessions_revoked",
        "user_registered",
    ] {
        assert!(types.contains(&expected), "{expected} in {types:?}");
    }
    let by_type = get(
        &server,
        "/api/admin/audit?event_type=admin_sessions_revoked",
        &admin.access,
    )
    .await;
    assert_eq!(by_type["entries"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn cleanup_removes_exactly_what_expired_one_replica_at_a_time() {
    let server = spawn_server().await;
    let admin = admin(&server).await;
    let user = server.new_user().await;
    let mut conn = db(&server).await;
    // Dead: an expired and a used reset token, an expired revocation, a session that ended and is
    // older than the known-source window (with its refresh token), mail delivered long ago.
    for sql in [
        "INSERT INTO password_reset_tokens (user_id, token_hash, expires_at) \
         SELECT id, sha256('expired'::bytea), now() - interval '1 minute' FROM users WHERE email = $1",
        "INSERT INTO password_reset_tokens (user_id, token_hash, expires_at, used_at) \
         SELECT id, sha256('used'::bytea), now() + interval '1 hour', now() FROM users WHERE email = $1",
        "INSERT INTO password_reset_tokens (user_id, token_hash, expires_at) \
         SELECT id, sha256('live'::bytea), now() + interval '1 hour' FROM users WHERE email = $1",
        "INSERT INTO revoked_tokens (kind, value, expires_at, reason) VALUES ('jti', $1, now() - interval '1 second', 'test')",
        "INSERT INTO sessions (user_id, created_at, expires_at, absolute_expires_at, revoked_at, revoked_reason) \
         SELECT id, now() - interval '400 days', now() - interval '300 days', now() - interval '300 days', \
                now() - interval '300 days', 'logout' FROM users WHERE email = $1",
        "INSERT INTO mail_outbox (kind, recipient, done_at, outcome) VALUES ('email_verification', $1, now() - interval '3 days', 'sent')",
    ] {
        sqlx::query(sql)
            .bind(&user.email)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO refresh_tokens (session_id, token_hash, expires_at) \
         SELECT id, sha256('old-refresh'::bytea), now() - interval '300 days' FROM sessions WHERE created_at < now() - interval '399 days'",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    // Another replica holds the lock (the server's key, "authclen"): nothing runs here.
    sqlx::query("SELECT pg_advisory_lock(7022647185647625582)")
        .execute(&mut conn)
        .await
        .unwrap();
    let skipped = json(
        post(&server, "/api/admin/cleanup", &admin.access, json!({})).await,
        200,
    )
    .await;
    assert_eq!(skipped["ran"], false);
    sqlx::query("SELECT pg_advisory_unlock(7022647185647625582)")
        .execute(&mut conn)
        .await
        .unwrap();

    let report = json(
        post(&server, "/api/admin/cleanup", &admin.access, json!({})).await,
        200,
    )
    .await;
    assert_eq!(report["ran"], true);
    let removed = &report["removed"];
    assert_eq!(removed["password_reset_tokens"], 2, "{report}");
    assert_eq!(removed["revoked_tokens"], 1, "{report}");
    assert_eq!(removed["sessions"], 1, "{report}");
    assert_eq!(removed["refresh_tokens"], 1, "{report}");
    assert_eq!(removed["mail_outbox"], 1, "{report}");
    assert_eq!(removed["audit_logs"], 0, "{report}");
    // What still matters is still there: the live token, the user's live sessions and tokens.
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM password_reset_tokens")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(live, 1);
    assert_eq!(server.get_auth("/api/auth/me", &user.access).await.status(), 200);
    let refreshed = server
        .post("/api/auth/refresh", &json!({ "refresh_token": user.refresh }))
        .await;
    assert_eq!(refreshed.status(), 200);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("auth_server_cleanup_removed_total{table=\"password_reset_tokens\"} 2"),
        "{metrics}"
    );
    let again = json(
        post(&server, "/api/admin/cleanup", &admin.access, json!({})).await,
        200,
    )
    .await;
    assert!(
        again["removed"]
            .as_object()
            .unwrap()
            .values()
            .all(|rows| rows == 0),
        "{again}"
    );
}

#[tokio::test]
async fn every_security_event_leaves_an_audit_row_and_limits_count_their_refusals() {
    let server = spawn_server().await;
    let admin = admin(&server).await;
    let user = server.new_user().await;
    let refreshed = server
        .post("/api/auth/refresh", &json!({ "refresh_token": user.refresh }))
        .await;
    assert_eq!(refreshed.status(), 200);
    assert_eq!(login_status(&server, &user.email, "not the password").await, 401);
    let second = server.login(&user).await;
    let sessions = json(server.get_auth("/api/auth/sessions", &second.access).await, 200).await;
    let other = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoke = call(
        &server,
        reqwest::Method::DELETE,
        &format!("/api/auth/sessions/{other}"),
        Some(&second.access),
        None,
    )
    .await;
    assert_eq!(revoke.status(), 204);
    assert_eq!(
        server
            .post("/api/auth/forgot-password", &json!({ "email": user.email }))
            .await
            .status(),
        202
    );
    let changed = server
        .post_auth(
            "/api/auth/change-password",
            &second.access,
            &json!({ "current_password": user.password, "new_password": "a brand new passphrase" }),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let changed = json(changed, 200).await;
    let token = changed["tokens"]["access_token"].as_str().unwrap();
    assert_eq!(
        server
            .post_auth("/api/auth/logout-all", token, &json!({}))
            .await
            .status(),
        204
    );

    let trail = get(
        &server,
        &format!("/api/admin/audit?user_id={}&limit=200", user.id),
        &admin.access,
    )
    .await;
    let types: Vec<&str> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    for expected in [
        "user_registered",
        "token_refreshed",
        "login_failed",
        "login_succeeded",
        "session_revoked",
        "password_changed",
        "logout_all",
    ] {
        assert!(types.contains(&expected), "{expected} in {types:?}");
    }
    let requests = get(
        &server,
        "/api/admin/audit?event_type=password_reset_requested",
        &admin.access,
    )
    .await;
    assert_eq!(
        requests["entries"].as_array().unwrap().len(),
        1,
        "named by the address's hash, not the user"
    );

    for _ in 0..4 {
        server
            .post(
                "/api/auth/forgot-password",
                &json!({ "email": "limited@example.com" }),
            )
            .await;
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("auth_server_rate_limited_total{limit=\"password_reset-address\"} 1"),
        "{metrics}"
    );
}
