//! `gen`: synthetic SynPref-like preference data with a known ground truth, so that every
//! curation decision can be scored (Skywork-Reward-V2 curates human-verified pairs; here
//! the "humans" and the "LLM judges" are simulated against a latent truth we own).
//!
//! # Output layout (under `GenSpec::out`)
//!
//! | file | rows | content |
//! |---|---|---|
//! | `pairs/part-NNNNN.parquet` | `pairs` in parts of `rows_per_file` | the pool: `pair_id`, `source`, `prompt`, `chosen`, `rejected`, the five other attribute columns, and an extra `gen_index` (Int64) that curation must carry through untouched |
//! | `truth.parquet` | one per pool row | `pair_id`, `preference` ("chosen" if the pool's chosen reply is truly better, else "rejected"), `injected` and `copy_of` (what a copied row is and the row it copies; null for others) |
//! | `gold.parquet` | ≈ `gold_fraction` × `pairs` | `pair_id`, `verdict` (chosen/rejected/undecidable), `annotator`, `labeled_at` |
//! | `judge_votes.parquet` | 3 × ≈ `judge_fraction` × `pairs` | `pair_id`, `judge` (judge-a/b/c), `verdict` |
//! | `eval.parquet` | `eval_pairs` | held-out pairs not in the pool, pool columns, chosen always truly better |
//! | `benchmark_prompts.jsonl` | ≈ `contaminated_fraction` × `pairs` + 20 | `{"prompt": …}` per line |
//!
//! # The generative model
//!
//! Downstream, a linear Bradley–Terry model over hashed word unigrams and bigrams of the
//! replies is trained on the pool's own (noisy) labels plus a small gold set, and
//! curation keeps the pairs whose label the models agree with. For that to help, the
//! truth must be a function the model family can learn, and the label noise must be
//! independent of the reply texts. So:
//!
//! * **Vocabulary.** [`VOCAB_WORDS`] pronounceable pseudo-words built from
//!   [`SYLLABLES`] (2 or 3 syllables each, unique, drawn from the seed), plus the
//!   [`FILLER`] words of English. Each pseudo-word has a latent weight: a share
//!   [`GOOD_SHARE`] is +1, a share [`BAD_SHARE`] is −1, the rest 0; filler words have
//!   no weight. Pseudo-words keep the hashed features nearly collision-free and make
//!   the truth depend on word identity only, which a unigram model can represent.
//! * **Reply.** [`REPLY_WORDS`] words in sentences of [`SENTENCE_WORDS`] words (each
//!   sentence capitalised and ended with a period). Each word is a filler word with
//!   probability [`FILLER_SHARE`], else a content word. Each reply has a latent level
//!   q ~ N(0, 1) that tilts its content words: with t = [`QUALITY_TILT`]·tanh(
//!   [`QUALITY_SHARPNESS`]·q), P(good) = [`GOOD_SHARE`] + t and P(bad) = [`BAD_SHARE`] − t,
//!   the rest neutral. The **true quality** of a reply is the mean weight of its content
//!   words (0 if it has none). The tilt spreads the replies of a pair apart, so most
//!   pairs have a clear winner, as real pairs of a strong and a weak model do; sampling
//!   noise on top leaves some close calls.
//! * **Pair.** Two replies to one prompt; the one with the higher true quality is the
//!   truly better one (an exact tie redraws the second reply). The prompt has
//!   [`PROMPT_WORDS`] words: a lead typical of its task category ("How do I fix", "Solve",
//!   "Write a poem about", …), then pseudo-words and filler, and a question mark.
//! * **Attributes.** `task_category` is one of the 12 Magpie classes with shares roughly
//!   as in Magpie-style data ([`CATEGORIES`]); `objectivity` is "objective" with
//!   probability [`OBJECTIVE_LEANING`] for fact-like classes and [`OBJECTIVE_OTHER`]
//!   otherwise; `controversiality` is low/medium/high with probabilities
//!   [`CONTROVERSY_SHARES`]; `desired_attributes` and `guideline` are short free text.
//! * **Pool label.** `chosen` is the truly better reply, then chosen and rejected are
//!   swapped with probability [`FLIP_PROBABILITY`] by controversiality (0.05/0.20/0.40:
//!   annotators disagree more on contested prompts, as in the paper's observation that
//!   preference noise concentrates there). The expected label noise is
//!   0.6·0.05 + 0.3·0.20 + 0.1·0.40 = 0.13; the measured share is
//!   [`GenSummary::label_noise`].
//! * **Injected copies** (`--near-duplicates`, `--conflicts`, both 0 by default, drawn
//!   from their own stream so that a pool without them is unchanged): a share of rows
//!   copy a uniform sample of the earlier fresh rows ([`COPY_SOURCES`], Algorithm R)
//!   as a near-duplicate (1 to [`NEAR_COPY_MAX_EDITS`] words substituted, deleted or
//!   inserted, or the text lower-cased, one sentence per line and the final mark
//!   dropped; truth copied) or as a conflict (chosen and rejected swapped; truth
//!   swapped too). `truth.parquet` names every copy (`injected`: duplicate,
//!   near_duplicate, conflict; `copy_of`: the original's pair id), so a detector's
//!   recall and precision are measured, not guessed.
//! * **Planted faults.** A `duplicate_fraction` share of rows copy the whole content of
//!   one of the previous [`DUPLICATE_WINDOW`] rows (new `pair_id`, truth copied); an
//!   `empty_fraction` share get `rejected = ""` (invalid input; their truth is "chosen",
//!   since any reply beats an empty one). A `contaminated_fraction` share of fresh rows
//!   also put their prompt into `benchmark_prompts.jsonl`; those prompts are at least
//!   [`NGRAM_WORDS`] (13) words long, so that the 13-gram decontaminator can find them.
//! * **Gold labels** (humans): the truth, undecidable with probability
//!   [`GOLD_UNDECIDABLE`], otherwise wrong with probability [`GOLD_ERROR`].
//! * **Judge votes** (LLM judges): three independent votes per sampled pair, each equal
//!   to the truth with probability [`JUDGE_ACCURACY`], so a majority of three is right
//!   with probability 0.84: better than the pool labels on contested pairs, worse than
//!   humans.
//!
//! # Determinism and streams
//!
//! Every random choice comes from `ChaCha8Rng::seed_from_u64(seed)` with a separate
//! ChaCha stream per concern: the vocabulary, the pool, gold, judges, contamination,
//! eval and the unrelated benchmark prompts. Output is byte-identical for a given spec,
//! and changing `gold_fraction`, `judge_fraction` or `eval_pairs` does not change the
//! pool (`contaminated_fraction` only lengthens the leaked prompts).
//!
//! # Measured
//!
//! Label noise 0.136 at 5K pairs and 0.130 at 1M (expected 0.13). Generated pools run
//! through `curate` with its defaults (demo settings: judges, benchmark prompts), the
//! share of labels matching the truth, as recomputed from the files curate wrote (issue
//! 10 fixed a miscount in the report, which now agrees): 86.4% → 97.2% of the curated
//! set at 5K pairs, 86.7% → 98.7% at 20K, 86.8% → 98.8% at 50K, 87.0% → 99.1% at 1M.
//! 1M pairs generate in about 8 s (release, one core) in about 200 MB.
//!
//! # Memory
//!
//! The pool is built in record batches of [`BATCH_ROWS`] rows and encoded into one
//! part at a time, so memory is bounded by one compressed part (`rows_per_file` rows),
//! plus one byte of truth per row and the sampled gold and judge rows. Nothing else of
//! the pool is kept.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use synpref_engine::output::writer_properties;
use synpref_engine::store::{resolve, Location};
use synpref_engine::{Error, Result};
use synpref_operators::decontaminate::NGRAM_WORDS;

// ---------------------------------------------------------------------------------------
// Spec defaults
// ---------------------------------------------------------------------------------------

/// Default seed.
pub const DEFAULT_SEED: u64 = 7;
/// Default share of pool pairs with a human verdict: small, as gold sets are costly
/// (Skywork's human-verified set is a few percent of its pool).
pub const DEFAULT_GOLD_FRACTION: f64 = 0.05;
/// Default share of pool pairs with LLM-judge votes: judges are cheaper than humans.
pub const DEFAULT_JUDGE_FRACTION: f64 = 0.25;
/// Default share of exact content duplicates (web-scale preference sets have a few).
pub const DEFAULT_DUPLICATE_FRACTION: f64 = 0.005;
/// Default share of rows with an empty rejected reply (exercises validation).
pub const DEFAULT_EMPTY_FRACTION: f64 = 0.002;
/// Default share of pool prompts leaked into the benchmark prompt file.
pub const DEFAULT_CONTAMINATED_FRACTION: f64 = 0.003;
/// Default pool rows per Parquet part: a few tens of MB per part, enough parts to
/// shard a million-row pool over workers.
pub const DEFAULT_ROWS_PER_FILE: u64 = 250_000;
/// Largest pool: truth (a bit per row) and the gold and judge samples are held in
/// memory, and pair ids are formatted with 9 digits.
pub const MAX_PAIRS: u64 = 1_000_000_000;

/// Default held-out eval size: a tenth of the pool, at least 100 (for a stable
/// accuracy estimate) and at most 2,000 (enough for ±1% accuracy).
pub fn default_eval_pairs(pairs: u64) -> u64 {
    (pairs / 10).clamp(100, 2000)
}

// ---------------------------------------------------------------------------------------
// Generative-model constants
// ---------------------------------------------------------------------------------------

/// Rows per record batch (the Parquet row-group size as well).
pub const BATCH_ROWS: usize = 65_536;
/// Content words in the vocabulary: large enough that replies rarely share many
/// words by chance, small enough that each word occurs often in a 1k-pair pool, so the
/// reward model can learn every word's weight.
pub const VOCAB_WORDS: usize = 2_000;
/// Syllables of the pseudo-words (consonant–vowel shapes that read as words).
pub const SYLLABLES: [&str; 40] = [
    "ka", "lo", "ri", "ven", "tos", "ma", "ne", "pi", "sul", "dra", "mi", "zo", "ta", "ber", "qui",
    "fa", "lu", "gon", "shi", "rel", "vo", "dun", "ke", "ap", "or", "sa", "til", "mo", "ru", "nex",
    "bi", "cor", "da", "wen", "ul", "pha", "xi", "tem", "gar", "so",
];
/// Common English words mixed into prompts and replies; they carry no weight, so the
/// model must learn to ignore them (as it must ignore style words in real data).
pub const FILLER: [&str; 15] = [
    "the", "and", "to", "of", "a", "is", "this", "that", "you", "it", "for", "with", "can", "be",
    "will",
];
/// Share of content words with weight +1 ("good" words).
pub const GOOD_SHARE: f64 = 0.15;
/// Share of content words with weight −1 ("bad" words); symmetric with good words so
/// the mean quality of a reply is 0.
pub const BAD_SHARE: f64 = 0.15;
/// How far a reply's latent level q moves its good/bad word shares:
/// P(good) = GOOD_SHARE + tilt·tanh(sharpness·q). 0.14 keeps both shares positive
/// (≥ 0.01) while making the typical quality gap of two replies (≈ 0.25) more than
/// twice the sampling noise of a 25-content-word reply (≈ 0.11): most pairs are
/// clear, some are close. Measured: a 0.12 tilt leaves the gold RM of a 5K pool
/// (≈ 250 gold pairs) at 63% accuracy, 0.14 with sharpness 2 at 71%.
pub const QUALITY_TILT: f64 = 0.14;
/// Sharpness of the tilt: tanh(2q) makes most replies clearly good or clearly weak
/// (|tanh 2q| > 0.76 for half of them), like replies of a strong and of a weak model,
/// which is what lets an RM trained on a few hundred gold pairs already rank most
/// pairs right.
pub const QUALITY_SHARPNESS: f64 = 2.0;
/// Share of reply (and prompt) words that are filler: about a third, as function words
/// are in English text.
pub const FILLER_SHARE: f64 = 0.35;
/// Words per reply (inclusive): short answers to a paragraph.
pub const REPLY_WORDS: (usize, usize) = (15, 60);
/// Words per sentence in a reply (inclusive).
pub const SENTENCE_WORDS: (usize, usize) = (5, 12);
/// Words per prompt (inclusive), lead included.
pub const PROMPT_WORDS: (usize, usize) = (8, 30);
/// The 12 Magpie task classes and their shares (information seeking dominates, as in
/// Magpie-style data); the shares sum to 1.
pub const CATEGORIES: [(&str, f64); 12] = [
    ("information seeking", 0.25),
    ("coding & debugging", 0.12),
    ("advice seeking", 0.10),
    ("math", 0.12),
    ("creative writing", 0.08),
    ("reasoning", 0.07),
    ("planning", 0.06),
    ("data analysis", 0.04),
    ("editing", 0.04),
    ("role playing", 0.04),
    ("brainstorming", 0.05),
    ("other", 0.03),
];
/// Prompt leads per category (same order as [`CATEGORIES`]).
const LEADS: [[&str; 3]; 12] = [
    ["What is", "Tell me about", "Who first described"],
    ["How do I fix", "Write a function that", "Why does my code"],
    [
        "Should I",
        "How can I deal with",
        "What would you recommend for",
    ],
    ["Solve", "Compute the value of", "Prove that"],
    [
        "Write a poem about",
        "Write a story where",
        "Compose a song about",
    ],
    ["Explain why", "What follows if", "Is it true that"],
    ["Plan a", "Make a schedule for", "Outline the steps to"],
    [
        "Analyze this table of",
        "What trend shows in",
        "Summarize the data on",
    ],
    [
        "Rewrite this sentence",
        "Fix the grammar in",
        "Shorten this paragraph on",
    ],
    ["Pretend you are", "Act as a", "You are a"],
    ["Give me ideas for", "List ways to", "Brainstorm names for"],
    ["Help me with", "I wonder about", "Say something about"],
];
/// Categories whose prompts are mostly objective (a checkable answer exists).
const OBJECTIVE_CATEGORIES: [&str; 5] = [
    "information seeking",
    "coding & debugging",
    "math",
    "reasoning",
    "data analysis",
];
/// P(objective) for the fact-like categories above.
pub const OBJECTIVE_LEANING: f64 = 0.8;
/// P(objective) for the other categories.
pub const OBJECTIVE_OTHER: f64 = 0.25;
/// Controversiality levels and their shares: most prompts are uncontroversial.
pub const CONTROVERSY_SHARES: [(&str, f64); 3] = [("low", 0.6), ("medium", 0.3), ("high", 0.1)];
/// P(pool label flipped) per controversiality level (low, medium, high).
pub const FLIP_PROBABILITY: [f64; 3] = [0.05, 0.20, 0.40];
/// Phrases of `desired_attributes` (2 or 3 distinct ones per pair).
const DESIRED: [&str; 10] = [
    "concise",
    "accurate",
    "cites steps",
    "friendly tone",
    "well structured",
    "shows working",
    "creative",
    "safe",
    "detailed",
    "uses examples",
];
/// What a guideline tells the annotator to penalise.
const PENALISE: [&str; 6] = [
    "unsupported claims",
    "padding",
    "unsafe advice",
    "ignoring the question",
    "wrong arithmetic",
    "off-topic content",
];
/// A duplicate copies one of this many previous rows (bounded memory; near-in-file
/// duplicates are also the common case in scraped data).
pub const DUPLICATE_WINDOW: usize = 1024;
/// P(a gold verdict is "undecidable").
pub const GOLD_UNDECIDABLE: f64 = 0.02;
/// P(a decided gold verdict is wrong): careful human annotation, not perfect.
pub const GOLD_ERROR: f64 = 0.03;
/// Distinct human annotators.
pub const ANNOTATORS: u32 = 12;
/// The LLM judges.
pub const JUDGES: [&str; 3] = ["judge-a", "judge-b", "judge-c"];
/// P(a judge vote equals the truth): typical LLM-as-judge agreement with humans.
pub const JUDGE_ACCURACY: f64 = 0.75;
/// Generated benchmark prompts unrelated to the pool (the benchmark's own questions).
pub const UNRELATED_BENCHMARK_PROMPTS: usize = 20;
/// The `source` column of every generated row.
pub const SOURCE: &str = "synpref-gen";

/// The ChaCha stream of each concern (see the module docs).
#[derive(Clone, Copy)]
#[repr(u64)]
enum Stream {
    Vocab = 1,
    Pool = 2,
    Gold = 3,
    Judges = 4,
    Contamination = 5,
    Eval = 6,
    Benchmark = 7,
    Copies = 8,
}

fn rng_for(seed: u64, stream: Stream) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream as u64);
    rng
}

// ---------------------------------------------------------------------------------------
// Spec and summary
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GenSpec {
    /// Pool size (rows in `out/pairs/`).
    pub pairs: u64,
    /// Output directory URL or local path.
    pub out: String,
    /// Seed of every random choice (default 7).
    pub seed: u64,
    /// Share of pool pairs with a human verdict (default 0.05).
    pub gold_fraction: f64,
    /// Held-out eval pairs (default `min(2000, max(100, pairs / 10))`).
    pub eval_pairs: u64,
    /// Share of pool pairs with three LLM-judge votes (default 0.25).
    pub judge_fraction: f64,
    /// Share of rows that duplicate an earlier row's content (default 0.005).
    pub duplicate_fraction: f64,
    /// Share of rows whose rejected reply is "" (default 0.002).
    pub empty_fraction: f64,
    /// Share of pool prompts also written to the benchmark prompt file (default 0.003).
    pub contaminated_fraction: f64,
    /// Pool rows per Parquet part (default 250,000).
    pub rows_per_file: u64,
    /// Share of rows that are near-duplicates of an earlier row (`--near-duplicates`,
    /// default 0): a few words edited or the text re-formatted (`NearCopy`).
    #[serde(default)]
    pub near_duplicate_fraction: f64,
    /// Share of rows that copy an earlier row with chosen and rejected swapped
    /// (`--conflicts`, default 0): the same comparison with the opposite label.
    #[serde(default)]
    pub conflict_fraction: f64,
}

impl GenSpec {
    /// A spec with every default filled in.
    pub fn new(pairs: u64, out: impl Into<String>, seed: u64) -> GenSpec {
        GenSpec {
            pairs,
            out: out.into(),
            seed,
            gold_fraction: DEFAULT_GOLD_FRACTION,
            eval_pairs: default_eval_pairs(pairs),
            judge_fraction: DEFAULT_JUDGE_FRACTION,
            duplicate_fraction: DEFAULT_DUPLICATE_FRACTION,
            empty_fraction: DEFAULT_EMPTY_FRACTION,
            contaminated_fraction: DEFAULT_CONTAMINATED_FRACTION,
            rows_per_file: DEFAULT_ROWS_PER_FILE,
            near_duplicate_fraction: 0.0,
            conflict_fraction: 0.0,
        }
    }

    /// Checks every setting; errors name the CLI flag (exit status 2).
    pub fn validate(&self) -> Result<()> {
        if self.pairs < 1 {
            return Err(Error::setting("--pairs", "must be at least 1"));
        }
        if self.pairs > MAX_PAIRS {
            return Err(Error::setting(
                "--pairs",
                format!("must be at most {MAX_PAIRS}"),
            ));
        }
        if self.out.is_empty() {
            return Err(Error::setting("--out", "empty output path"));
        }
        for (flag, v) in [
            ("--gold-fraction", self.gold_fraction),
            ("--judge-fraction", self.judge_fraction),
            ("--duplicate-fraction", self.duplicate_fraction),
            ("--empty-fraction", self.empty_fraction),
            ("--contaminated-fraction", self.contaminated_fraction),
            ("--near-duplicates", self.near_duplicate_fraction),
            ("--conflicts", self.conflict_fraction),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::setting(
                    flag,
                    format!("{v} is not a share between 0 and 1"),
                ));
            }
        }
        if self.duplicate_fraction + self.empty_fraction > 1.0 {
            return Err(Error::setting(
                "--empty-fraction",
                "duplicate and empty rows are distinct rows: --duplicate-fraction + --empty-fraction must be at most 1",
            ));
        }
        if self.near_duplicate_fraction + self.conflict_fraction > 0.5 {
            return Err(Error::setting(
                "--conflicts",
                "--near-duplicates + --conflicts must be at most 0.5: copies need originals",
            ));
        }
        if self.rows_per_file < 1 {
            return Err(Error::setting("--rows-per-file", "must be at least 1"));
        }
        if self.eval_pairs > MAX_PAIRS {
            return Err(Error::setting(
                "--eval-pairs",
                format!("must be at most {MAX_PAIRS}"),
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GenSummary {
    /// Pool rows written.
    pub pairs: u64,
    /// The pool's part files, relative to `out` (`pairs/part-00000.parquet`, …).
    pub pair_files: Vec<String>,
    /// Rows of `gold.parquet`.
    pub gold_labels: u64,
    /// Rows of `eval.parquet`.
    pub eval_pairs: u64,
    /// Rows of `judge_votes.parquet` (three per judged pair).
    pub judge_votes: u64,
    /// Lines of `benchmark_prompts.jsonl`.
    pub benchmark_prompts: u64,
    /// Share of pool labels that disagree with the truth.
    pub label_noise: f64,
    /// Rows injected as near-duplicates and as swapped copies (conflicts), each named
    /// in `truth.parquet` (`injected`, `copy_of`).
    #[serde(default)]
    pub near_duplicates: u64,
    #[serde(default)]
    pub conflicts: u64,
}

// ---------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------

/// The vocabulary and its latent weights.
struct Vocab {
    words: Vec<String>,
    good: Vec<u32>,
    bad: Vec<u32>,
    neutral: Vec<u32>,
}

impl Vocab {
    fn new(seed: u64) -> Vocab {
        let mut rng = rng_for(seed, Stream::Vocab);
        let mut seen = rustc_hash::FxHashSet::default();
        let mut words = Vec::with_capacity(VOCAB_WORDS);
        let mut w = String::new();
        while words.len() < VOCAB_WORDS {
            w.clear();
            let syllables = rng.random_range(2..=3);
            for _ in 0..syllables {
                w.push_str(SYLLABLES[rng.random_range(0..SYLLABLES.len())]);
            }
            if FILLER.contains(&w.as_str()) || !seen.insert(w.clone()) {
                continue;
            }
            words.push(w.clone());
        }
        let mut order: Vec<u32> = (0..VOCAB_WORDS as u32).collect();
        order.shuffle(&mut rng);
        let n_good = (VOCAB_WORDS as f64 * GOOD_SHARE).round() as usize;
        let n_bad = (VOCAB_WORDS as f64 * BAD_SHARE).round() as usize;
        let good = order[..n_good].to_vec();
        let bad = order[n_good..n_good + n_bad].to_vec();
        let neutral = order[n_good + n_bad..].to_vec();
        Vocab {
            words,
            good,
            bad,
            neutral,
        }
    }
}

/// One pair's content, reused between rows (its strings keep their capacity).
#[derive(Clone, Debug, Default)]
struct PairText {
    prompt: String,
    chosen: String,
    rejected: String,
    desired: String,
    guideline: String,
    category: usize,
    objective: bool,
    controversy: usize,
    /// The pool's chosen reply is the truly better one.
    chosen_better: bool,
}

/// A reply's true quality as a fraction: sum of content-word weights over their count.
#[derive(Clone, Copy, Debug)]
struct Quality {
    sum: i64,
    n: i64,
}

impl Quality {
    /// How `self` compares with `other` (exactly, by cross-multiplication).
    fn cmp(self, other: Quality) -> std::cmp::Ordering {
        let (a_n, b_n) = (self.n.max(1), other.n.max(1));
        (self.sum * b_n).cmp(&(other.sum * a_n))
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box–Muller; 1 − u keeps the logarithm's argument in (0, 1].
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn pick_weighted<const N: usize>(rng: &mut ChaCha8Rng, table: &[(&str, f64); N]) -> usize {
    let u = rng.random::<f64>();
    let mut acc = 0.0;
    for (i, (_, p)) in table.iter().enumerate() {
        acc += p;
        if u < acc {
            return i;
        }
    }
    N - 1
}

fn push_word(buf: &mut String, word: &str, capitalise: bool) {
    if capitalise {
        let b = word.as_bytes();
        buf.push(b[0].to_ascii_uppercase() as char);
        buf.push_str(&word[1..]);
    } else {
        buf.push_str(word);
    }
}

struct Generator {
    vocab: Vocab,
}

impl Generator {
    fn new(seed: u64) -> Generator {
        Generator {
            vocab: Vocab::new(seed),
        }
    }

    /// A prompt of at least `min_words` words for `category` into `buf` (cleared).
    fn prompt(&self, rng: &mut ChaCha8Rng, category: usize, min_words: usize, buf: &mut String) {
        buf.clear();
        let lead = LEADS[category][rng.random_range(0..LEADS[category].len())];
        let total = rng
            .random_range(PROMPT_WORDS.0..=PROMPT_WORDS.1)
            .max(min_words);
        buf.push_str(lead);
        let lead_words = lead.split(' ').count();
        for _ in lead_words..total {
            buf.push(' ');
            if rng.random::<f64>() < FILLER_SHARE {
                buf.push_str(FILLER[rng.random_range(0..FILLER.len())]);
            } else {
                buf.push_str(&self.vocab.words[rng.random_range(0..VOCAB_WORDS)]);
            }
        }
        buf.push('?');
    }

    /// A reply into `buf` (cleared); returns its true quality.
    fn reply(&self, rng: &mut ChaCha8Rng, buf: &mut String) -> Quality {
        buf.clear();
        let tilt = QUALITY_TILT * (QUALITY_SHARPNESS * normal(rng)).tanh();
        let p_good = GOOD_SHARE + tilt;
        let p_bad = BAD_SHARE - tilt;
        let len = rng.random_range(REPLY_WORDS.0..=REPLY_WORDS.1);
        let mut q = Quality { sum: 0, n: 0 };
        let mut sentence_left = rng.random_range(SENTENCE_WORDS.0..=SENTENCE_WORDS.1);
        let mut capitalise = true;
        let v = &self.vocab;
        for i in 0..len {
            let word: &str = if rng.random::<f64>() < FILLER_SHARE {
                FILLER[rng.random_range(0..FILLER.len())]
            } else {
                q.n += 1;
                let u = rng.random::<f64>();
                let idx = if u < p_good {
                    q.sum += 1;
                    v.good[rng.random_range(0..v.good.len())]
                } else if u < p_good + p_bad {
                    q.sum -= 1;
                    v.bad[rng.random_range(0..v.bad.len())]
                } else {
                    v.neutral[rng.random_range(0..v.neutral.len())]
                };
                &v.words[idx as usize]
            };
            if !capitalise {
                buf.push(' ');
            }
            push_word(buf, word, capitalise);
            capitalise = false;
            sentence_left -= 1;
            if sentence_left == 0 && i + 1 < len {
                buf.push_str(". ");
                capitalise = true;
                sentence_left = rng.random_range(SENTENCE_WORDS.0..=SENTENCE_WORDS.1);
            }
        }
        buf.push('.');
        q
    }

    /// A fresh pair into `out`: attributes, a prompt of at least `min_prompt_words`
    /// words, and two replies with `chosen` the truly better one (no label noise).
    fn pair(&self, rng: &mut ChaCha8Rng, min_prompt_words: usize, out: &mut PairText) {
        let category = pick_weighted(rng, &CATEGORIES);
        out.category = category;
        let p_objective = if OBJECTIVE_CATEGORIES.contains(&CATEGORIES[category].0) {
            OBJECTIVE_LEANING
        } else {
            OBJECTIVE_OTHER
        };
        out.objective = rng.random::<f64>() < p_objective;
        out.controversy = pick_weighted(rng, &CONTROVERSY_SHARES);
        // 2 or 3 distinct desired attributes, in a random order.
        out.desired.clear();
        let mut picked = [usize::MAX; 3];
        let n_attrs = rng.random_range(2..=3);
        let mut k = 0;
        while k < n_attrs {
            let a = rng.random_range(0..DESIRED.len());
            if picked[..k].contains(&a) {
                continue;
            }
            picked[k] = a;
            if k > 0 {
                out.desired.push_str(", ");
            }
            out.desired.push_str(DESIRED[a]);
            k += 1;
        }
        out.guideline.clear();
        let penalise = PENALISE[rng.random_range(0..PENALISE.len())];
        let _ = write!(
            out.guideline,
            "Favour replies that put {} first; penalise {}.",
            DESIRED[picked[0]], penalise
        );
        self.prompt(rng, category, min_prompt_words, &mut out.prompt);
        let qa = self.reply(rng, &mut out.chosen);
        let mut qb = self.reply(rng, &mut out.rejected);
        while qa.cmp(qb) == std::cmp::Ordering::Equal {
            qb = self.reply(rng, &mut out.rejected);
        }
        if qb.cmp(qa) == std::cmp::Ordering::Greater {
            std::mem::swap(&mut out.chosen, &mut out.rejected);
        }
        out.chosen_better = true;
    }
}

// ---------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

/// Schema of the pool parts and of `eval.parquet`.
pub fn pairs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("pair_id"),
        utf8("source"),
        utf8("prompt"),
        utf8("chosen"),
        utf8("rejected"),
        utf8("task_category"),
        utf8("objectivity"),
        utf8("controversiality"),
        utf8("desired_attributes"),
        utf8("guideline"),
        Field::new("gen_index", DataType::Int64, true),
    ]))
}

fn schema_of(names: &[&str]) -> SchemaRef {
    Arc::new(Schema::new(
        names.iter().map(|n| utf8(n)).collect::<Vec<_>>(),
    ))
}

fn batch(schema: &SchemaRef, cols: Vec<ArrayRef>, what: &str) -> Result<RecordBatch> {
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| Error::Arrow {
        context: format!("gen {what} batch"),
        source: e,
    })
}

/// A Parquet file encoded in memory (bounded by its own compressed size) and put in
/// one request when finished, so a reader never sees a half-written file.
struct ParquetSink {
    loc: Location,
    writer: ArrowWriter<Vec<u8>>,
}

impl ParquetSink {
    fn new(loc: Location, schema: &SchemaRef) -> Result<ParquetSink> {
        let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(writer_properties()))
            .map_err(|e| Error::Parquet {
                path: loc.url.clone(),
                source: e,
            })?;
        Ok(ParquetSink { loc, writer })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch).map_err(|e| Error::Parquet {
            path: self.loc.url.clone(),
            source: e,
        })
    }

    fn finish(self) -> Result<()> {
        let bytes = self.writer.into_inner().map_err(|e| Error::Parquet {
            path: self.loc.url.clone(),
            source: e,
        })?;
        self.loc.put(bytes)
    }
}

/// Column builders of the pairs schema.
struct PairBuilders {
    pair_id: StringBuilder,
    source: StringBuilder,
    prompt: StringBuilder,
    chosen: StringBuilder,
    rejected: StringBuilder,
    category: StringBuilder,
    objectivity: StringBuilder,
    controversiality: StringBuilder,
    desired: StringBuilder,
    guideline: StringBuilder,
    gen_index: Int64Builder,
    rows: usize,
}

impl PairBuilders {
    fn new() -> PairBuilders {
        let s = || StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16);
        let text = || StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 256);
        PairBuilders {
            pair_id: s(),
            source: s(),
            prompt: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 128),
            chosen: text(),
            rejected: text(),
            category: s(),
            objectivity: s(),
            controversiality: s(),
            desired: s(),
            guideline: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 64),
            gen_index: Int64Builder::with_capacity(BATCH_ROWS),
            rows: 0,
        }
    }

    fn append(&mut self, pair_id: &str, p: &PairText, gen_index: i64) {
        self.pair_id.append_value(pair_id);
        self.source.append_value(SOURCE);
        self.prompt.append_value(&p.prompt);
        self.chosen.append_value(&p.chosen);
        self.rejected.append_value(&p.rejected);
        self.category.append_value(CATEGORIES[p.category].0);
        self.objectivity.append_value(if p.objective {
            "objective"
        } else {
            "subjective"
        });
        self.controversiality
            .append_value(CONTROVERSY_SHARES[p.controversy].0);
        self.desired.append_value(&p.desired);
        self.guideline.append_value(&p.guideline);
        self.gen_index.append_value(gen_index);
        self.rows += 1;
    }

    /// The rows appended since the last call, as a batch (the builders are reset).
    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        self.rows = 0;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.pair_id.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.prompt.finish()),
            Arc::new(self.chosen.finish()),
            Arc::new(self.rejected.finish()),
            Arc::new(self.category.finish()),
            Arc::new(self.objectivity.finish()),
            Arc::new(self.controversiality.finish()),
            Arc::new(self.desired.finish()),
            Arc::new(self.guideline.finish()),
            Arc::new(self.gen_index.finish()),
        ];
        batch(schema, cols, "pairs")
    }
}

fn pool_pair_id(buf: &mut String, seed: u64, index: u64) {
    buf.clear();
    let _ = write!(buf, "gen-{seed}-{index:09}");
}

fn eval_pair_id(buf: &mut String, seed: u64, index: u64) {
    buf.clear();
    let _ = write!(buf, "gen-{seed}-eval-{index:09}");
}

fn verdict(chosen: bool) -> &'static str {
    if chosen {
        "chosen"
    } else {
        "rejected"
    }
}

/// A sampled gold label, kept until the pool is written.
struct GoldRow {
    index: u64,
    /// 0 chosen, 1 rejected, 2 undecidable.
    verdict: u8,
    annotator: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
}

/// A judged pair: its row and the three votes (bit j set: judge j voted "chosen").
struct JudgedRow {
    index: u64,
    votes: u8,
}

// ---------------------------------------------------------------------------------------
// The job
// ---------------------------------------------------------------------------------------

/// The pool rows, one at a time, with their truth: fresh pairs, label noise,
/// duplicates and empty replies, as described in the module docs.
struct PoolRows<'a> {
    spec: &'a GenSpec,
    generator: &'a Generator,
    rng: ChaCha8Rng,
    contamination: ChaCha8Rng,
    ring: Vec<PairText>,
    /// The row index each ring slot holds (or copies).
    ring_index: Vec<u64>,
    next: u64,
    /// Injected copies' choices (their own stream: a pool without them is unchanged).
    copies: ChaCha8Rng,
    /// (row, index) of a uniform sample of the earlier fresh rows.
    sources: Vec<(PairText, u64)>,
    fresh_rows: u64,
}

/// Rows an injected copy (`--near-duplicates`, `--conflicts`) can copy: a uniform
/// sample of the earlier fresh rows (Vitter's Algorithm R), so that a copy lands
/// anywhere after its original, often in another part and on another worker.
pub const COPY_SOURCES: usize = 4096;

/// Word edits of a near-duplicate: 1 to this many words substituted, deleted or
/// inserted ("edits of a few words", issue 28).
pub const NEAR_COPY_MAX_EDITS: usize = 3;

/// What an injected row copies (`injected` in truth.parquet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Injected {
    /// An exact copy (`--duplicate-fraction`).
    Duplicate,
    /// A few words edited, or the text re-cased and re-punctuated (`near_copy`).
    NearDuplicate,
    /// The same comparison with chosen and rejected swapped.
    Conflict,
}

impl Injected {
    fn code(self) -> &'static str {
        match self {
            Injected::Duplicate => "duplicate",
            Injected::NearDuplicate => "near_duplicate",
            Injected::Conflict => "conflict",
        }
    }
}

/// An injected row: its index, what it is, and the index of the row it copies.
struct InjectedRow {
    index: u64,
    kind: Injected,
    of: u64,
}

/// What happened to a pool row besides its content.
struct RowInfo {
    /// A fresh row whose prompt is to be leaked into the benchmark file.
    contaminated: bool,
    /// An injected copy: what it is and the row it copies.
    copy: Option<(Injected, u64)>,
}

impl<'a> PoolRows<'a> {
    fn new(spec: &'a GenSpec, generator: &'a Generator) -> Self {
        PoolRows {
            spec,
            generator,
            rng: rng_for(spec.seed, Stream::Pool),
            contamination: rng_for(spec.seed, Stream::Contamination),
            ring: Vec::new(),
            ring_index: Vec::new(),
            next: 0,
            copies: rng_for(spec.seed, Stream::Copies),
            sources: Vec::new(),
            fresh_rows: 0,
        }
    }

    fn injects(&self) -> bool {
        self.spec.near_duplicate_fraction + self.spec.conflict_fraction > 0.0
    }

    /// Makes `cur` an injected copy of an earlier fresh row, if this row is one.
    fn inject(&mut self, cur: &mut PairText) -> Option<(Injected, u64)> {
        let (near, conflict) = (
            self.spec.near_duplicate_fraction,
            self.spec.conflict_fraction,
        );
        let u = self.copies.random::<f64>();
        if self.sources.is_empty() || u >= near + conflict {
            return None;
        }
        let (source, of) = &self.sources[self.copies.random_range(0..self.sources.len())];
        cur.clone_from(source);
        let of = *of;
        if u < near {
            near_copy(&mut self.copies, &self.generator.vocab, cur);
            Some((Injected::NearDuplicate, of))
        } else {
            std::mem::swap(&mut cur.chosen, &mut cur.rejected);
            cur.chosen_better = !cur.chosen_better;
            Some((Injected::Conflict, of))
        }
    }

    /// Offers a fresh row to the sample of copy sources (Algorithm R).
    fn offer_source(&mut self, cur: &PairText, index: u64) {
        self.fresh_rows += 1;
        if self.sources.len() < COPY_SOURCES {
            self.sources.push((cur.clone(), index));
        } else {
            let j = self.copies.random_range(0..self.fresh_rows);
            if (j as usize) < COPY_SOURCES {
                self.sources[j as usize] = (cur.clone(), index);
            }
        }
    }

    /// Fills `cur` with the next pool row.
    fn next_row(&mut self, cur: &mut PairText) -> RowInfo {
        let i = self.next;
        self.next += 1;
        let u = self.rng.random::<f64>();
        // Drawn for every row so that the contamination stream stays aligned with rows.
        let leak = self.contamination.random::<f64>() < self.spec.contaminated_fraction;
        let slot = (i % DUPLICATE_WINDOW as u64) as usize;
        let mut info = RowInfo {
            contaminated: false,
            copy: None,
        };
        if self.injects() {
            info.copy = self.inject(cur);
        }
        if info.copy.is_some() {
            // An injected copy: nothing more to draw.
        } else if i > 0 && u < self.spec.duplicate_fraction {
            let back = self.rng.random_range(1..=i.min(DUPLICATE_WINDOW as u64));
            let src = ((i - back) % DUPLICATE_WINDOW as u64) as usize;
            cur.clone_from(&self.ring[src]);
            info.copy = Some((Injected::Duplicate, self.ring_index[src]));
        } else {
            let min_words = if leak { NGRAM_WORDS } else { PROMPT_WORDS.0 };
            self.generator.pair(&mut self.rng, min_words, cur);
            if self.rng.random::<f64>() < FLIP_PROBABILITY[cur.controversy] {
                std::mem::swap(&mut cur.chosen, &mut cur.rejected);
                cur.chosen_better = false;
            }
            if u < self.spec.duplicate_fraction + self.spec.empty_fraction {
                // Any reply beats an empty one.
                if !cur.chosen_better {
                    std::mem::swap(&mut cur.chosen, &mut cur.rejected);
                    cur.chosen_better = true;
                }
                cur.rejected.clear();
            } else if self.injects() {
                self.offer_source(cur, i);
            }
            info.contaminated = leak;
        }
        // A copy's slot names the row it copies, so every copy names the original.
        let original = match info.copy {
            Some((_, of)) => of,
            None => i,
        };
        if self.ring.len() <= slot {
            self.ring.push(cur.clone());
            self.ring_index.push(original);
        } else {
            self.ring[slot].clone_from(cur);
            self.ring_index[slot] = original;
        }
        info
    }
}

/// Turns `pair` into a near-duplicate of itself, as sources repost a pair: half the
/// time 1 to `NEAR_COPY_MAX_EDITS` words substituted, deleted or inserted (anywhere in
/// the prompt or either reply, in proportion to their words), otherwise re-formatted:
/// lower-cased, one sentence per line, the final punctuation dropped. Its truth is
/// the original's: the edits do not change which reply is better.
fn near_copy(rng: &mut ChaCha8Rng, vocab: &Vocab, pair: &mut PairText) {
    if rng.random::<bool>() {
        let edits = rng.random_range(1..=NEAR_COPY_MAX_EDITS);
        for _ in 0..edits {
            let counts =
                [&pair.prompt, &pair.chosen, &pair.rejected].map(|t| t.split_whitespace().count());
            let mut at = rng.random_range(0..counts.iter().sum::<usize>());
            let field = counts
                .iter()
                .position(|&c| {
                    let here = at < c;
                    if !here {
                        at -= c;
                    }
                    here
                })
                .expect("a word in range");
            let text = [&mut pair.prompt, &mut pair.chosen, &mut pair.rejected]
                .into_iter()
                .nth(field)
                .expect("three fields");
            let mut words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
            let op = rng.random_range(0..3);
            let word = vocab.words[rng.random_range(0..VOCAB_WORDS)].clone();
            match op {
                0 => words[at] = word,
                1 if words.len() > 1 => {
                    words.remove(at);
                }
                _ => words.insert(at, word),
            }
            *text = words.join(" ");
        }
    } else {
        for text in [&mut pair.prompt, &mut pair.chosen, &mut pair.rejected] {
            let reformatted = text
                .to_lowercase()
                .replace(". ", "\n")
                .trim_end_matches(['.', '?'])
                .to_string();
            *text = reformatted;
        }
    }
}

/// Generates the data set described in the module docs under `spec.out`.
/// The file gen leaves beside the `pairs/` it writes (readers skip names starting
/// with `_`).
const GEN_MARKER: &str = "_written_by_synpref_gen";

pub fn run_gen(spec: &GenSpec) -> Result<GenSummary> {
    spec.validate()?;
    let out = resolve(&spec.out).map_err(|e| match e {
        Error::Setting { message, .. } => Error::setting("--out", message),
        other => other,
    })?;
    // A previous run may have written more parts than this one will; but a `pairs/`
    // that no gen wrote may be someone's only pool. gen marks the directories it writes
    // with a file beside `pairs/` (a leading `_`: readers skip it), written before the
    // first part, so a gen that died half-way is still recognised.
    let parts = out.child("pairs");
    let marker = out.child(GEN_MARKER);
    if !marker.exists()? && !parts.list_names()?.is_empty() {
        return Err(Error::setting(
            "--out",
            format!(
                "`{}/pairs` holds files that gen did not write (no {GEN_MARKER} beside it): gen replaces that directory; choose an empty directory or an earlier gen output",
                spec.out.trim_end_matches('/')
            ),
        ));
    }
    parts.delete_prefix()?;
    marker.put(Vec::new())?;

    let generator = Generator::new(spec.seed);
    let seed = spec.seed;
    let schema = pairs_schema();
    let mut pool = PoolRows::new(spec, &generator);
    let mut gold_rng = rng_for(seed, Stream::Gold);
    let mut judge_rng = rng_for(seed, Stream::Judges);

    let mut truth: Vec<bool> = Vec::with_capacity(spec.pairs as usize);
    let mut gold: Vec<GoldRow> = Vec::new();
    let mut judged: Vec<JudgedRow> = Vec::new();
    let mut leaked: Vec<String> = Vec::new();
    let mut injected: Vec<InjectedRow> = Vec::new();
    let mut fallback_leak: Option<String> = None;
    let mut flipped = 0u64;
    let mut pair_files = Vec::new();

    let mut builders = PairBuilders::new();
    let mut cur = PairText::default();
    let mut id = String::new();
    let parts = spec.pairs.div_ceil(spec.rows_per_file);
    for part in 0..parts {
        let name = format!("pairs/part-{part:05}.parquet");
        let mut sink = ParquetSink::new(out.child(&name), &schema)?;
        let start = part * spec.rows_per_file;
        let end = (start + spec.rows_per_file).min(spec.pairs);
        for i in start..end {
            let info = pool.next_row(&mut cur);
            if let Some((kind, of)) = info.copy {
                injected.push(InjectedRow { index: i, kind, of });
            }
            truth.push(cur.chosen_better);
            flipped += u64::from(!cur.chosen_better);
            if gold_rng.random::<f64>() < spec.gold_fraction {
                let u = gold_rng.random::<f64>();
                let verdict = if u < GOLD_UNDECIDABLE {
                    2
                } else if gold_rng.random::<f64>() < GOLD_ERROR {
                    u8::from(cur.chosen_better)
                } else {
                    u8::from(!cur.chosen_better)
                };
                gold.push(GoldRow {
                    index: i,
                    verdict,
                    annotator: gold_rng.random_range(1..=ANNOTATORS),
                    month: gold_rng.random_range(1..=6),
                    day: gold_rng.random_range(1..=28),
                    hour: gold_rng.random_range(8..=19),
                    minute: gold_rng.random_range(0..60),
                });
            }
            if judge_rng.random::<f64>() < spec.judge_fraction {
                let mut votes = 0u8;
                for j in 0..JUDGES.len() {
                    let right = judge_rng.random::<f64>() < JUDGE_ACCURACY;
                    if right == cur.chosen_better {
                        votes |= 1 << j;
                    }
                }
                judged.push(JudgedRow { index: i, votes });
            }
            if info.contaminated {
                leaked.push(cur.prompt.clone());
            } else if fallback_leak.is_none()
                && cur.prompt.split(' ').count() >= NGRAM_WORDS
                && !cur.rejected.is_empty()
            {
                fallback_leak = Some(cur.prompt.clone());
            }
            pool_pair_id(&mut id, seed, i);
            builders.append(&id, &cur, i as i64);
            if builders.rows >= BATCH_ROWS {
                sink.write(&builders.finish(&schema)?)?;
            }
        }
        if builders.rows > 0 {
            sink.write(&builders.finish(&schema)?)?;
        }
        sink.finish()?;
        pair_files.push(name);
    }

    write_truth(&out, seed, &truth, &injected)?;
    drop(truth);
    write_gold(&out, seed, &gold)?;
    write_judges(&out, seed, &judged)?;
    write_eval(&out, spec, &generator, &schema)?;

    // At least one leaked prompt for a pool of 100 or more, so decontamination always
    // has something to find there.
    if leaked.is_empty() && spec.pairs >= 100 && spec.contaminated_fraction > 0.0 {
        leaked.extend(fallback_leak);
    }
    let benchmark_prompts = write_benchmark(&out, seed, leaked, &generator)?;

    Ok(GenSummary {
        pairs: spec.pairs,
        pair_files,
        gold_labels: gold.len() as u64,
        eval_pairs: spec.eval_pairs,
        judge_votes: (judged.len() * JUDGES.len()) as u64,
        benchmark_prompts,
        label_noise: flipped as f64 / spec.pairs as f64,
        near_duplicates: injected
            .iter()
            .filter(|r| r.kind == Injected::NearDuplicate)
            .count() as u64,
        conflicts: injected
            .iter()
            .filter(|r| r.kind == Injected::Conflict)
            .count() as u64,
    })
}

/// `truth.parquet`: every pool row's preference, and for injected copies what they
/// are (`injected`: duplicate, near_duplicate or conflict) and the pair id they copy (`copy_of`).
fn write_truth(out: &Location, seed: u64, truth: &[bool], injected: &[InjectedRow]) -> Result<()> {
    let schema = schema_of(&["pair_id", "preference", "injected", "copy_of"]);
    let mut sink = ParquetSink::new(out.child("truth.parquet"), &schema)?;
    let mut id = String::new();
    let mut copies = injected.iter().peekable();
    for (c, chunk) in truth.chunks(BATCH_ROWS).enumerate() {
        let mut ids = StringBuilder::with_capacity(chunk.len(), chunk.len() * 20);
        let mut pref = StringBuilder::with_capacity(chunk.len(), chunk.len() * 8);
        let mut kinds = StringBuilder::new();
        let mut copy_of = StringBuilder::new();
        for (k, &better) in chunk.iter().enumerate() {
            let index = (c * BATCH_ROWS + k) as u64;
            pool_pair_id(&mut id, seed, index);
            ids.append_value(&id);
            pref.append_value(verdict(better));
            match copies.next_if(|r| r.index == index) {
                Some(r) => {
                    kinds.append_value(r.kind.code());
                    pool_pair_id(&mut id, seed, r.of);
                    copy_of.append_value(&id);
                }
                None => {
                    kinds.append_null();
                    copy_of.append_null();
                }
            }
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(ids.finish()),
            Arc::new(pref.finish()),
            Arc::new(kinds.finish()),
            Arc::new(copy_of.finish()),
        ];
        sink.write(&batch(&schema, cols, "truth")?)?;
    }
    sink.finish()
}

fn write_gold(out: &Location, seed: u64, gold: &[GoldRow]) -> Result<()> {
    let schema = schema_of(&["pair_id", "verdict", "annotator", "labeled_at"]);
    let mut sink = ParquetSink::new(out.child("gold.parquet"), &schema)?;
    let mut text = String::new();
    for chunk in gold.chunks(BATCH_ROWS) {
        let mut ids = StringBuilder::new();
        let mut verdicts = StringBuilder::new();
        let mut annotators = StringBuilder::new();
        let mut dates = StringBuilder::new();
        for g in chunk {
            pool_pair_id(&mut text, seed, g.index);
            ids.append_value(&text);
            verdicts.append_value(["chosen", "rejected", "undecidable"][g.verdict as usize]);
            text.clear();
            let _ = write!(text, "annotator-{}", g.annotator);
            annotators.append_value(&text);
            text.clear();
            let _ = write!(
                text,
                "2025-{:02}-{:02}T{:02}:{:02}:00Z",
                g.month, g.day, g.hour, g.minute
            );
            dates.append_value(&text);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(ids.finish()),
            Arc::new(verdicts.finish()),
            Arc::new(annotators.finish()),
            Arc::new(dates.finish()),
        ];
        sink.write(&batch(&schema, cols, "gold")?)?;
    }
    sink.finish()
}

fn write_judges(out: &Location, seed: u64, judged: &[JudgedRow]) -> Result<()> {
    let schema = schema_of(&["pair_id", "judge", "verdict"]);
    let mut sink = ParquetSink::new(out.child("judge_votes.parquet"), &schema)?;
    let mut id = String::new();
    for chunk in judged.chunks(BATCH_ROWS / JUDGES.len()) {
        let mut ids = StringBuilder::new();
        let mut judges = StringBuilder::new();
        let mut verdicts = StringBuilder::new();
        for r in chunk {
            pool_pair_id(&mut id, seed, r.index);
            for (j, judge) in JUDGES.iter().enumerate() {
                ids.append_value(&id);
                judges.append_value(judge);
                verdicts.append_value(verdict(r.votes & (1 << j) != 0));
            }
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(ids.finish()),
            Arc::new(judges.finish()),
            Arc::new(verdicts.finish()),
        ];
        sink.write(&batch(&schema, cols, "judge votes")?)?;
    }
    sink.finish()
}

/// Held-out pairs from their own stream: chosen always truly better, no noise, no
/// faults. `gen_index` continues after the pool (pool rows + eval index), so it is
/// unique over everything `gen` writes.
fn write_eval(
    out: &Location,
    spec: &GenSpec,
    generator: &Generator,
    schema: &SchemaRef,
) -> Result<()> {
    let mut sink = ParquetSink::new(out.child("eval.parquet"), schema)?;
    let mut rng = rng_for(spec.seed, Stream::Eval);
    let mut builders = PairBuilders::new();
    let mut cur = PairText::default();
    let mut id = String::new();
    for j in 0..spec.eval_pairs {
        generator.pair(&mut rng, PROMPT_WORDS.0, &mut cur);
        eval_pair_id(&mut id, spec.seed, j);
        builders.append(&id, &cur, (spec.pairs + j) as i64);
        if builders.rows >= BATCH_ROWS {
            sink.write(&builders.finish(schema)?)?;
        }
    }
    if builders.rows > 0 {
        sink.write(&builders.finish(schema)?)?;
    }
    sink.finish()
}

/// The leaked pool prompts plus unrelated benchmark questions, in a seeded order.
fn write_benchmark(
    out: &Location,
    seed: u64,
    mut prompts: Vec<String>,
    generator: &Generator,
) -> Result<u64> {
    let mut rng = rng_for(seed, Stream::Benchmark);
    let mut buf = String::new();
    for _ in 0..UNRELATED_BENCHMARK_PROMPTS {
        let category = pick_weighted(&mut rng, &CATEGORIES);
        generator.prompt(&mut rng, category, NGRAM_WORDS, &mut buf);
        prompts.push(buf.clone());
    }
    prompts.shuffle(&mut rng);
    let mut bytes = Vec::new();
    for p in &prompts {
        serde_json::to_writer(&mut bytes, &serde_json::json!({ "prompt": p }))
            .map_err(|e| Error::other("benchmark_prompts.jsonl", e))?;
        bytes.push(b'\n');
    }
    out.child("benchmark_prompts.jsonl").put(bytes)?;
    Ok(prompts.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use std::path::PathBuf;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir()
                .join(format!("synpref-gen-{name}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
        fn path(&self) -> String {
            self.0.to_string_lossy().into_owned()
        }
        fn file(&self, rel: &str) -> PathBuf {
            self.0.join(rel)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn rows(path: &std::path::Path) -> i64 {
        let reader =
            SerializedFileReader::new(std::fs::File::open(path).expect("open")).expect("parquet");
        reader.metadata().file_metadata().num_rows()
    }

    #[test]
    fn gen_same_seed_same_bytes_and_different_seed_differs() {
        let (a, b, c) = (TempDir::new("a"), TempDir::new("b"), TempDir::new("c"));
        let sa = run_gen(&GenSpec::new(1500, a.path(), 7)).expect("gen a");
        let sb = run_gen(&GenSpec::new(1500, b.path(), 7)).expect("gen b");
        run_gen(&GenSpec::new(1500, c.path(), 8)).expect("gen c");
        assert_eq!(sa, sb);
        let part = "pairs/part-00000.parquet";
        let (ba, bb, bc) = (
            std::fs::read(a.file(part)).unwrap(),
            std::fs::read(b.file(part)).unwrap(),
            std::fs::read(c.file(part)).unwrap(),
        );
        assert_eq!(ba, bb);
        assert_ne!(ba, bc);
        for f in [
            "truth.parquet",
            "gold.parquet",
            "judge_votes.parquet",
            "eval.parquet",
            "benchmark_prompts.jsonl",
        ] {
            assert_eq!(
                std::fs::read(a.file(f)).unwrap(),
                std::fs::read(b.file(f)).unwrap(),
                "{f}"
            );
        }
    }

    #[test]
    fn gen_noise_and_file_sizes() {
        let dir = TempDir::new("noise");
        let mut spec = GenSpec::new(5000, dir.path(), 7);
        spec.rows_per_file = 2000;
        let s = run_gen(&spec).expect("gen");
        assert!(
            (0.08..=0.2).contains(&s.label_noise),
            "label noise {}",
            s.label_noise
        );
        assert_eq!(
            s.pair_files,
            vec![
                "pairs/part-00000.parquet",
                "pairs/part-00001.parquet",
                "pairs/part-00002.parquet"
            ]
        );
        let pool: i64 = s.pair_files.iter().map(|f| rows(&dir.file(f))).sum();
        assert_eq!(pool, 5000);
        assert_eq!(rows(&dir.file("truth.parquet")), 5000);
        let gold = rows(&dir.file("gold.parquet"));
        assert_eq!(gold as u64, s.gold_labels);
        assert!((175..=325).contains(&gold), "gold rows {gold}");
        assert_eq!(rows(&dir.file("judge_votes.parquet")) as u64, s.judge_votes);
        assert!(
            (3 * 1100..=3 * 1400).contains(&s.judge_votes),
            "judge votes {}",
            s.judge_votes
        );
        assert_eq!(rows(&dir.file("eval.parquet")) as u64, 500);
        let bench = std::fs::read_to_string(dir.file("benchmark_prompts.jsonl")).unwrap();
        assert_eq!(bench.lines().count() as u64, s.benchmark_prompts);
        assert!(s.benchmark_prompts > UNRELATED_BENCHMARK_PROMPTS as u64);
        for line in bench.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["prompt"].as_str().unwrap().split(' ').count() >= NGRAM_WORDS);
        }
    }

    #[test]
    fn gen_rejects_bad_specs_with_exit_code_2() {
        let dir = TempDir::new("bad");
        let err = run_gen(&GenSpec::new(0, dir.path(), 7)).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--pairs"), "{err}");
        let mut spec = GenSpec::new(10, dir.path(), 7);
        spec.gold_fraction = 1.5;
        let err = run_gen(&spec).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--gold-fraction"), "{err}");
        let mut spec = GenSpec::new(10, dir.path(), 7);
        spec.rows_per_file = 0;
        assert_eq!(run_gen(&spec).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn gen_defaults() {
        let s = GenSpec::new(5, "x", 7);
        assert_eq!(s.eval_pairs, 100);
        assert_eq!(GenSpec::new(1_000_000, "x", 7).eval_pairs, 2000);
        assert_eq!(GenSpec::new(5_000, "x", 7).eval_pairs, 500);
        let t: f64 = CATEGORIES.iter().map(|c| c.1).sum();
        assert!((t - 1.0).abs() < 1e-9);
    }

    /// The pool's rows carry the planted faults and noise at the asked rates, and the
    /// truth is what the texts say.
    #[test]
    fn gen_rows_follow_the_model() {
        let spec = GenSpec {
            duplicate_fraction: 0.05,
            empty_fraction: 0.05,
            ..GenSpec::new(4000, "unused", 3)
        };
        let generator = Generator::new(spec.seed);
        let mut pool = PoolRows::new(&spec, &generator);
        let mut cur = PairText::default();
        let mut seen = rustc_hash::FxHashSet::default();
        let (mut dups, mut empties) = (0, 0);
        for _ in 0..spec.pairs {
            pool.next_row(&mut cur);
            if !seen.insert((cur.prompt.clone(), cur.chosen.clone(), cur.rejected.clone())) {
                dups += 1;
            }
            if cur.rejected.is_empty() {
                empties += 1;
                assert!(cur.chosen_better);
            }
            assert!(cur.chosen.ends_with('.') && cur.chosen.as_bytes()[0].is_ascii_uppercase());
            assert!(cur.prompt.ends_with('?'));
        }
        assert!((120..=280).contains(&dups), "duplicates {dups}");
        assert!((120..=280).contains(&empties), "empty {empties}");
    }

    /// Pool accuracy, gold-RM accuracy on the non-gold pairs, and label accuracy of the
    /// pairs the consistency rule would keep without judges (gold RM agrees with the
    /// label and so does the best RM, trained on the pool's own labels).
    fn simulate_curation(pairs: u64, seed: u64) -> (f64, f64, f64, f64) {
        use synpref_operators::models::builtin::{HashedBtModel, TrainExample, TrainSettings};
        use synpref_operators::models::features::{
            category_hash, response_features, SparseFeatures, DEFAULT_FEATURE_BITS,
        };
        let spec = GenSpec {
            duplicate_fraction: 0.0,
            empty_fraction: 0.0,
            ..GenSpec::new(pairs, "unused", seed)
        };
        let generator = Generator::new(spec.seed);
        let mut pool = PoolRows::new(&spec, &generator);
        let mut gold_rng = rng_for(seed, Stream::Gold);
        let mut cur = PairText::default();
        let (mut examples, mut truth, mut gold_set, mut is_gold) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..spec.pairs {
            pool.next_row(&mut cur);
            let cat = category_hash(Some(CATEGORIES[cur.category].0));
            let (mut c, mut r) = (SparseFeatures::default(), SparseFeatures::default());
            response_features(&cur.chosen, cat, DEFAULT_FEATURE_BITS, &mut c);
            response_features(&cur.rejected, cat, DEFAULT_FEATURE_BITS, &mut r);
            let e = TrainExample {
                pair_id: format!("{i:09}"),
                winner: c,
                loser: r,
            };
            let g = gold_rng.random::<f64>() < spec.gold_fraction;
            if g {
                let right = gold_rng.random::<f64>() >= GOLD_ERROR;
                let mut ge = e.clone();
                if right != cur.chosen_better {
                    std::mem::swap(&mut ge.winner, &mut ge.loser);
                }
                gold_set.push(ge);
            }
            is_gold.push(g);
            examples.push(e);
            truth.push(cur.chosen_better);
        }
        let settings = TrainSettings::default();
        let gold = HashedBtModel::train(gold_set, Vec::new(), &settings, |_, _| {});
        let best = HashedBtModel::train(examples.clone(), Vec::new(), &settings, |_, _| {});
        let (mut n, mut right, mut gold_right, mut best_right, mut kept, mut kept_right) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for ((e, &t), &g) in examples.iter().zip(&truth).zip(&is_gold) {
            if g {
                continue;
            }
            n += 1.0;
            right += f64::from(u8::from(t));
            let gold_agrees = gold.margin(e) > 0.0;
            gold_right += f64::from(u8::from(gold_agrees == t));
            best_right += f64::from(u8::from((best.margin(e) > 0.0) == t));
            if gold_agrees && best.margin(e) > 0.0 {
                kept += 1.0;
                kept_right += f64::from(u8::from(t));
            }
        }
        (right / n, gold_right / n, best_right / n, kept_right / kept)
    }

    /// What `gen` is for: an RM trained on the small gold set recovers the truth well
    /// enough that keeping the pairs it (and the best RM) agrees with raises label
    /// accuracy by well over 0.05.
    #[test]
    fn gen_curation_by_agreement_helps() {
        let (pool, gold_rm, best_rm, curated) = simulate_curation(20_000, 11);
        eprintln!("pool {pool:.3} gold-RM {gold_rm:.3} best-RM(in-sample) {best_rm:.3} curated {curated:.3}");
        assert!(curated > pool + 0.05, "pool {pool} curated {curated}");
    }
}

impl crate::job::SerialJob for GenSpec {
    const NAME: &'static str = "gen";
    type Report = GenSummary;

    fn check(&self) -> Result<()> {
        GenSpec::validate(self)
    }

    fn run(&self) -> Result<GenSummary> {
        run_gen(self)
    }

    fn summarise(&self, s: &GenSummary) -> String {
        format!(
            "wrote {} pairs ({} files), {} gold labels, {} eval pairs, {} judge votes, {} benchmark prompts under {} (label noise {:.1}%)\n",
            s.pairs,
            s.pair_files.len(),
            s.gold_labels,
            s.eval_pairs,
            s.judge_votes,
            s.benchmark_prompts,
            self.out,
            100.0 * s.label_noise
        )
    }
}
