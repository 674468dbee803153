//! Stable hashes: content hashes of pairs, derived pair ids, and the 64-bit keys used to
//! shard data over workers. All are xxh3 (fast, stable across platforms and releases),
//! never `std`'s randomly seeded hasher, so every process and run agrees.

use crate::model::Conversation;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// 128-bit hash of (x, y_w, y_l) in a canonical encoding: the key of exact dedup
/// (DESIGN §1) and of the score cache.
pub fn content_hash(prompt: &Conversation, chosen: &Conversation, rejected: &Conversation) -> u128 {
    let mut h = Xxh3::new();
    prompt.hash_into(&mut h);
    chosen.hash_into(&mut h);
    rejected.hash_into(&mut h);
    h.digest128()
}

/// The pair id derived when the input has none (DESIGN §4): the content hash in hex.
pub fn derived_pair_id(content_hash: u128) -> String {
    format!("h{content_hash:032x}")
}

/// 64-bit key of a pair id: the exchange key that shards pairs over workers, and the key
/// of per-pair-id maps (gold labels, judge votes, truth).
pub fn pair_key(pair_id: &str) -> u64 {
    xxh3_64(pair_id.as_bytes())
}

/// 64-bit exchange key of a content hash.
pub fn content_key(content_hash: u128) -> u64 {
    (content_hash as u64) ^ ((content_hash >> 64) as u64).rotate_left(17)
}

/// A uniform number in [0, 1) drawn from a pair id and a salt: deterministic sampling
/// (training slices, fractions) independent of worker count and input order.
pub fn unit_interval(pair_id: &str, salt: u64) -> f64 {
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(pair_id.as_bytes(), salt);
    (h >> 11) as f64 / (1u64 << 53) as f64
}
