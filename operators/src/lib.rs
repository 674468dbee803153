//! synpref-operators: the dataflow operators of synpref, one per file, each an
//! extension trait with one method on timely streams and a name in the dataflow graph
//! (validate, index_first, collect_deciders, index_bands, dedup, near_duplicates, unique_pair_ids, decontaminate, score,
//! consistency_rule, collect_examples, write_parts; decide_incrementally for `serve`, and `conflict_standby`, the rows serve scores on standby), plus the reward-model boundary and
//! the built-in hashed Bradley–Terry model (`models`), and the training of the
//! models with the self-measurement of a run (`training`).
//!
//! Operators route bad or dropped rows as data (a second stream of `OutputRow`s with a
//! reason) beside the good ones; none panics on bad input.

pub mod collect_examples;
pub mod conflict_deciders;
pub mod conflict_standby;
pub mod consistency_rule;
pub mod decide_incrementally;
pub mod decontaminate;
pub mod dedup;
pub mod index_bands;
pub mod index_first;
pub mod minhash;
pub mod models;
pub mod near_duplicates;
pub mod score;
pub mod sorted_runs;
pub mod training;
pub mod unique_pair_ids;
pub mod validate;
pub mod write_parts;

use synpref_engine::model::{PreferencePair, Reason};
use synpref_engine::output::OutputRow;
use timely::dataflow::StreamVec;

/// A stream of items in a job's dataflow (timestamps are batch numbers).
pub type Rows<'scope, D> = StreamVec<'scope, u64, D>;

/// The output row for a valid pair routed away with `reason`, unscored.
pub fn routed(pair: PreferencePair, reason: Reason, error: Option<String>) -> OutputRow {
    OutputRow {
        key: pair.key,
        row: pair.row,
        pair_id: Some(pair.pair_id),
        prompt: if pair.implicit_prompt {
            None
        } else {
            Some(pair.prompt)
        },
        chosen: Some(pair.chosen),
        rejected: Some(pair.rejected),
        attributes: pair.attributes,
        extras: pair.extras,
        reason,
        p_best: None,
        p_gold: None,
        error,
        raw: None,
        matched_ngram: None,
        duplicate_of: None,
        swapped: false,
    }
}
