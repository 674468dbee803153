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

/// Which form of a pair exact dedup compares (`--dedup-as-written` picks `AsWritten`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DedupForm {
    /// Every input form normalised to one (whole chosen conversation, whole rejected
    /// conversation), texts in Unicode NFC with whitespace runs collapsed and both
    /// ends trimmed: the same comparison written as text or messages, in the explicit
    /// or the TRL implicit form, or with different spacing, is one pair.
    #[default]
    Canonical,
    /// The bytes as written (`content_hash`): only identical rows are duplicates.
    AsWritten,
}

/// 128-bit key of a pair's canonical form (`DedupForm::Canonical`). Each side is the
/// whole conversation its reply ends: the prompt's turns (a plain-text prompt is one
/// user turn; in the implicit form the prompt is inside the replies already) and then
/// the reply's (a plain-text reply is one assistant turn). Each turn feeds its role
/// and its normalised text, each closed by a byte that UTF-8 never holds, so the
/// encoding is unambiguous. The key is oriented (`oriented_key`): the same comparison
/// with chosen and rejected swapped has the key with bit 0 flipped.
pub fn canonical_pair_hash(
    prompt: &Conversation,
    chosen: &Conversation,
    rejected: &Conversation,
    implicit_prompt: bool,
) -> u128 {
    // The prompt's normalised bytes are made once and fed to both sides.
    let mut prompt_bytes = Vec::new();
    if !implicit_prompt {
        push_turns(prompt, "user", &mut prompt_bytes);
    }
    let mut reply_bytes = Vec::new();
    let mut side = |reply: &Conversation| {
        let mut h = Xxh3::new();
        h.update(&prompt_bytes);
        reply_bytes.clear();
        push_turns(reply, "assistant", &mut reply_bytes);
        h.update(&reply_bytes);
        h.digest128()
    };
    let chosen_side = side(chosen);
    oriented_key(chosen_side, side(rejected))
}

/// The dedup key of a pair as written (`DedupForm::AsWritten`): the bytes of each side
/// exactly as read, oriented like `canonical_pair_hash`.
pub fn as_written_pair_hash(
    prompt: &Conversation,
    chosen: &Conversation,
    rejected: &Conversation,
) -> u128 {
    let side = |reply: &Conversation| {
        let mut h = Xxh3::new();
        prompt.hash_into(&mut h);
        reply.hash_into(&mut h);
        h.digest128()
    };
    oriented_key(side(chosen), side(rejected))
}

/// A key of the unordered pair of sides with the orientation in bit 0: a pair and its
/// swapped copy (the same comparison with the opposite label) differ in bit 0 only, so
/// one index finds both duplicates (equal keys) and conflicting labels (`key ^ 1`).
fn oriented_key(chosen_side: u128, rejected_side: u128) -> u128 {
    let (low, high) = if chosen_side <= rejected_side {
        (chosen_side, rejected_side)
    } else {
        (rejected_side, chosen_side)
    };
    let mut h = Xxh3::new();
    h.update(&low.to_le_bytes());
    h.update(&high.to_le_bytes());
    (h.digest128() & !1) | u128::from(chosen_side > rejected_side)
}

/// 64-bit key of a dedup hash (`PreferencePair::dedup_hash`) that keeps its orientation
/// in bit 0: `dedup_key(swapped) == dedup_key(pair) ^ 1`.
pub fn dedup_key(dedup_hash: u128) -> u64 {
    (content_key(dedup_hash) & !1) | (dedup_hash as u64 & 1)
}

/// The dedup key of the same comparison with chosen and rejected swapped.
pub fn swapped_dedup_key(key: u64) -> u64 {
    key ^ 1
}

/// The worker-routing value of a dedup key: both orientations of a comparison go to
/// the same worker, so the worker holding a key can see its swapped copy.
pub fn dedup_route(key: u64) -> u64 {
    key >> 1
}

const END_TEXT: u8 = 0xff;
const END_ROLE: u8 = 0xfe;

/// Appends each turn's role and normalised text, each closed by its end byte.
fn push_turns(c: &Conversation, text_role: &str, out: &mut Vec<u8>) {
    let mut turn = |role: &str, text: &str| {
        out.extend_from_slice(role.as_bytes());
        out.push(END_ROLE);
        push_normalised(text, out);
        out.push(END_TEXT);
    };
    match c {
        Conversation::Text(t) => turn(text_role, t),
        Conversation::Messages(ms) => ms.iter().for_each(|m| turn(&m.role, &m.content)),
    }
}

/// Appends `text` in NFC with every run of whitespace as one space and none at either
/// end. ASCII text (most of it) is already NFC and skips the normaliser.
fn push_normalised(text: &str, out: &mut Vec<u8>) {
    let start = out.len();
    let mut pending_space = false;
    if text.is_ascii() {
        for &b in text.as_bytes() {
            if b.is_ascii_whitespace() || b == 0x0b {
                pending_space = out.len() > start;
            } else {
                if pending_space {
                    out.push(b' ');
                    pending_space = false;
                }
                out.push(b);
            }
        }
        return;
    }
    use unicode_normalization::UnicodeNormalization;
    let mut utf8 = [0u8; 4];
    for c in text.nfc() {
        if c.is_whitespace() {
            pending_space = out.len() > start;
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Message;

    fn text(s: &str) -> Conversation {
        Conversation::Text(s.into())
    }

    fn msgs(turns: &[(&str, &str)]) -> Conversation {
        Conversation::Messages(
            turns
                .iter()
                .map(|(role, content)| Message {
                    role: role.to_string(),
                    content: content.to_string(),
                })
                .collect(),
        )
    }

    #[test]
    fn one_comparison_in_every_form_has_one_canonical_key() {
        let key = canonical_pair_hash(&text("Hi there"), &text("Hello!"), &text("Go away."), false);
        // Messages, explicit.
        assert_eq!(
            key,
            canonical_pair_hash(
                &msgs(&[("user", "Hi there")]),
                &msgs(&[("assistant", "Hello!")]),
                &msgs(&[("assistant", "Go away.")]),
                false
            )
        );
        // TRL's implicit form: whole conversations, the prompt shared.
        assert_eq!(
            key,
            canonical_pair_hash(
                &msgs(&[("user", "Hi there")]),
                &msgs(&[("user", "Hi there"), ("assistant", "Hello!")]),
                &msgs(&[("user", "Hi there"), ("assistant", "Go away.")]),
                true
            )
        );
        // Whitespace: runs collapse, ends trim.
        assert_eq!(
            key,
            canonical_pair_hash(
                &text("  Hi \t\n there\n"),
                &text("Hello!\n"),
                &text("Go away. "),
                false
            )
        );
        // Every ASCII whitespace character (vertical tab included, as
        // `char::is_whitespace` has it), on the ASCII path and the Unicode one alike.
        assert_eq!(
            key,
            canonical_pair_hash(
                &text("Hi\u{0b}\u{0c}\rthere"),
                &text("Hello!"),
                &text("Go away."),
                false
            )
        );
        assert_eq!(
            canonical_pair_hash(&text("é x"), &text("a"), &text("b"), false),
            canonical_pair_hash(&text("é\u{0b}\u{2003}x "), &text("a"), &text("b"), false)
        );
        // NFC: "é" precomposed and decomposed.
        assert_eq!(
            canonical_pair_hash(&text("caf\u{e9}"), &text("a"), &text("b"), false),
            canonical_pair_hash(&text("cafe\u{301}"), &text("a"), &text("b"), false)
        );
    }

    #[test]
    fn a_swapped_copy_differs_in_the_orientation_bit_only() {
        for implicit in [false, true] {
            let pair =
                canonical_pair_hash(&text("Hi"), &text("Hello!"), &text("Go away."), implicit);
            let swapped =
                canonical_pair_hash(&text("Hi"), &text("Go away."), &text("Hello!"), implicit);
            assert_ne!(pair, swapped);
            assert_eq!(dedup_key(swapped), swapped_dedup_key(dedup_key(pair)));
            assert_eq!(
                dedup_route(dedup_key(pair)),
                dedup_route(dedup_key(swapped))
            );
        }
        let pair = as_written_pair_hash(&text("Hi"), &text("a"), &text("b"));
        let swapped = as_written_pair_hash(&text("Hi"), &text("b"), &text("a"));
        assert_eq!(dedup_key(swapped), swapped_dedup_key(dedup_key(pair)));
        // Different comparisons are not each other's swapped copies.
        let other = canonical_pair_hash(&text("Hi"), &text("Hello"), &text("Go away."), false);
        assert_ne!(dedup_key(other) >> 1, dedup_key(pair) >> 1);
    }

    #[test]
    fn different_comparisons_have_different_canonical_keys() {
        let key = canonical_pair_hash(&text("Hi there"), &text("Hello!"), &text("Go away."), false);
        for other in [
            // Swapped: the same comparison with the opposite label is not a duplicate.
            canonical_pair_hash(&text("Hi there"), &text("Go away."), &text("Hello!"), false),
            // A word's case, a space inside a word, punctuation.
            canonical_pair_hash(&text("hi there"), &text("Hello!"), &text("Go away."), false),
            canonical_pair_hash(
                &text("Hi the re"),
                &text("Hello!"),
                &text("Go away."),
                false,
            ),
            canonical_pair_hash(&text("Hi there"), &text("Hello"), &text("Go away."), false),
            // The prompt as a system turn is not the user's.
            canonical_pair_hash(
                &msgs(&[("system", "Hi there")]),
                &text("Hello!"),
                &text("Go away."),
                false,
            ),
            // Text moved across the turn boundary.
            canonical_pair_hash(&text("Hi"), &text("there Hello!"), &text("Go away."), false),
        ] {
            assert_ne!(key, other);
        }
    }
}
