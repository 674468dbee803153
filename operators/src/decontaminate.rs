//! `decontaminate`: drops pairs whose prompt shares a word 13-gram (lower-cased) with a
//! user turn of an evaluation benchmark's prompt (DESIGN §1; 13-grams as in GPT-3's
//! contamination analysis, Brown et al. 2020, §4).

use std::sync::Arc;

use rustc_hash::FxHashSet;
use synpref_engine::model::{PreferencePair, Reason};
use synpref_engine::output::OutputRow;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::Operator;

use crate::models::features::{for_each_word, mix};
use crate::{routed, Rows};

/// Words per n-gram.
pub const NGRAM_WORDS: usize = 13;

/// The set of benchmark 13-grams, as 64-bit hashes of their word hashes.
#[derive(Default, Debug)]
pub struct NgramIndex {
    grams: FxHashSet<u64>,
    pub prompts: usize,
}

fn gram_hash(words: &[u64]) -> u64 {
    words
        .iter()
        .fold(0x51_7cc1_b727_220a_u64, |h, w| mix(h.rotate_left(5) ^ w))
}

impl NgramIndex {
    pub fn build<'a>(prompts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut idx = NgramIndex::default();
        let mut words = Vec::new();
        for p in prompts {
            idx.prompts += 1;
            words.clear();
            for_each_word(p, |w| words.push(w));
            for window in words.windows(NGRAM_WORDS) {
                idx.grams.insert(gram_hash(window));
            }
        }
        idx
    }

    pub fn is_empty(&self) -> bool {
        self.grams.is_empty()
    }

    pub fn len(&self) -> usize {
        self.grams.len()
    }

    /// True when `text` contains one of the indexed 13-grams.
    pub fn contaminates(&self, pair: &PreferencePair) -> bool {
        if self.grams.is_empty() {
            return false;
        }
        let mut words = Vec::new();
        pair.prompt
            .for_each_text(|t| for_each_word(t, |w| words.push(w)));
        words
            .windows(NGRAM_WORDS)
            .any(|w| self.grams.contains(&gram_hash(w)))
    }
}

pub trait Decontaminate<'scope> {
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
                            if index.contaminates(&pair) {
                                let message =
                                    "prompt shares a 13-gram with a benchmark prompt".to_string();
                                session.give(Err(routed(
                                    pair,
                                    Reason::Contaminated,
                                    Some(message),
                                )));
                            } else {
                                session.give(Ok(pair));
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

    #[test]
    fn thirteen_shared_words_contaminate_twelve_do_not() {
        let bench =
            "one two three four five six seven eight nine ten eleven twelve thirteen fourteen";
        let idx = NgramIndex::build([bench]);
        let mk = |p: &str| PreferencePair {
            key: synpref_engine::model::RowKey(0),
            row: 0,
            pair_id: "x".into(),
            prompt: synpref_engine::model::Conversation::Text(p.into()),
            chosen: synpref_engine::model::Conversation::Text("a".into()),
            rejected: synpref_engine::model::Conversation::Text("b".into()),
            implicit_prompt: false,
            attributes: Default::default(),
            extras: vec![],
            content_hash: 0,
            pair_key: 0,
            corrected: false,
        };
        assert!(idx.contaminates(&mk(
            "Please: TWO three four five six seven eight nine ten eleven twelve thirteen fourteen!"
        )));
        assert!(!idx.contaminates(&mk(
            "two three four five six seven eight nine ten eleven twelve thirteen"
        )));
    }
}
