//! The in-memory revocation index a verifier keeps, so checking a token needs no Redis round trip.

use std::collections::HashMap;
use std::sync::RwLock;

use uuid::Uuid;

use super::{Revocation, RevocationKind, RevocationRef};
use crate::token::VerifiedToken;

/// Every revocation that still matters, by what it revokes; each entry with its `until`.
#[derive(Default)]
pub struct RevocationIndex {
    entries: RwLock<Entries>,
}

#[derive(Default)]
struct Entries {
    tokens: HashMap<Uuid, i64>,
    sessions: HashMap<Uuid, i64>,
    // (revoked before, until)
    users: HashMap<Uuid, (i64, i64)>,
    keys: HashMap<String, i64>,
}

fn keep_later(slot: &mut i64, until: i64) {
    *slot = (*slot).max(until);
}

impl RevocationIndex {
    /// Adds revocations; applying one twice changes nothing, and a user's instant only moves on.
    pub fn apply<'a>(&self, revocations: impl IntoIterator<Item = &'a Revocation>) {
        self.apply_refs(revocations.into_iter().map(Revocation::as_ref));
    }

    /// Adds revocations read in place from the stream, under one lock.
    pub fn apply_refs<'a>(&self, revocations: impl IntoIterator<Item = RevocationRef<'a>>) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for revocation in revocations {
            let until = revocation.until;
            let uuid = Uuid::try_parse_ascii(revocation.id).ok();
            match (revocation.kind, uuid) {
                (RevocationKind::Token, Some(id)) => {
                    keep_later(entries.tokens.entry(id).or_insert(until), until)
                }
                (RevocationKind::Session, Some(id)) => {
                    keep_later(entries.sessions.entry(id).or_insert(until), until)
                }
                (RevocationKind::User, Some(id)) => {
                    let before = revocation.before.unwrap_or(i64::MAX);
                    let slot = entries.users.entry(id).or_insert((before, until));
                    *slot = (slot.0.max(before), slot.1.max(until));
                }
                (RevocationKind::Key, _) => {
                    let Ok(kid) = std::str::from_utf8(revocation.id) else {
                        continue;
                    };
                    keep_later(entries.keys.entry(kid.to_owned()).or_insert(until), until);
                }
                // An id that is not a UUID cannot match any token we issue.
                (_, None) => {}
            }
        }
    }

    /// Makes room for `additional` token revocations (the usual kind), so a bulk load does not
    /// rehash as it grows.
    pub fn reserve(&self, additional: usize) {
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .tokens
            .reserve(additional);
    }

    /// The kind of the first revocation that rejects `token`, if any.
    pub fn revoked_by(&self, token: &VerifiedToken) -> Option<RevocationKind> {
        let entries = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let claims = &token.claims;
        if entries.tokens.contains_key(&claims.jti) {
            Some(RevocationKind::Token)
        } else if entries.sessions.contains_key(&claims.sid) {
            Some(RevocationKind::Session)
        } else if entries
            .users
            .get(&claims.sub)
            .is_some_and(|(before, _)| claims.iat <= *before)
        {
            Some(RevocationKind::User)
        } else if entries.keys.contains_key(&token.kid) {
            Some(RevocationKind::Key)
        } else {
            None
        }
    }

    /// Forgets entries whose tokens have all expired by `now`; returns how many.
    pub fn prune(&self, now: i64) -> usize {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = entries.len();
        entries.tokens.retain(|_, until| *until >= now);
        entries.sessions.retain(|_, until| *until >= now);
        entries.users.retain(|_, (_, until)| *until >= now);
        entries.keys.retain(|_, until| *until >= now);
        before - entries.len()
    }

    /// How many revocations are indexed.
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Entries {
    fn len(&self) -> usize {
        self.tokens.len() + self.sessions.len() + self.users.len() + self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::tests::token;

    #[test]
    fn the_index_answers_like_the_keys_would() {
        let index = RevocationIndex::default();
        let t = token(100);
        assert_eq!(index.revoked_by(&t), None);
        index.apply(&[Revocation::user(t.claims.sub, 99, 2_000)]);
        assert_eq!(index.revoked_by(&t), None, "issued after the instant");
        index.apply(&[Revocation::user(t.claims.sub, 100, 2_000)]);
        assert_eq!(index.revoked_by(&t), Some(RevocationKind::User));
        index.apply(&[Revocation::user(t.claims.sub, 50, 2_000)]);
        assert_eq!(
            index.revoked_by(&t),
            Some(RevocationKind::User),
            "an older instant never un-revokes"
        );
        let other = token(100);
        index.apply(&[
            Revocation::session(other.claims.sid, 2_000),
            Revocation::token(other.claims.jti, 2_000),
        ]);
        assert_eq!(index.revoked_by(&other), Some(RevocationKind::Token));
        index.apply(&[Revocation::key("k1", 2_000)]);
        assert_eq!(index.revoked_by(&token(1)), Some(RevocationKind::Key));
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn pruning_forgets_only_what_can_no_longer_matter() {
        let index = RevocationIndex::default();
        let t = token(100);
        index.apply(&[
            Revocation::token(t.claims.jti, 1_000),
            Revocation::session(t.claims.sid, 3_000),
        ]);
        assert_eq!(index.prune(2_000), 1);
        assert_eq!(index.revoked_by(&t), Some(RevocationKind::Session));
    }
}
