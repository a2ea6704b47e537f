use uuid::Uuid;

use super::*;
use crate::token::{AccessClaims, VerifiedToken};

/// A verified token issued at `iat` for random ids, signed by key `k1`.
pub(super) fn token(iat: i64) -> VerifiedToken {
    VerifiedToken {
        claims: AccessClaims {
            iss: "i".into(),
            aud: "a".into(),
            sub: Uuid::new_v4(),
            sid: Uuid::new_v4(),
            jti: Uuid::new_v4(),
            iat,
            nbf: iat,
            exp: iat + 900,
            email: "a@example.com".into(),
            email_verified: false,
            roles: vec![],
        },
        kid: "k1".into(),
    }
}

#[test]
fn each_kind_applies_to_its_own_claim() {
    let t = token(1_000);
    assert!(Revocation::token(t.claims.jti, 2_000).applies_to(&t));
    assert!(!Revocation::token(Uuid::new_v4(), 2_000).applies_to(&t));
    assert!(Revocation::session(t.claims.sid, 2_000).applies_to(&t));
    assert!(Revocation::key("k1", 2_000).applies_to(&t));
    assert!(!Revocation::key("k2", 2_000).applies_to(&t));
}

#[test]
fn a_user_revocation_covers_tokens_issued_at_or_before_its_instant() {
    let t = token(1_000);
    assert!(Revocation::user(t.claims.sub, 1_000, 2_000).applies_to(&t));
    assert!(Revocation::user(t.claims.sub, 1_500, 2_000).applies_to(&t));
    assert!(!Revocation::user(t.claims.sub, 999, 2_000).applies_to(&t));
    assert!(!Revocation::user(Uuid::new_v4(), 1_500, 2_000).applies_to(&t));
}

#[test]
fn stream_fields_round_trip() {
    for revocation in [
        Revocation::token(Uuid::new_v4(), 5),
        Revocation::session(Uuid::new_v4(), 6),
        Revocation::user(Uuid::new_v4(), 3, 7),
        Revocation::key("kid-1", 8),
    ] {
        let fields = revocation.stream_fields();
        let pairs = fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()));
        assert_eq!(
            RevocationRef::from_stream_fields(pairs),
            Some(revocation.as_ref())
        );
    }
    let unknown: [(&[u8], &[u8]); 3] = [(b"kind", b"tenant"), (b"id", b"x"), (b"until", b"1")];
    assert_eq!(RevocationRef::from_stream_fields(unknown), None);
    let user_without_instant: [(&[u8], &[u8]); 3] = [(b"kind", b"user"), (b"id", b"x"), (b"until", b"1")];
    assert_eq!(RevocationRef::from_stream_fields(user_without_instant), None);
}

#[test]
fn keys_follow_the_namespace_scheme() {
    let keys = RedisKeys::new("auth");
    assert_eq!(keys.revoked(RevocationKind::Token, "j"), "auth:revoked:jti:j");
    assert_eq!(keys.revoked(RevocationKind::User, "u"), "auth:revoked:user:u");
    assert_eq!(keys.stream(), "auth:revocations");
    assert_eq!(
        keys.rate_limit("login", "1.2.3.4"),
        "auth:ratelimit:{login:1.2.3.4}"
    );
}

#[test]
fn a_snapshot_carries_every_live_revocation_of_every_kind_and_its_position() {
    let now = unix_now();
    let index = RevocationIndex::default();
    let (jti, sid, user) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    index.apply(&[
        Revocation::token(jti, now + 900),
        Revocation::session(sid, now + 900),
        Revocation::user(user, now - 5, now + 900),
        Revocation::key("k-compromised", now + 900),
        Revocation::token(Uuid::new_v4(), now - 1),
    ]);
    let bytes = snapshot::encode(&index, "epoch-1", "1700000000000-3");
    let (epoch, last_id, body) = snapshot::parse(&bytes).expect("a snapshot");
    assert_eq!((epoch, last_id), ("epoch-1", "1700000000000-3"));

    let copy = RevocationIndex::default();
    assert_eq!(copy.apply_encoded(body), Some(4), "the expired token is left out");
    let mut probe = token(now - 1);
    probe.claims.jti = jti;
    assert_eq!(copy.revoked_by(&probe), Some(RevocationKind::Token));
    let mut probe = token(now - 1);
    probe.claims.sid = sid;
    assert_eq!(copy.revoked_by(&probe), Some(RevocationKind::Session));
    let mut probe = token(now - 10);
    probe.claims.sub = user;
    assert_eq!(copy.revoked_by(&probe), Some(RevocationKind::User));
    probe.claims.iat = now;
    assert_eq!(copy.revoked_by(&probe), None, "issued after the user's instant");
    let mut probe = token(now);
    probe.kid = "k-compromised".into();
    assert_eq!(copy.revoked_by(&probe), Some(RevocationKind::Key));
}

#[test]
fn a_malformed_snapshot_adds_nothing() {
    let index = RevocationIndex::default();
    index.apply(&[Revocation::token(Uuid::new_v4(), unix_now() + 900)]);
    let bytes = snapshot::encode(&index, "e", "1-0");
    let (_, _, body) = snapshot::parse(&bytes).unwrap();
    let copy = RevocationIndex::default();
    for broken in [&body[..body.len() - 1], &[9u8, 0, 0][..]] {
        assert_eq!(copy.apply_encoded(broken), None);
    }
    let mut two = body.to_vec();
    two.extend_from_slice(&body[..10]);
    assert_eq!(
        copy.apply_encoded(&two),
        None,
        "a truncated second record spoils the whole"
    );
    assert!(copy.is_empty());
    assert!(snapshot::parse(b"something else").is_none());
}
