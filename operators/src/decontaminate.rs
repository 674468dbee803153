//! `decontaminate`: drops pairs that share a word n-gram (lower-cased) with an
//! evaluation benchmark, and records the n-gram on the discarded row.
//!
//! Two scopes (`DecontaminationScope`):
//! - `prompt` (the default, DESIGN §1): the pair's prompt against every user turn of
//!   the benchmarks' prompts, with 13-grams as in GPT-3's contamination analysis
//!   (Brown et al. 2020, §4 and appendix C).
//! - `pair`: the Skywork-Reward-V2 paper's whole-pair check: the pair's prompt, chosen
//!   and rejected replies against the benchmarks' prompts and every reply they hold,
//!   with n-grams of 5 to 13 words (`--decontaminate-ngram`): a benchmark's answer
//!   copied into a training reply leaks the label even when the prompt is reworded.
//!
//! N-grams never cross the boundary between two texts (two turns, or prompt and
//! reply), on either side, so a match is a run of words one text really contains.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use synpref_engine::model::{Conversation, PreferencePair, Reason};
use synpref_engine::output::OutputRow;
use synpref_engine::{Error, Result};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::Operator;

use crate::models::features::{for_each_word_span, mix};
use crate::{routed, Rows};

/// Words per n-gram of the prompt scope, and the default of both: 13 (GPT-3's
/// contamination analysis, Brown et al. 2020).
pub const NGRAM_WORDS: usize = 13;

/// The shortest n-gram `--decontaminate-ngram` accepts: 5 words, the short end of the
/// paper's whole-pair check (Skywork-Reward-V2, §3 data decontamination); shorter
/// runs of words are common phrases, not leaks.
pub const MIN_NGRAM_WORDS: usize = 5;

/// What of a pair is checked, and against which benchmark texts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DecontaminationScope {
    /// The pair's prompt against the benchmarks' user turns.
    #[default]
    Prompt,
    /// The pair's prompt and both replies against the benchmarks' user turns and
    /// replies.
    Pair,
}

/// The knobs of decontamination; the benchmark files are the job's own setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DecontaminationSettings {
    /// `--decontaminate-scope`: `prompt` (default) or `pair`.
    pub scope: DecontaminationScope,
    /// `--decontaminate-ngram`: words per n-gram, 5 to 13 (default 13).
    pub ngram_words: usize,
}

impl Default for DecontaminationSettings {
    fn default() -> Self {
        DecontaminationSettings {
            scope: DecontaminationScope::Prompt,
            ngram_words: NGRAM_WORDS,
        }
    }
}

impl DecontaminationSettings {
    /// Errors name the flag at fault.
    pub fn validate(&self) -> Result<()> {
        if !(MIN_NGRAM_WORDS..=NGRAM_WORDS).contains(&self.ngram_words) {
            return Err(Error::setting(
                "--decontaminate-ngram",
                format!(
                    "must be {MIN_NGRAM_WORDS} to {NGRAM_WORDS} words, not {}",
                    self.ngram_words
                ),
            ));
        }
        Ok(())
    }
}

/// Where in a benchmark an indexed n-gram was found (a prompt wins when both hold it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchmarkPart {
    Prompt,
    Reply,
}

/// The benchmark n-grams, as 64-bit hashes of their word hashes, and where each came
/// from.
#[derive(Debug, Default)]
pub struct NgramIndex {
    settings: DecontaminationSettings,
    grams: FxHashMap<u64, BenchmarkPart>,
    /// Benchmark texts indexed (user turns, and replies in the pair scope).
    pub texts: usize,
}

fn gram_hash(words: &[u64]) -> u64 {
    words
        .iter()
        .fold(0x51_7cc1_b727_220a_u64, |h, w| mix(h.rotate_left(5) ^ w))
}

/// A pair's match: which of its parts, the words as the pair writes them, and where
/// the benchmark holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contamination {
    pub part: &'static str,
    pub words: usize,
    pub ngram: String,
    pub benchmark_part: BenchmarkPart,
}

impl Contamination {
    /// The sentence written into the discarded row's `error` column.
    pub fn message(&self) -> String {
        let of = match self.benchmark_part {
            BenchmarkPart::Prompt => "a benchmark prompt",
            BenchmarkPart::Reply => "a benchmark reply",
        };
        format!(
            "{} shares the {}-gram \"{}\" with {of}",
            self.part, self.words, self.ngram
        )
    }
}

impl NgramIndex {
    /// Indexes `prompts` (benchmark user turns) and, in the pair scope, `replies`
    /// (every benchmark reply); the prompt scope ignores replies.
    pub fn build<'a>(
        settings: DecontaminationSettings,
        prompts: impl IntoIterator<Item = &'a str>,
        replies: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut idx = NgramIndex {
            settings,
            ..NgramIndex::default()
        };
        let mut words = Vec::new();
        let mut add = |text: &str, part: BenchmarkPart, idx: &mut NgramIndex| {
            idx.texts += 1;
            words.clear();
            for_each_word_span(text, |w, _| words.push(w));
            for window in words.windows(settings.ngram_words) {
                idx.grams.entry(gram_hash(window)).or_insert(part);
            }
        };
        for p in prompts {
            add(p, BenchmarkPart::Prompt, &mut idx);
        }
        if settings.scope == DecontaminationScope::Pair {
            for r in replies {
                add(r, BenchmarkPart::Reply, &mut idx);
            }
        }
        idx
    }

    pub fn settings(&self) -> DecontaminationSettings {
        self.settings
    }

    pub fn is_empty(&self) -> bool {
        self.grams.is_empty()
    }

    pub fn len(&self) -> usize {
        self.grams.len()
    }

    /// The first indexed n-gram the pair holds (its prompt first, then chosen, then
    /// rejected in the pair scope), or `None`.
    pub fn find(&self, pair: &PreferencePair) -> Option<Contamination> {
        if self.grams.is_empty() {
            return None;
        }
        let mut parts: Vec<(&'static str, &Conversation)> = vec![("prompt", &pair.prompt)];
        if self.settings.scope == DecontaminationScope::Pair {
            parts.push(("chosen reply", &pair.chosen));
            parts.push(("rejected reply", &pair.rejected));
        }
        let n = self.settings.ngram_words;
        let mut words = Vec::new();
        let mut spans = Vec::new();
        for (part, conversation) in parts {
            let mut found = None;
            conversation.for_each_text(|text| {
                if found.is_some() {
                    return;
                }
                words.clear();
                spans.clear();
                for_each_word_span(text, |w, span| {
                    words.push(w);
                    spans.push(span);
                });
                found = words.windows(n).enumerate().find_map(|(i, window)| {
                    self.grams.get(&gram_hash(window)).map(|&benchmark_part| {
                        let ngram = &text[spans[i].start..spans[i + n - 1].end];
                        Contamination {
                            part,
                            words: n,
                            ngram: ngram.split_whitespace().collect::<Vec<_>>().join(" "),
                            benchmark_part,
                        }
                    })
                });
            });
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// True when the pair holds one of the indexed n-grams.
    pub fn contaminates(&self, pair: &PreferencePair) -> bool {
        self.find(pair).is_some()
    }
}

pub trait Decontaminate<'scope> {
    /// Splits pairs into those that share no indexed n-gram with a benchmark and the
    /// `contaminated` rows, each naming the n-gram it matched.
    fn decontaminate(
        self,
        index: Arc<NgramIndex>,
    ) -> (Rows<'scope, PreferencePair>, Rows<'scope, OutputRow>);
}

impl<'scope> Decontaminate<'scope> for Rows<'scope, PreferencePair> {
    fn decontaminate(
        self,
        index: Arc<NgramIndex>,
    ) -> (Rows<'scope, PreferencePair>, Rows<'scope, OutputRow>) {
        let checked: Rows<'scope, Result<PreferencePair, OutputRow>> =
            self.unary(Pipeline, "Decontaminate", move |_, _| {
                move |input, output| {
                    input.for_each(|time, data| {
                        let mut session = output.session(&time);
                        for pair in data.drain(..) {
                            match index.find(&pair) {
                                Some(found) => {
                                    tracing::debug!(pair_id = %pair.pair_id, "{}", found.message());
                                    let mut row = routed(pair, Reason::Contaminated, None);
                                    row.matched_ngram = Some(found.ngram);
                                    session.give(Err(row));
                                }
                                None => session.give(Ok(pair)),
                            }
                        }
                    });
                }
            });
        checked.ok_err(|r| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synpref_engine::model::Message;

    fn pair(prompt: Conversation, chosen: &str, rejected: &str) -> PreferencePair {
        let text = |t: &str| Conversation::Text(t.into());
        PreferencePair::outside_pool("x", prompt, text(chosen), text(rejected))
    }

    fn text(p: &str) -> PreferencePair {
        pair(Conversation::Text(p.into()), "a", "b")
    }

    const BENCH: &str =
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen";

    #[test]
    fn thirteen_shared_words_contaminate_twelve_do_not() {
        let idx = NgramIndex::build(Default::default(), [BENCH], []);
        let found = idx
            .find(&text(
                "Please: TWO three four five six seven eight nine ten eleven twelve thirteen fourteen!",
            ))
            .expect("a 13-gram is shared");
        assert_eq!(found.part, "prompt");
        assert_eq!(
            found.ngram,
            "TWO three four five six seven eight nine ten eleven twelve thirteen fourteen"
        );
        assert_eq!(
            found.message(),
            "prompt shares the 13-gram \"TWO three four five six seven eight nine ten eleven \
             twelve thirteen fourteen\" with a benchmark prompt"
        );
        assert!(!idx.contaminates(&text(
            "two three four five six seven eight nine ten eleven twelve thirteen"
        )));
    }

    #[test]
    fn prompt_scope_ignores_replies_on_both_sides() {
        let idx = NgramIndex::build(Default::default(), ["short prompt"], [BENCH]);
        assert!(
            idx.is_empty(),
            "replies are not indexed in the prompt scope"
        );
        let idx = NgramIndex::build(Default::default(), [BENCH], []);
        assert!(!idx.contaminates(&pair(Conversation::Text("hi".into()), BENCH, "b")));
    }

    #[test]
    fn pair_scope_checks_both_replies_against_benchmark_replies() {
        let settings = DecontaminationSettings {
            scope: DecontaminationScope::Pair,
            ngram_words: 5,
        };
        let idx = NgramIndex::build(
            settings,
            ["what is the capital of france today"],
            ["the answer is paris, of course"],
        );
        let hi = || Conversation::Text("hello there".into());
        let found = idx
            .find(&pair(hi(), "x", "I think THE ANSWER is Paris of course."))
            .expect("a 5-gram of a benchmark reply");
        assert_eq!(found.part, "rejected reply");
        assert_eq!(found.benchmark_part, BenchmarkPart::Reply);
        assert_eq!(found.ngram, "THE ANSWER is Paris of");
        let found = idx
            .find(&pair(hi(), "The capital of France today is Paris.", "y"))
            .expect("a 5-gram of a benchmark prompt in a reply");
        assert_eq!(found.part, "chosen reply");
        assert_eq!(found.benchmark_part, BenchmarkPart::Prompt);
        assert!(!idx.contaminates(&pair(hi(), "the answer is paris", "four words only here")));
    }

    #[test]
    fn ngrams_do_not_cross_turns() {
        let idx = NgramIndex::build(Default::default(), [BENCH], []);
        let (first, second) = BENCH.split_at(BENCH.find(" seven").unwrap());
        let turns = Conversation::Messages(vec![
            Message {
                role: "user".into(),
                content: first.into(),
            },
            Message {
                role: "assistant".into(),
                content: second.into(),
            },
        ]);
        assert!(!idx.contaminates(&pair(turns, "a", "b")));
    }

    #[test]
    fn ngram_lengths_outside_five_to_thirteen_are_refused() {
        for (n, ok) in [(4, false), (5, true), (13, true), (14, false)] {
            let s = DecontaminationSettings {
                scope: DecontaminationScope::Pair,
                ngram_words: n,
            };
            assert_eq!(s.validate().is_ok(), ok, "{n}");
        }
    }
}
