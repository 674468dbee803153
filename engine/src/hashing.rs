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
/// encoding is unambiguous.
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
    let mut h = Xxh3::new();
    let mut reply_bytes = Vec::new();
    for reply in [chosen, rejected] {
        h.update(&prompt_bytes);
        reply_bytes.clear();
        push_turns(reply, "assistant", &mut reply_bytes);
        reply_bytes.push(END_SIDE);
        h.update(&reply_bytes);
    }
    h.digest128()
}

const END_TEXT: u8 = 0xff;
const END_ROLE: u8 = 0xfe;
const END_SIDE: u8 = 0xfd;

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
