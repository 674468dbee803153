//! Hashed word n-gram features of a (prompt, response): the representation of the
//! built-in reward model (DESIGN §3), the same family as the fastText classifiers used
//! for quality filtering at web scale (Joulin et al. 2017, "Bag of Tricks").
//!
//! Words are maximal runs of alphanumeric characters, lower-cased, hashed as they are
//! read (no allocation). Features of a response: its unigrams and bigrams, the unigrams
//! crossed with the pair's task category (so the model can learn that what is good in
//! coding is not what is good in creative writing), and a length bucket. The vector is
//! binary and L2-normalised, so a response's score is bounded by ‖w‖ whatever its length.

use synpref_engine::model::Conversation;

/// Bits of the hashed feature space: 2^20 weights (4 MiB of f32) keep collisions rare
/// for a vocabulary of a few hundred thousand n-grams, as in fastText's default bucket
/// count of 2M for bigrams.
pub const DEFAULT_FEATURE_BITS: u32 = 20;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const SEED_BIGRAM: u64 = 0x9e37_79b9_7f4a_7c15;
const SEED_CATEGORY: u64 = 0xc2b2_ae3d_27d4_eb4f;
const SEED_LENGTH: u64 = 0x1656_67b1_9e37_79f9;

/// Final mixing step (splitmix64) so that the top bits used as the index are uniform.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Calls `f` with the hash of each lower-cased word of `text`.
#[inline]
pub fn for_each_word(text: &str, mut f: impl FnMut(u64)) {
    for_each_word_span(text, |h, _| f(h));
}

/// Calls `f` with the hash of each lower-cased word of `text` and the word's byte range
/// in `text` (decontamination quotes the words it matched).
#[inline]
pub fn for_each_word_span(text: &str, mut f: impl FnMut(u64, std::ops::Range<usize>)) {
    let mut h = FNV_OFFSET;
    let mut start = None;
    for (i, &b) in text.as_bytes().iter().enumerate() {
        // ASCII fast path; bytes of multi-byte UTF-8 characters (>= 0x80) count as word
        // characters, so non-Latin words hash as whole words too (and a word's range
        // always falls on character boundaries).
        let c = if b.is_ascii_alphanumeric() || b >= 0x80 {
            b.to_ascii_lowercase()
        } else {
            0
        };
        if c != 0 {
            h = (h ^ c as u64).wrapping_mul(FNV_PRIME);
            start.get_or_insert(i);
        } else if let Some(s) = start.take() {
            f(h, s..i);
            h = FNV_OFFSET;
        }
    }
    if let Some(s) = start {
        f(h, s..text.len());
    }
}

/// Hash of a category label (0 when absent).
pub fn category_hash(category: Option<&str>) -> u64 {
    match category {
        None => 0,
        Some(c) => {
            let mut h = SEED_CATEGORY;
            for_each_word(c, |w| h = mix(h ^ w));
            h
        }
    }
}

/// A response's sparse feature vector: indices (possibly repeated) and the value each
/// occurrence carries (1/√n for n occurrences, i.e. L2 normalisation of the count vector
/// treating repeats as separate dimensions, which is cheap and close enough).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SparseFeatures {
    pub indices: Vec<u32>,
    pub value: f32,
}

/// Extracts features of a response into `out` (cleared first).
pub fn response_features(response: &str, category: u64, bits: u32, out: &mut SparseFeatures) {
    out.indices.clear();
    let shift = 64 - bits;
    let mut prev: u64 = 0;
    let mut words = 0u32;
    let idx = |h: u64| (mix(h) >> shift) as u32;
    for_each_word(response, |w| {
        out.indices.push(idx(w));
        if words > 0 {
            out.indices
                .push(idx(prev.rotate_left(23) ^ w ^ SEED_BIGRAM));
        }
        if category != 0 {
            out.indices.push(idx(w ^ category));
        }
        prev = w;
        words += 1;
    });
    // Length bucket: ⌊log2(1 + words)⌋, crossed with the category.
    let bucket = (32 - (words + 1).leading_zeros()) as u64;
    out.indices.push(idx(SEED_LENGTH ^ bucket));
    out.indices
        .push(idx(SEED_LENGTH ^ bucket ^ category.rotate_left(7)));
    out.value = 1.0 / (out.indices.len() as f32).sqrt();
}

/// The text of a reply for scoring: the whole response, or for the implicit-prompt form
/// (whole conversations) its final message.
pub fn reply_text(reply: &Conversation, implicit_prompt: bool) -> std::borrow::Cow<'_, str> {
    match reply {
        Conversation::Text(t) => std::borrow::Cow::Borrowed(t.as_str()),
        Conversation::Messages(ms) if implicit_prompt => {
            std::borrow::Cow::Borrowed(ms.last().map(|m| m.content.as_str()).unwrap_or(""))
        }
        Conversation::Messages(ms) if ms.len() == 1 => {
            std::borrow::Cow::Borrowed(ms[0].content.as_str())
        }
        Conversation::Messages(ms) => std::borrow::Cow::Owned(
            ms.iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_case_insensitive_and_split_on_punctuation() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for_each_word("Hello, World!", |h| a.push(h));
        for_each_word("hello world", |h| b.push(h));
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn features_are_normalised_and_deterministic() {
        let mut f = SparseFeatures::default();
        response_features(
            "the cat sat on the mat",
            category_hash(Some("coding")),
            20,
            &mut f,
        );
        let mut g = SparseFeatures::default();
        response_features(
            "the cat sat on the mat",
            category_hash(Some("coding")),
            20,
            &mut g,
        );
        assert_eq!(f, g);
        assert!((f.value * f.value * f.indices.len() as f32 - 1.0).abs() < 1e-5);
        assert!(f.indices.iter().all(|&i| i < (1 << 20)));
    }
}
