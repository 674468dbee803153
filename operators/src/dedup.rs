//! `dedup`: exact deduplication on (x, y_w, y_l) (DESIGN §1) and conflicting labels,
//! on the dedup key (`hashing::dedup_key`: the canonical form of DESIGN §4, every input
//! form normalised to one conversation + final replies, whitespace collapsed, unless
//! `--dedup-as-written`; oriented, so the swapped copy of a comparison is `key ^ 1`).
//!
//! Pairs are exchanged by `hashing::dedup_route` to the worker holding that part of the
//! survey's index, where both orientations of a comparison meet:
//! - a pair that is not the first with its key (input order) is `duplicate`;
//! - the first of an orientation whose swapped copy also occurs is a conflicting
//!   comparison: the row that decides it (`conflict_deciders`: a human verdict, else
//!   judge votes) goes on, marked `conflict` so that the rule skips the best RM; every
//!   other copy is `conflicting_labels`, naming the deciding row or, where no row can
//!   decide, the first row of the other orientation;
//! - a first row with no human label of its own takes its first labelled duplicate
//!   copy's (`PreferencePair::adopted_label`, `conflict_deciders`).

use std::rc::Rc;

use synpref_engine::hashing::{dedup_key, dedup_route, swapped_dedup_key};
use synpref_engine::model::{PreferencePair, Reason};
use synpref_engine::output::OutputRow;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::Operator;

use crate::conflict_deciders::ConflictDeciders;
use crate::index_first::FirstIndex;
use crate::{routed, Rows};

pub trait Dedup<'scope> {
    /// Splits pairs into those that go on and the rows routed away as `duplicate` or
    /// `conflicting_labels`.
    fn dedup(
        self,
        content_index: FirstIndex,
        deciders: Rc<ConflictDeciders>,
    ) -> (Rows<'scope, PreferencePair>, Rows<'scope, OutputRow>);
}

impl<'scope> Dedup<'scope> for Rows<'scope, PreferencePair> {
    fn dedup(
        self,
        content_index: FirstIndex,
        deciders: Rc<ConflictDeciders>,
    ) -> (Rows<'scope, PreferencePair>, Rows<'scope, OutputRow>) {
        type Checked = Result<PreferencePair, OutputRow>;
        let route = |p: &PreferencePair| dedup_route(dedup_key(p.dedup_hash));
        let checked: Rows<'scope, Checked> =
            self.unary(Exchange::new(route), "Dedup", move |_, _| {
                move |input, output| {
                    let index = content_index.borrow();
                    input.for_each(|time, data| {
                        let mut session = output.session(&time);
                        for pair in data.drain(..) {
                            session.give(check(&index, &deciders, pair));
                        }
                    });
                }
            });
        checked.ok_err(|r| r)
    }
}

/// The fate of one pair at the worker owning its dedup key.
fn check(
    index: &crate::index_first::KeyIndex,
    deciders: &ConflictDeciders,
    mut pair: PreferencePair,
) -> Result<PreferencePair, OutputRow> {
    let key = dedup_key(pair.dedup_hash);
    match index.first(key) {
        Some(first) if first != pair.key => {
            let message = format!(
                "same conversation, chosen and rejected reply as the row with key {}",
                first.0
            );
            return Err(routed(pair, Reason::Duplicate, Some(message)));
        }
        _ => {}
    }
    pair.adopted_label = deciders.adopted_label(pair.key);
    let Some(other) = index.first(swapped_dedup_key(key)) else {
        return Ok(pair);
    };
    match deciders.decider(key) {
        Some(decider) if decider == pair.key => {
            pair.conflict = true;
            Ok(pair)
        }
        Some(decider) => {
            let message = format!(
                "the same comparison occurs with chosen and rejected swapped; the row with \
                 key {} decides it (its human verdict or judge votes)",
                decider.0
            );
            Err(routed(pair, Reason::ConflictingLabels, Some(message)))
        }
        None => {
            let message = format!(
                "the same comparison occurs with chosen and rejected swapped (the row with \
                 key {}) and no human verdict or judge votes decide it",
                other.0
            );
            Err(routed(pair, Reason::ConflictingLabels, Some(message)))
        }
    }
}
