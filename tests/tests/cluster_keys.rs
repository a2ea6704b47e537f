//! Signing keys managed in Kubernetes, tested against the API contract: the leader election, the
//! key schedule and the JWKS ConfigMap, each request asserted on a scripted API server.

use std::time::Duration;

use auth_core::shutdown;
use auth_server::cluster::key_manager::KeyManager;
use auth_server::cluster::key_store::{KeyStore, decode, encode};
use auth_server::cluster::lease::{Elector, Leadership, LeaseSettings};
use auth_server::keys::rotation::{ManagedRing, RotationPolicy};
use jsonwebtoken::Algorithm;
use k8s_openapi::api::core::v1::Secret;
use platform_tests::scripted_api::ScriptedApi;
use serde_json::{Value, json};
use tokio::sync::watch;

const NS: &str = "auth";
const SECRET: &str = "/api/v1/namespaces/auth/secrets/keys";
const SECRETS: &str = "/api/v1/namespaces/auth/secrets";
const CONFIG_MAP: &str = "/api/v1/namespaces/auth/configmaps/jwks";
const CONFIG_MAPS: &str = "/api/v1/namespaces/auth/configmaps";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/auth/leases/leader";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/auth/leases";

fn policy() -> RotationPolicy {
    RotationPolicy {
        interval: Duration::from_secs(10_000),
        propagation: Duration::from_secs(600),
        token_lifetime: Duration::from_secs(930),
        algorithm: Algorithm::EdDSA,
    }
}

fn secret_json(ring: &ManagedRing, resource_version: &str) -> Value {
    let secret = Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("keys".to_owned()),
            namespace: Some(NS.to_owned()),
            resource_version: Some(resource_version.to_owned()),
            ..Default::default()
        },
        data: Some(encode(ring)),
        ..Default::default()
    };
    serde_json::to_value(secret).unwrap()
}

fn ring_of(body: &Value) -> ManagedRing {
    decode(&serde_json::from_value::<Secret>(body.clone()).unwrap()).unwrap()
}

fn jwks_kids(config_map: &Value) -> Vec<String> {
    let jwks: Value = serde_json::from_str(config_map["data"]["jwks.json"].as_str().unwrap()).unwrap();
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect();
    kids.sort();
    kids
}

fn kids(ring: &ManagedRing) -> Vec<String> {
    let mut kids: Vec<String> = ring.keys.values().map(|key| key.record.kid.clone()).collect();
    kids.sort();
    kids
}

fn config_map_json(ring: &ManagedRing) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "jwks", "namespace": NS, "resourceVersion": "7"},
        "data": {"jwks.json": serde_json::to_string(&ring.jwks().unwrap()).unwrap()},
    })
}

fn manager(
    client: kube::Client,
    leading: bool,
    seen: Option<ManagedRing>,
) -> (KeyManager, watch::Sender<bool>) {
    let (leader, leadership) = Leadership::channel();
    leader.send_replace(leading);
    let (_, seen) = watch::channel(seen);
    let manager = KeyManager {
        store: KeyStore::new(client, NS, "keys", "jwks"),
        policy: policy(),
        leadership,
        seen,
        changes: prometheus::IntCounterVec::new(prometheus::Opts::new("changes", "changes"), &["change"])
            .unwrap(),
    };
    (manager, leader)
}

#[tokio::test]
async fn a_first_start_creates_the_secret_with_one_signing_key_and_publishes_it() {
    let (client, mut api) = ScriptedApi::new(NS);
    let (manager, _leader) = manager(client, true, None);
    let running = tokio::spawn(async move { manager.reconcile(1_000).await.map(|ring| ring.unwrap()) });

    api.expect("GET", SECRET).await.fail(404, "NotFound");
    let create = api.expect("POST", SECRETS).await;
    let created = ring_of(&create.body);
    assert_eq!(created.keys.len(), 1);
    assert_eq!(
        created.keys[&created.active].record.signs_from, 1_000,
        "the first key signs at once"
    );
    assert_eq!(create.body["metadata"]["name"], "keys");
    create.echo(201, "1");
    api.expect("GET", CONFIG_MAP).await.fail(404, "NotFound");
    let publish = api.expect("POST", CONFIG_MAPS).await;
    assert_eq!(jwks_kids(&publish.body), kids(&created));
    publish.echo(201, "1");
    let stored = running.await.unwrap().unwrap();
    assert_eq!(stored, created);
    api.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_new_leader_resumes_a_rotation_without_a_second_key_and_activates_it_when_due() {
    let policy = policy();
    let (mut ring, _) = ManagedRing::first(&policy, 0).unwrap();
    ring.advance(&policy, 10_000).unwrap();
    assert_eq!(ring.keys.len(), 2, "the old leader published a key and was lost");
    let pending = ring
        .keys
        .keys()
        .find(|name| **name != ring.active)
        .unwrap()
        .clone();

    // The new leader, before the key is due: nothing to write, the ConfigMap already lists both.
    let (client, mut api) = ScriptedApi::new(NS);
    let (manager, _leader) = manager(client, true, Some(ring.clone()));
    let manager = std::sync::Arc::new(manager);
    let early = tokio::spawn({
        let manager = manager.clone();
        async move { manager.reconcile(10_300).await.map(|_| ()) }
    });
    api.expect("GET", SECRET)
        .await
        .answer(200, &secret_json(&ring, "5"));
    api.expect("GET", CONFIG_MAP)
        .await
        .answer(200, &config_map_json(&ring));
    early.await.unwrap().unwrap();
    api.expect_silence(Duration::from_millis(200)).await;

    // When it is due, the same pending key signs: still two keys, none added.
    let due = tokio::spawn({
        let manager = manager.clone();
        async move { manager.reconcile(10_600).await.map(|ring| ring.unwrap()) }
    });
    api.expect("GET", SECRET)
        .await
        .answer(200, &secret_json(&ring, "5"));
    let replace = api.expect("PUT", SECRET).await;
    assert_eq!(
        replace.body["metadata"]["resourceVersion"], "5",
        "the write carries what it read"
    );
    let written = ring_of(&replace.body);
    assert_eq!(written.active, pending);
    assert_eq!(kids(&written), kids(&ring), "no second key");
    replace.echo(200, "6");
    api.expect("GET", CONFIG_MAP)
        .await
        .answer(200, &config_map_json(&ring));
    due.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_conflicting_secret_update_is_retried_from_a_fresh_read() {
    let policy = policy();
    let (ring, _) = ManagedRing::first(&policy, 0).unwrap();
    // Meanwhile someone (`auth-server keys rotate`) published a key.
    let mut theirs = ring.clone();
    theirs.rotate(&policy, 9_000).unwrap();

    let (client, mut api) = ScriptedApi::new(NS);
    let (manager, _leader) = manager(client, true, Some(ring.clone()));
    let running = tokio::spawn(async move { manager.reconcile(10_000).await.map(|ring| ring.unwrap()) });
    api.expect("GET", SECRET)
        .await
        .answer(200, &secret_json(&ring, "1"));
    let stale = api.expect("PUT", SECRET).await;
    assert_eq!(
        ring_of(&stale.body).keys.len(),
        2,
        "the rotation was due on what it read"
    );
    stale.fail(409, "Conflict");
    api.expect("GET", SECRET)
        .await
        .answer(200, &secret_json(&theirs, "2"));
    // On the fresh read their key is pending, and due since 9,600.
    let retry = api.expect("PUT", SECRET).await;
    assert_eq!(retry.body["metadata"]["resourceVersion"], "2");
    let written = ring_of(&retry.body);
    assert_eq!(
        kids(&written),
        kids(&theirs),
        "their key was kept and no other added"
    );
    let theirs_pending = theirs.keys.keys().find(|name| **name != theirs.active).unwrap();
    assert_eq!(&written.active, theirs_pending, "their key, due at 9,600, signs");
    retry.echo(200, "3");
    api.expect("GET", CONFIG_MAP).await.fail(404, "NotFound");
    api.expect("POST", CONFIG_MAPS).await.echo(201, "1");
    assert_eq!(running.await.unwrap().unwrap(), written);
}

#[tokio::test]
async fn a_retired_key_is_deleted_only_after_its_last_token_expired() {
    let policy = policy();
    let (mut ring, _) = ManagedRing::first(&policy, 0).unwrap();
    ring.advance(&policy, 10_000).unwrap();
    ring.advance(&policy, 10_600).unwrap();
    let retired = ring
        .keys
        .values()
        .find(|key| key.record.retired_at.is_some())
        .unwrap()
        .record
        .kid
        .clone();
    // Retired at 10,600; tokens live 930 s, and a lagging replica may sign up to 600 s more.
    let gone_at = 10_600 + 930 + 600;

    let (client, mut api) = ScriptedApi::new(NS);
    let (manager, _leader) = manager(client, true, Some(ring.clone()));
    let manager = std::sync::Arc::new(manager);
    let early = tokio::spawn({
        let manager = manager.clone();
        async move { manager.reconcile(gone_at - 1).await.map(|_| ()) }
    });
    api.expect("GET", SECRET)
        .await
        .answer(200, &secret_json(&ring, "1"));
    let map = api.expect("GET", CONFIG_MAP).await;
    map.answer(200, &config_map_json(&ring));
    early.await.unwrap().unwrap();

    let due = tokio::spawn({
        let manager = manager.clone();
        async move { manager.reconcile(gone_at).await.map(|_| ()) }
    });
    api.expect("GET", SECRET)
        .await
        .answer(200, &secret_json(&ring, "1"));
    let replace = api.expect("PUT", SECRET).await;
    let written = ring_of(&replace.body);
    assert!(!kids(&written).contains(&retired));
    assert_eq!(written.keys.len(), 1);
    replace.echo(200, "2");
    api.expect("GET", CONFIG_MAP)
        .await
        .answer(200, &config_map_json(&ring));
    let publish = api.expect("PUT", CONFIG_MAP).await;
    assert_eq!(
        jwks_kids(&publish.body),
        kids(&written),
        "the JWKS drops it in the same pass"
    );
    publish.echo(200, "8");
    due.await.unwrap().unwrap();
}

#[test]
fn the_published_keys_always_include_every_key_that_may_have_signed_a_live_token() {
    // A year of hourly looks at a schedule rotating daily: at every instant, every key that was
    // signing at some moment within the last token lifetime (plus the propagation delay a
    // lagging replica may take) is published, and every key that signs was published at least
    // the propagation delay before.
    let policy = RotationPolicy {
        interval: Duration::from_secs(86_400),
        propagation: Duration::from_secs(600),
        token_lifetime: Duration::from_secs(930),
        algorithm: Algorithm::EdDSA,
    };
    let (mut ring, _) = ManagedRing::first(&policy, 0).unwrap();
    let mut signed: Vec<(String, i64, i64)> = Vec::new(); // kid, from, until
    let mut published_since = std::collections::HashMap::new();
    let mut now = 0;
    while now < 365 * 86_400 {
        ring.advance(&policy, now).unwrap();
        let active = ring.keys[&ring.active].record.kid.clone();
        for kid in kids(&ring) {
            published_since.entry(kid).or_insert(now);
        }
        match signed.last_mut() {
            Some((kid, _, until)) if *kid == active => *until = now,
            _ => signed.push((active.clone(), now, now)),
        }
        if signed.len() > 1 {
            assert!(
                now - published_since[&active] >= 600 || now < 600,
                "{active} signs before it was published long enough"
            );
        }
        let published = kids(&ring);
        for (kid, _, until) in &signed {
            if now <= until + 930 + 600 {
                assert!(
                    published.contains(kid),
                    "at {now}, {kid} may have signed a live token but is not published"
                );
            }
        }
        now += 600;
    }
    assert!(signed.len() > 300, "it rotated: {}", signed.len());
    assert!(ring.keys.len() <= 3, "old keys are deleted: {}", ring.keys.len());
}

#[tokio::test]
async fn a_replica_that_loses_leadership_stops_writing_at_once() {
    let policy = policy();
    let (ring, _) = ManagedRing::first(&policy, auth_core::revocation::unix_now()).unwrap();
    let (client, mut api) = ScriptedApi::new(NS);
    let (manager, leader) = manager(client, false, Some(ring.clone()));
    let (stop, shutdown) = shutdown::channel();
    manager.spawn(shutdown);
    api.expect_silence(Duration::from_millis(300)).await;

    leader.send_replace(true);
    api.expect("GET", SECRET)
        .await
        .answer(200, &secret_json(&ring, "1"));
    leader.send_replace(false);
    // The pass under way stops there: its ConfigMap step is never sent.
    api.expect_silence(Duration::from_millis(500)).await;
    stop.trigger();
}

fn lease_settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        name: "leader".to_owned(),
        identity: identity.to_owned(),
        duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    }
}

fn lease(holder: &str, renewed: &str, resource_version: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "leader", "namespace": NS, "resourceVersion": resource_version},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed,
                 "acquireTime": "2026-01-01T00:00:00.000000Z", "leaseTransitions": 3},
    })
}

#[tokio::test(start_paused = true)]
async fn two_replicas_one_leader_and_a_takeover_only_after_a_whole_term_by_the_candidates_clock() {
    // Replica a creates the Lease and leads.
    let (client_a, mut api_a) = ScriptedApi::new(NS);
    let mut a = Elector::new(kube::Api::namespaced(client_a, NS), lease_settings("a"));
    let round = tokio::spawn(async move { (a.try_acquire_or_renew().await.unwrap(), a) });
    api_a.expect("GET", LEASE).await.fail(404, "NotFound");
    let create = api_a.expect("POST", LEASES).await;
    assert_eq!(create.body["spec"]["holderIdentity"], "a");
    create.echo(201, "1");
    let (leading, _a) = round.await.unwrap();
    assert!(leading);

    // Replica b sees a's Lease. a's clock is an hour behind: its renewTime looks long expired,
    // but b counts only by its own clock, from when it first saw this record.
    let (client_b, mut api_b) = ScriptedApi::new(NS);
    let b = std::sync::Arc::new(tokio::sync::Mutex::new(Elector::new(
        kube::Api::namespaced(client_b, NS),
        lease_settings("b"),
    )));
    let try_b = |b: std::sync::Arc<tokio::sync::Mutex<Elector>>| {
        tokio::spawn(async move { b.lock().await.try_acquire_or_renew().await.unwrap() })
    };
    let round = try_b(b.clone());
    api_b
        .expect("GET", LEASE)
        .await
        .answer(200, &lease("a", "2026-01-01T00:00:00.000000Z", "1"));
    assert!(!round.await.unwrap(), "a leads");

    // a keeps renewing: the record changes, so b never takes over.
    for (second, version) in [(10, "2"), (20, "3"), (30, "4")] {
        tokio::time::advance(Duration::from_secs(10)).await;
        let round = try_b(b.clone());
        let renewed = format!("2026-01-01T00:00:{second}.000000Z");
        api_b
            .expect("GET", LEASE)
            .await
            .answer(200, &lease("a", &renewed, version));
        assert!(!round.await.unwrap(), "a renews, so it still leads");
    }
    // a stops renewing: within a term, b still waits.
    tokio::time::advance(Duration::from_secs(14)).await;
    let round = try_b(b.clone());
    api_b
        .expect("GET", LEASE)
        .await
        .answer(200, &lease("a", "2026-01-01T00:00:30.000000Z", "4"));
    assert!(!round.await.unwrap(), "the term is not over by b's clock");
    // After a whole term unchanged, b takes over, carrying the version it read.
    tokio::time::advance(Duration::from_secs(2)).await;
    let round = try_b(b.clone());
    api_b
        .expect("GET", LEASE)
        .await
        .answer(200, &lease("a", "2026-01-01T00:00:30.000000Z", "4"));
    let takeover = api_b.expect("PUT", LEASE).await;
    assert_eq!(takeover.body["spec"]["holderIdentity"], "b");
    assert_eq!(takeover.body["spec"]["leaseTransitions"], 4);
    assert_eq!(takeover.body["metadata"]["resourceVersion"], "4");
    takeover.echo(200, "5");
    assert!(round.await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_lost_race_for_the_lease_leaves_the_loser_following() {
    let (client, mut api) = ScriptedApi::new(NS);
    let mut elector = Elector::new(kube::Api::namespaced(client, NS), lease_settings("b"));
    let round = tokio::spawn(async move {
        elector
            .try_acquire_or_renew()
            .await
            .map_err(|error| error.to_string())
    });
    api.expect("GET", LEASE).await.fail(404, "NotFound");
    api.expect("POST", LEASES).await.fail(409, "AlreadyExists");
    assert_eq!(round.await.unwrap().unwrap_err(), "the Lease changed meanwhile");
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_steps_down_within_the_renew_deadline() {
    let (client, mut api) = ScriptedApi::new(NS);
    let elector = Elector::new(kube::Api::namespaced(client, NS), lease_settings("a"));
    let (stop, shutdown) = shutdown::channel();
    let mut leadership = elector.spawn(shutdown);
    api.expect("GET", LEASE).await.fail(404, "NotFound");
    api.expect("POST", LEASES).await.echo(201, "1");
    assert!(leadership.changed().await);
    assert!(leadership.is_leader());
    let became_leader = tokio::time::Instant::now();
    // From now on the API server fails every call.
    let failing = tokio::spawn(async move {
        loop {
            api.expect("GET", LEASE).await.fail(500, "InternalError");
        }
    });
    assert!(leadership.changed().await);
    assert!(!leadership.is_leader());
    let led_for = became_leader.elapsed();
    assert!(
        led_for <= Duration::from_secs(12),
        "stepped down after {led_for:?}, past the 10 s renew deadline"
    );
    assert!(
        led_for >= Duration::from_secs(8),
        "stepped down early, after {led_for:?}"
    );
    stop.trigger();
    failing.abort();
}
