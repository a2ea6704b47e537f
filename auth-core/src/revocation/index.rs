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

    /// Appends every revocation still mattering at `now` in the compact form of a snapshot
    /// (`super::snapshot`): per entry a tag, the id (16 bytes for a UUID; a length and the bytes
    /// for a `kid`), `before` for users, and `until`, little-endian.
    pub fn encode_into(&self, now: i64, out: &mut Vec<u8>) {
        let entries = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let live = |until: &&i64| **until >= now;
        for (tag, map) in [(TAG_TOKEN, &entries.tokens), (TAG_SESSION, &entries.sessions)] {
            for (id, until) in map.iter().filter(|(_, until)| live(until)) {
                out.push(tag);
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(&until.to_le_bytes());
            }
        }
        for (id, (before, until)) in entries.users.iter().filter(|(_, (_, until))| *until >= now) {
            out.push(TAG_USER);
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&before.to_le_bytes());
            out.extend_from_slice(&until.to_le_bytes());
        }
        for (kid, until) in entries.keys.iter().filter(|(_, until)| live(until)) {
            let Ok(length) = u16::try_from(kid.len()) else {
                continue;
            };
            out.push(TAG_KEY);
            out.extend_from_slice(&length.to_le_bytes());
            out.extend_from_slice(kid.as_bytes());
            out.extend_from_slice(&until.to_le_bytes());
        }
    }

    /// Adds the revocations of an encoded snapshot body and returns how many; `None` (and nothing
    /// added) when any of it is malformed.
    pub fn apply_encoded(&self, body: &[u8]) -> Option<usize> {
        let count = decode(body, |_| {})?;
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Mostly token revocations: one allocation instead of a rehash at every doubling.
        entries.tokens.reserve(count);
        decode(body, |record| match record {
            Record::Token(id, until) => keep_later(entries.tokens.entry(id).or_insert(until), until),
            Record::Session(id, until) => keep_later(entries.sessions.entry(id).or_insert(until), until),
            Record::User(id, before, until) => {
                let slot = entries.users.entry(id).or_insert((before, until));
                *slot = (slot.0.max(before), slot.1.max(until));
            }
            Record::Key(kid, until) => keep_later(entries.keys.entry(kid.to_owned()).or_insert(until), until),
        })?;
        Some(count)
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

const TAG_TOKEN: u8 = 1;
const TAG_SESSION: u8 = 2;
const TAG_USER: u8 = 3;
const TAG_KEY: u8 = 4;

/// One record of an encoded snapshot body.
enum Record<'a> {
    Token(Uuid, i64),
    Session(Uuid, i64),
    User(Uuid, i64, i64),
    Key(&'a str, i64),
}

/// Walks an encoded body, handing each record to `each`; the count, or `None` when malformed.
fn decode<'a>(mut body: &'a [u8], mut each: impl FnMut(Record<'a>)) -> Option<usize> {
    fn take<'a>(body: &mut &'a [u8], length: usize) -> Option<&'a [u8]> {
        let (head, rest) = body.split_at_checked(length)?;
        *body = rest;
        Some(head)
    }
    fn number(body: &mut &[u8]) -> Option<i64> {
        Some(i64::from_le_bytes(take(body, 8)?.try_into().ok()?))
    }
    fn uuid(body: &mut &[u8]) -> Option<Uuid> {
        Uuid::from_slice(take(body, 16)?).ok()
    }
    let mut count = 0;
    while let Some((&tag, rest)) = body.split_first() {
        body = rest;
        let record = match tag {
            TAG_TOKEN => Record::Token(uuid(&mut body)?, number(&mut body)?),
            TAG_SESSION => Record::Session(uuid(&mut body)?, number(&mut body)?),
            TAG_USER => Record::User(uuid(&mut body)?, number(&mut body)?, number(&mut body)?),
            TAG_KEY => {
                let length = u16::from_le_bytes(take(&mut body, 2)?.try_into().ok()?);
                let kid = std::str::from_utf8(take(&mut body, usize::from(length))?).ok()?;
                Record::Key(kid, number(&mut body)?)
            }
            _ => return None,
        };
        each(record);
        count += 1;
    }
    Some(count)
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
