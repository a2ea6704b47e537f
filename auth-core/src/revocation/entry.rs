//! One revocation, and its stream form.

use uuid::Uuid;

use crate::token::VerifiedToken;

/// What a revocation applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationKind {
    /// One token, by `jti`.
    Token,
    /// Every token of one session, by `sid`.
    Session,
    /// Every token of one user issued at or before an instant.
    User,
    /// Every token signed by one key, by `kid`.
    Key,
}

impl RevocationKind {
    /// The name used in keys, the stream and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Token => "jti",
            RevocationKind::Session => "sid",
            RevocationKind::User => "user",
            RevocationKind::Key => "kid",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "jti" => RevocationKind::Token,
            "sid" => RevocationKind::Session,
            "user" => RevocationKind::User,
            "kid" => RevocationKind::Key,
            _ => return None,
        })
    }
}

/// One revocation. `until` (unix seconds) is when it stops mattering: every token it revokes has
/// expired by then, so its key expires and the stream may forget it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// What it applies to.
    pub kind: RevocationKind,
    /// The `jti`, `sid`, user id or `kid`.
    pub id: String,
    /// For [`RevocationKind::User`]: tokens with `iat` at or before this are revoked.
    pub before: Option<i64>,
    /// When the revocation stops mattering.
    pub until: i64,
}

impl Revocation {
    /// Revokes one token until it expires.
    pub fn token(jti: Uuid, until: i64) -> Self {
        Self {
            kind: RevocationKind::Token,
            id: jti.to_string(),
            before: None,
            until,
        }
    }

    /// Revokes every token of a session.
    pub fn session(sid: Uuid, until: i64) -> Self {
        Self {
            kind: RevocationKind::Session,
            id: sid.to_string(),
            before: None,
            until,
        }
    }

    /// Revokes every token of a user issued at or before `before`.
    pub fn user(user_id: Uuid, before: i64, until: i64) -> Self {
        Self {
            kind: RevocationKind::User,
            id: user_id.to_string(),
            before: Some(before),
            until,
        }
    }

    /// Revokes every token signed by a key.
    pub fn key(kid: &str, until: i64) -> Self {
        Self {
            kind: RevocationKind::Key,
            id: kid.to_owned(),
            before: None,
            until,
        }
    }

    /// Whether this revocation rejects `token`.
    pub fn applies_to(&self, token: &VerifiedToken) -> bool {
        let claims = &token.claims;
        match self.kind {
            RevocationKind::Token => self.id == claims.jti.to_string(),
            RevocationKind::Session => self.id == claims.sid.to_string(),
            RevocationKind::User => {
                self.id == claims.sub.to_string() && self.before.is_some_and(|before| claims.iat <= before)
            }
            RevocationKind::Key => self.id == token.kid,
        }
    }

    /// The stream entry's fields: `kind`, `id`, `until`, and `before` for users.
    pub fn stream_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("kind", self.kind.as_str().to_owned()),
            ("id", self.id.clone()),
            ("until", self.until.to_string()),
        ];
        if let Some(before) = self.before {
            fields.push(("before", before.to_string()));
        }
        fields
    }

    /// The borrowed form the index takes.
    pub fn as_ref(&self) -> RevocationRef<'_> {
        RevocationRef {
            kind: self.kind,
            id: self.id.as_bytes(),
            before: self.before,
            until: self.until,
        }
    }
}

/// A revocation read in place from a stream entry, without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationRef<'a> {
    /// What it applies to.
    pub kind: RevocationKind,
    /// The `jti`, `sid`, user id or `kid`, as bytes.
    pub id: &'a [u8],
    /// For users: tokens with `iat` at or before this are revoked.
    pub before: Option<i64>,
    /// When it stops mattering.
    pub until: i64,
}

impl<'a> RevocationRef<'a> {
    /// Reads a stream entry's field/value pairs; `None` for an entry this version does not
    /// understand (so a newer writer cannot break an older verifier).
    pub fn from_stream_fields(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Option<Self> {
        let (mut kind, mut id, mut before, mut until) = (None, None, None, None);
        let number = |value: &[u8]| std::str::from_utf8(value).ok()?.parse::<i64>().ok();
        for (field, value) in pairs {
            match field {
                b"kind" => kind = RevocationKind::parse(std::str::from_utf8(value).ok()?),
                b"id" => id = Some(value),
                b"until" => until = number(value),
                b"before" => before = number(value),
                _ => {}
            }
        }
        let kind = kind?;
        if (kind == RevocationKind::User) != before.is_some() {
            return None;
        }
        Some(Self {
            kind,
            id: id?,
            before,
            until: until?,
        })
    }
}
