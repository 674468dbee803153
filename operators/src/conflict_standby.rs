//! `conflict_standby`: for `serve`, the copies of conflicting comparisons that `dedup`
//! routes away as `conflicting_labels` because another copy decides (or none can), so
//! that serve scores them too and can let one decide when a later label makes it the
//! deciding copy (DESIGN §4 `conflicting_labels`; issue 28 part 5).
//!
//! The operator passes on exactly the rows `dedup` discards as `conflicting_labels`:
//! the first row of an orientation whose swapped copy also occurs, which is not the
//! comparison's deciding row, marked `conflict` as the deciding row is. Later copies
//! of an orientation are duplicates either way and never decide. Serve sends them
//! through the same later stages as the main path (near-duplicates, unique pair ids,
//! decontamination) before scoring, so that it holds exactly the rows that would reach
//! the rule were they the deciding copy. Curate's own output is untouched: this stream
//! only feeds serve's capture.

use std::rc::Rc;

use synpref_engine::hashing::{dedup_key, dedup_route, swapped_dedup_key};
use synpref_engine::model::PreferencePair;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::conflict_deciders::ConflictDeciders;
use crate::index_first::FirstIndex;
use crate::Rows;

pub trait ConflictStandby<'scope> {
    /// The rows `dedup` discards as `conflicting_labels`, marked `conflict`.
    fn conflict_standby(
        self,
        content_index: FirstIndex,
        deciders: Rc<ConflictDeciders>,
    ) -> Rows<'scope, PreferencePair>;
}

impl<'scope> ConflictStandby<'scope> for Rows<'scope, PreferencePair> {
    fn conflict_standby(
        self,
        content_index: FirstIndex,
        deciders: Rc<ConflictDeciders>,
    ) -> Rows<'scope, PreferencePair> {
        let route = |p: &PreferencePair| dedup_route(dedup_key(p.dedup_hash));
        self.unary(Exchange::new(route), "ConflictStandby", move |_, _| {
            move |input, output| {
                let index = content_index.borrow();
                input.for_each(|time, data| {
                    let mut session = output.session(&time);
                    for mut pair in data.drain(..) {
                        let key = dedup_key(pair.dedup_hash);
                        let first = index.first(key) == Some(pair.key);
                        let conflicting = index.first(swapped_dedup_key(key)).is_some();
                        if first && conflicting && deciders.decider(key) != Some(pair.key) {
                            pair.conflict = true;
                            pair.adopted_label = deciders.adopted_label(pair.key);
                            session.give(pair);
                        }
                    }
                });
            }
        })
    }
}
