//! Opaque secret tokens (refresh tokens, device tokens): 256 random bits from the OS CSPRNG,
//! handed out in base64url and stored only as a SHA-256 hash.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// The length of an encoded token (32 bytes in unpadded base64url).
const ENCODED_LEN: usize = 43;

/// A token as handed to the client.
pub struct OpaqueToken {
    raw: [u8; 32],
}

impl OpaqueToken {
    /// A new token from the OS CSPRNG.
    pub fn generate() -> anyhow::Result<Self> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|error| anyhow::anyhow!("no randomness: {error}"))?;
        Ok(Self { raw })
    }

    /// Reads a token presented by a client; `None` unless it has our exact format.
    pub fn parse(encoded: &str) -> Option<Self> {
        if encoded.len() != ENCODED_LEN || !auth_core::token::is_canonical_base64url(encoded.as_bytes()) {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        Some(Self {
            raw: bytes.try_into().ok()?,
        })
    }

    /// The form given to the client.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.raw)
    }

    /// What the database stores.
    pub fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.raw).to_vec()
    }

    /// `child` encrypted under a key derived from this token: only a client presenting this token
    /// again can get the child back, and the stored value reveals nothing without it.
    pub fn seal(&self, child: &OpaqueToken) -> Vec<u8> {
        xor(&child.raw, &self.sealing_key()).to_vec()
    }

    /// The child sealed by [`OpaqueToken::seal`].
    pub fn unseal(&self, sealed: &[u8]) -> Option<OpaqueToken> {
        let sealed: [u8; 32] = sealed.try_into().ok()?;
        Some(OpaqueToken {
            raw: xor(&sealed, &self.sealing_key()),
        })
    }

    // Domain-separated from `hash`, so the stored hash does not give the sealing key away.
    fn sealing_key(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"auth-platform refresh-token seal v1\0");
        hasher.update(self.raw);
        hasher.finalize().into()
    }
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_only_our_format_parses() {
        let token = OpaqueToken::generate().unwrap();
        let encoded = token.encode();
        assert_eq!(encoded.len(), ENCODED_LEN);
        assert_eq!(OpaqueToken::parse(&encoded).unwrap().hash(), token.hash());
        assert!(OpaqueToken::parse(&encoded[1..]).is_none());
        assert!(OpaqueToken::parse(&format!("{encoded}=")).is_none());
        assert!(OpaqueToken::parse("not a token").is_none());
    }

    #[test]
    fn a_sealed_child_opens_only_with_its_parent() {
        let parent = OpaqueToken::generate().unwrap();
        let child = OpaqueToken::generate().unwrap();
        let sealed = parent.seal(&child);
        assert_ne!(sealed, child.raw.to_vec());
        assert_ne!(sealed, parent.hash());
        assert_eq!(parent.unseal(&sealed).unwrap().encode(), child.encode());
        let stranger = OpaqueToken::generate().unwrap();
        assert_ne!(stranger.unseal(&sealed).unwrap().encode(), child.encode());
    }
}
