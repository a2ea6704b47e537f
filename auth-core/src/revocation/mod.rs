//! Revocation as the server writes it and every verifier reads it (DESIGN.md "Revocation").
//!
//! Each revocation is a Redis key whose TTL ends when it can no longer matter, plus an entry on the
//! revocation stream, so a verifier can follow every revocation without a lookup per request.

mod entry;
pub mod epoch;
mod follower;
mod index;
mod keys;
mod load_queue;
mod lookup;
mod publish;
mod range_reader;
pub mod snapshot;

pub use entry::{Revocation, RevocationKind, RevocationRef};
pub use epoch::Epoch;
pub use follower::{FollowerStatus, IndexCheck, StreamFollower};
pub use index::RevocationIndex;
pub use keys::RedisKeys;
pub use lookup::{LookupOutcome, lookup};
pub use publish::{publish, unix_now};

#[cfg(test)]
mod tests;
