//! MinHash signatures and LSH band keys of preference pairs, for near-duplicate
//! detection (DESIGN §4 `near_duplicate`; issue 28).
//!
//! # Side-aware, not whole-pair
//!
//! A pair has three sides: the prompt (the conversation before the replies) and its two
//! replies. Each side gets its own MinHash signature over word shingles, and a band
//! matches only when the prompt's band and both replies' bands match (the replies
//! taken as an unordered pair, so a swapped copy matches too). The probability that a
//! band matches is then about `(J_prompt · J_a · J_b)^rows`: the product of the three
//! sides' Jaccard similarities, `similarity` below.
//!
//! Why: preference data is full of pairs that share a prompt, or a prompt and one
//! reply, and differ in the other reply (UltraFeedback-style data pairs each prompt's
//! 4 responses 6 ways). Those are different comparisons, not duplicates. Over the whole
//! pair's shingles they look alike: on `gen` data, a pair and the same prompt and
//! chosen reply with another rejected reply have a whole-pair Jaccard of 0.43 at the
//! median and 0.66 at the 99th percentile (3-word shingles), while 1% of injected
//! near-duplicates (1–3 words edited) fall below 0.76. Per side, the different reply
//! has Jaccard near 0 and the product with it, so such pairs practically never share a
//! band; near-duplicates, edited in one side, keep a high product.
//!
//! # The hash family
//!
//! Words are maximal runs of alphanumeric characters, lower-cased (case and
//! punctuation changes are re-formatting, not edits). A shingle is `shingle_words`
//! consecutive words within one turn (a turn with fewer words is one shingle), hashed
//! to 64 bits (the Fx hash per word, mixed and finalised). Permutation i maps a shingle hash h to the high 32
//! bits of `(h ^ s_i) · m_i` (multiply-shift, Dietzfelbinger et al. 1997) with odd
//! `m_i` and `s_i` from a fixed SplitMix64 stream: the input is already a strong hash,
//! so one multiply per (shingle, permutation) suffices, as in datasketch's
//! `(a·h + b) mod p` over a 32-bit range. The test below checks the signatures
//! estimate Jaccard without bias.

use serde::{Deserialize, Serialize};
use synpref_engine::model::{Conversation, PreferencePair};
use synpref_engine::{Error, Result};

/// The settings of near-duplicate detection (curate's `--near-dup-*` flags).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NearDupSettings {
    /// Detect near-duplicates at all (`--no-near-dup` turns it off).
    pub enabled: bool,
    /// Words per shingle (`--near-dup-shingle`). 2: preference replies are short (15 to
    /// 60 words in `gen`, a few sentences in chat data), and each edited word breaks
    /// `shingle_words` shingles of its side; measured on `gen` near-duplicates the
    /// per-side product at the 5th percentile is 0.67 with 2-word shingles, 0.52 with
    /// 3 and 0.30 with 5 (datatrove's default, made for web pages).
    pub shingle_words: usize,
    /// LSH bands (`--near-dup-bands`). 14, datatrove's default: on 1M `gen` pairs
    /// with 5% injected near-duplicates, 14 bands found 99.78% and 20 (NeMo Curator's)
    /// 99.93%, for 30% more band entries to exchange, sort and hold (docs/benchmarks.md).
    pub bands: usize,
    /// Rows (permutations) per band (`--near-dup-rows`). 3: with 14 bands the S-curve
    /// `1 − (1 − s³)¹⁴` crosses 0.5 at s ≈ 0.37 and finds a pair of product
    /// similarity 0.55 with probability 0.92 and 0.7 with 0.996; a pair with one
    /// reply replaced has s near 0. (NeMo's 13 rows suit whole documents compared as
    /// one set, whose similarity is a single Jaccard, not a product of three.)
    pub rows: usize,
    /// Least similarity (`similarity`: product of the sides' Jaccards) of a candidate
    /// kept by the exact check (`--near-dup-threshold`; the check itself is
    /// `--near-dup-verify`). 0.5: above the S-curve's 0.37 midpoint, below the 0.67
    /// that 95% of injected near-duplicates reach.
    pub threshold: f64,
    /// Check every candidate pair's exact similarity before joining it
    /// (`--near-dup-verify`; off by default, as in NeMo Curator, whose documentation
    /// notes that false positives are rare at its band settings and the check is
    /// costly: here it keeps every row's shingles on local disk during the survey and
    /// reads back those of candidate rows).
    pub verify: bool,
}

impl Default for NearDupSettings {
    fn default() -> Self {
        NearDupSettings {
            enabled: true,
            shingle_words: 2,
            bands: 14,
            rows: 3,
            threshold: 0.5,
            verify: false,
        }
    }
}

impl NearDupSettings {
    /// Checks every setting; errors name the flag.
    pub fn validate(&self) -> Result<()> {
        if !(1..=16).contains(&self.shingle_words) {
            return Err(Error::setting(
                "--near-dup-shingle",
                format!("{} is not between 1 and 16 words", self.shingle_words),
            ));
        }
        if !(1..=64).contains(&self.bands) {
            return Err(Error::setting(
                "--near-dup-bands",
                format!("{} is not between 1 and 64", self.bands),
            ));
        }
        if !(1..=32).contains(&self.rows) {
            return Err(Error::setting(
                "--near-dup-rows",
                format!("{} is not between 1 and 32", self.rows),
            ));
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(Error::setting(
                "--near-dup-threshold",
                format!("{} is not in (0, 1]", self.threshold),
            ));
        }
        Ok(())
    }

    /// Permutations per side: bands × rows.
    pub fn permutations(&self) -> usize {
        self.bands * self.rows
    }
}

/// The shingle hashes of one side.
pub type SideShingles = Vec<u64>;

/// The three sides of a pair: the prompt and the two replies in the pair's order.
pub type PairShingles = [SideShingles; 3];

/// Computes signatures and band keys under one setting (the same on every worker).
#[derive(Clone, Debug)]
pub struct MinHasher {
    settings: NearDupSettings,
    /// The xor and the odd multiplier of each permutation, apart, so that the inner
    /// loop runs over contiguous lanes.
    xors: Vec<u64>,
    multipliers: Vec<u64>,
    /// The CPU has AVX-512 (F, DQ): the signature loop's 64-bit products vectorise.
    avx512: bool,
}

/// SplitMix64 (Steele, Lea & Flood 2014): the fixed stream the permutations come from.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64's finaliser (a bijection that spreads every input bit over the output).
fn finalise(h: u64) -> u64 {
    let h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Seed of the permutation stream (any fixed value; changing it changes every key).
const PERMUTATION_SEED: u64 = 0x5e4a_d0b1_0000_0028;

impl MinHasher {
    pub fn new(settings: NearDupSettings) -> MinHasher {
        let mut state = PERMUTATION_SEED;
        let (mut xors, mut multipliers) = (Vec::new(), Vec::new());
        for _ in 0..settings.permutations() {
            xors.push(splitmix64(&mut state));
            multipliers.push(splitmix64(&mut state) | 1);
        }
        #[cfg(target_arch = "x86_64")]
        let avx512 = is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq");
        #[cfg(not(target_arch = "x86_64"))]
        let avx512 = false;
        MinHasher {
            settings,
            xors,
            multipliers,
            avx512,
        }
    }

    pub fn settings(&self) -> &NearDupSettings {
        &self.settings
    }

    /// The pair's shingle hashes, side by side, as they occur (a shingle may repeat;
    /// MinHash does not mind). `as_sets` makes sets of them for `similarity`.
    pub fn shingles(&self, pair: &PreferencePair) -> PairShingles {
        let n = self.settings.shingle_words;
        let mut out: PairShingles = Default::default();
        let mut words = Vec::new();
        for (side, texts) in sides(pair).into_iter().enumerate() {
            for text in texts {
                shingles_of(text, n, &mut words, &mut out[side]);
            }
        }
        out
    }

    /// The pair's band keys into `keys` (`shingles`, then `band_keys`).
    pub fn pair_band_keys(&self, pair: &PreferencePair, keys: &mut Vec<u64>) {
        self.band_keys(&self.shingles(pair), keys);
    }

    /// The MinHash signature of one side's shingles into `signature`
    /// (`permutations()` values; an empty side has all values `u32::MAX`).
    fn signature(&self, shingles: &[u64], signature: &mut Vec<u32>) {
        signature.clear();
        signature.resize(self.xors.len(), u32::MAX);
        #[cfg(target_arch = "x86_64")]
        if self.avx512 {
            // SAFETY: the CPU has the features (checked in `new`).
            unsafe { signature_avx512(shingles, &self.xors, &self.multipliers, signature) };
            return;
        }
        signature_lanes(shingles, &self.xors, &self.multipliers, signature);
    }

    /// The pair's band keys into `keys` (`bands` of them, cleared first): band t's key
    /// hashes t, the prompt's band and the two replies' bands as an unordered pair.
    pub fn band_keys(&self, shingles: &PairShingles, keys: &mut Vec<u64>) {
        let rows = self.settings.rows;
        let mut signatures: [Vec<u32>; 3] = Default::default();
        for (side, sig) in shingles.iter().zip(signatures.iter_mut()) {
            self.signature(side, sig);
        }
        keys.clear();
        // A band's values folded by multiply-xor, finalised by SplitMix64's mixer: the
        // values are already uniform, so this keeps distinct bands distinct (2⁻⁶⁴)
        // at a fraction of a general hash's cost.
        let fold = |h: u64, v: u64| (h.rotate_left(29) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let band_hash = |sig: &[u32], t: usize| {
            let h = sig[t * rows..(t + 1) * rows]
                .iter()
                .fold(t as u64 + 1, |h, &v| fold(h, u64::from(v)));
            finalise(h)
        };
        for t in 0..self.settings.bands {
            let prompt = band_hash(&signatures[0], t);
            let (a, b) = (band_hash(&signatures[1], t), band_hash(&signatures[2], t));
            let (low, high) = (a.min(b), a.max(b));
            keys.push(finalise(fold(fold(fold(t as u64, prompt), low), high)));
        }
    }
}

/// The signature loop: per shingle, every permutation's value, kept where smaller.
#[inline(always)]
fn signature_lanes(shingles: &[u64], xors: &[u64], multipliers: &[u64], signature: &mut [u32]) {
    let k = signature.len();
    let (xors, multipliers) = (&xors[..k], &multipliers[..k]);
    for &h in shingles {
        for i in 0..k {
            let v = ((h ^ xors[i]).wrapping_mul(multipliers[i]) >> 32) as u32;
            signature[i] = signature[i].min(v);
        }
    }
}

/// `signature_lanes` compiled for AVX-512 (8 products per instruction; measured in
/// docs/benchmarks.md).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl")]
unsafe fn signature_avx512(
    shingles: &[u64],
    xors: &[u64],
    multipliers: &[u64],
    signature: &mut [u32],
) {
    signature_lanes(shingles, xors, multipliers, signature)
}

/// The texts of a pair's three sides: the prompt's turns, then each reply's own turns
/// (in the implicit-prompt form the replies hold the prompt's turns first; they are
/// skipped, so every form of one pair has the same sides).
fn sides(pair: &PreferencePair) -> [Vec<&str>; 3] {
    fn turns(c: &Conversation) -> Vec<&str> {
        match c {
            Conversation::Text(t) => vec![t.as_str()],
            Conversation::Messages(ms) => ms.iter().map(|m| m.content.as_str()).collect(),
        }
    }
    let prompt = turns(&pair.prompt);
    let skip = if pair.implicit_prompt {
        prompt.len()
    } else {
        0
    };
    let chosen = turns(&pair.chosen).into_iter().skip(skip).collect();
    let rejected = turns(&pair.rejected).into_iter().skip(skip).collect();
    [prompt, chosen, rejected]
}

/// Hash of a shingle that stands for a text without words (punctuation only, or
/// empty), so that two such sides match each other and nothing else.
const NO_WORDS: u64 = 0x6e6f_2077_6f72_6473;

/// Appends the shingle hashes of one turn's text to `out` (`words` is scratch).
fn shingles_of(text: &str, n: usize, words: &mut Vec<u64>, out: &mut Vec<u64>) {
    words.clear();
    // Each word's hash is built byte by byte as the text is scanned, lower-cased
    // (`word_step`); a word ends at any other character.
    let mut h = WORD_START;
    let mut in_word = false;
    if text.is_ascii() {
        for &b in text.as_bytes() {
            if b.is_ascii_alphanumeric() {
                h = word_step(h, b.to_ascii_lowercase());
                in_word = true;
            } else if in_word {
                words.push(h);
                (h, in_word) = (WORD_START, false);
            }
        }
    } else {
        let mut utf8 = [0u8; 4];
        for c in text.chars() {
            if c.is_alphanumeric() {
                for l in c.to_lowercase() {
                    for &b in l.encode_utf8(&mut utf8).as_bytes() {
                        h = word_step(h, b);
                    }
                }
                in_word = true;
            } else if in_word {
                words.push(h);
                (h, in_word) = (WORD_START, false);
            }
        }
    }
    if in_word {
        words.push(h);
    }
    if words.is_empty() {
        out.push(NO_WORDS);
        return;
    }
    let mix = |window: &[u64]| {
        let h = window.iter().fold(0u64, |h, &w| {
            (h.rotate_left(23) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        });
        // Every bit of the shingle reaches the high bits the permutations keep.
        finalise(h)
    };
    if words.len() <= n {
        out.push(mix(words));
    } else {
        out.extend(words.windows(n).map(mix));
    }
}

/// A word's hash starts here and takes one byte at a time (`word_step`): the Fx hash
/// (rustc's), fed as the text is scanned, so no word is copied. The shingle mix
/// finalises it.
const WORD_START: u64 = 0xcbf2_9ce4_8422_2325;

#[inline(always)]
fn word_step(h: u64, byte: u8) -> u64 {
    (h.rotate_left(5) ^ u64::from(byte)).wrapping_mul(0x517c_c1b7_2722_0a95)
}

/// Each side's shingles sorted and distinct: the sets `similarity` compares.
pub fn as_sets(mut shingles: PairShingles) -> PairShingles {
    for side in shingles.iter_mut() {
        side.sort_unstable();
        side.dedup();
    }
    shingles
}

/// Jaccard similarity of two sorted, distinct sets.
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    both as f64 / (a.len() + b.len() - both) as f64
}

/// The similarity LSH approximates: the prompt's Jaccard times the replies' (matched
/// in the orientation where their product is larger, so a swapped copy counts too).
pub fn similarity(a: &PairShingles, b: &PairShingles) -> f64 {
    let prompt = jaccard(&a[0], &b[0]);
    let same = jaccard(&a[1], &b[1]) * jaccard(&a[2], &b[2]);
    let swapped = jaccard(&a[1], &b[2]) * jaccard(&a[2], &b[1]);
    prompt * same.max(swapped)
}

/// A pair of plain texts, for this crate's tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use synpref_engine::model::{Conversation, PreferencePair};

    pub fn pair(prompt: &str, chosen: &str, rejected: &str) -> PreferencePair {
        let text = |t: &str| Conversation::Text(t.into());
        PreferencePair::outside_pool("p", text(prompt), text(chosen), text(rejected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synpref_engine::model::Message;
    use xxhash_rust::xxh3::xxh3_64;

    use super::tests_support::pair;

    fn keys(h: &MinHasher, p: &PreferencePair) -> Vec<u64> {
        let mut k = Vec::new();
        h.band_keys(&h.shingles(p), &mut k);
        k
    }

    const PROMPT: &str = "How do I keep basil alive on a windowsill in winter?";
    const A: &str = "Give it at least six hours of light, water when the top inch of soil is dry, \
                     and pinch off the flower buds so the plant keeps making leaves.";
    const B: &str = "Basil is an annual and will die anyway, so buy a new plant in spring.";

    #[test]
    fn reformatting_and_swapping_keep_every_band_and_another_reply_loses_them_all() {
        let h = MinHasher::new(NearDupSettings::default());
        let base = keys(&h, &pair(PROMPT, A, B));
        assert_eq!(base.len(), 14);
        // Case, punctuation and line breaks are not edits.
        let reformatted = pair(
            &PROMPT.to_lowercase().replace('?', ""),
            &A.replace(", ", "\n"),
            &B.to_uppercase(),
        );
        assert_eq!(keys(&h, &reformatted), base);
        // A swapped copy has the same bands (the conflict check tells them apart).
        assert_eq!(keys(&h, &pair(PROMPT, B, A)), base);
        // The same prompt and chosen reply with another rejected reply: no band.
        let other = keys(
            &h,
            &pair(
                PROMPT,
                A,
                "Put it under a grow lamp and keep it away from cold glass.",
            ),
        );
        assert!(other.iter().all(|k| !base.contains(k)), "{other:?}");
        // One word edited: most bands survive.
        let edited = keys(&h, &pair(PROMPT, &A.replace("six", "eight"), B));
        let shared = edited.iter().filter(|k| base.contains(k)).count();
        assert!(shared >= 4, "{shared} of 14 bands shared");
    }

    #[test]
    fn every_form_of_a_pair_has_the_same_sides() {
        let h = MinHasher::new(NearDupSettings::default());
        let text = pair(PROMPT, A, B);
        let msg = |role: &str, content: &str| Message {
            role: role.into(),
            content: content.into(),
        };
        let mut implicit = pair(PROMPT, A, B);
        implicit.implicit_prompt = true;
        implicit.prompt = Conversation::Messages(vec![msg("user", PROMPT)]);
        implicit.chosen = Conversation::Messages(vec![msg("user", PROMPT), msg("assistant", A)]);
        implicit.rejected = Conversation::Messages(vec![msg("user", PROMPT), msg("assistant", B)]);
        assert_eq!(h.shingles(&implicit), h.shingles(&text));
        assert_eq!(keys(&h, &implicit), keys(&h, &text));
    }

    #[test]
    fn signatures_estimate_jaccard_without_bias() {
        // Sets of 200 shingles overlapping in a known share; the share of equal
        // minimums over 1,000 permutations must be within 4 standard errors.
        let settings = NearDupSettings {
            bands: 50,
            rows: 20,
            ..Default::default()
        };
        let h = MinHasher::new(settings);
        for shared in [20u64, 100, 180] {
            let a: Vec<u64> = (0..200u64).map(|i| xxh3_64(&i.to_le_bytes())).collect();
            let b: Vec<u64> = (200 - shared..400 - shared)
                .map(|i: u64| xxh3_64(&i.to_le_bytes()))
                .collect();
            let mut sa = a.clone();
            sa.sort_unstable();
            let mut sb = b.clone();
            sb.sort_unstable();
            let exact = jaccard(&sa, &sb);
            let (mut x, mut y) = (Vec::new(), Vec::new());
            h.signature(&sa, &mut x);
            h.signature(&sb, &mut y);
            let k = x.len() as f64;
            let estimate = x.iter().zip(&y).filter(|(p, q)| p == q).count() as f64 / k;
            let se = (exact * (1.0 - exact) / k).sqrt();
            assert!(
                (estimate - exact).abs() < 4.0 * se,
                "shared {shared}: estimate {estimate}, exact {exact}"
            );
        }
    }

    #[test]
    fn similarity_is_the_product_of_the_sides_and_ignores_orientation() {
        let h = MinHasher::new(NearDupSettings::default());
        let sets = |p: &PreferencePair| as_sets(h.shingles(p));
        let p = sets(&pair(PROMPT, A, B));
        assert_eq!(similarity(&p, &p), 1.0);
        assert_eq!(similarity(&p, &sets(&pair(PROMPT, B, A))), 1.0);
        let other = sets(&pair(PROMPT, A, "Completely different words here."));
        assert!(similarity(&p, &other) < 0.05);
    }

    #[test]
    fn bad_settings_name_their_flag() {
        for (s, flag) in [
            (
                NearDupSettings {
                    shingle_words: 0,
                    ..Default::default()
                },
                "--near-dup-shingle",
            ),
            (
                NearDupSettings {
                    bands: 0,
                    ..Default::default()
                },
                "--near-dup-bands",
            ),
            (
                NearDupSettings {
                    rows: 33,
                    ..Default::default()
                },
                "--near-dup-rows",
            ),
            (
                NearDupSettings {
                    threshold: 0.0,
                    ..Default::default()
                },
                "--near-dup-threshold",
            ),
        ] {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }
}
