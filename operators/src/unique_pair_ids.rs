//! `unique_pair_ids`: exchanges pairs by pair id (the key every later stage joins on:
//! gold labels, judge votes, scores) and quarantines a row that reuses the pair id of an
//! earlier row with different content (`invalid_duplicate_pair_id`): a gold label for
//! that id could not say which pair it meant.

use std::rc::Rc;

use synpref_engine::model::{InvalidReason, PreferencePair, Reason};
use synpref_engine::output::OutputRow;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::Operator;

use crate::index_first::FirstIndex;
use crate::{routed, Rows};

pub trait UniquePairIds<'scope> {
    fn unique_pair_ids(self, pair_index: FirstIndex) -> (Rows<'scope, PreferencePair>, Rows<'scope, OutputRow>);
}

impl<'scope> UniquePairIds<'scope> for Rows<'scope, PreferencePair> {
    fn unique_pair_ids(self, pair_index: FirstIndex) -> (Rows<'scope, PreferencePair>, Rows<'scope, OutputRow>) {
        let index = Rc::clone(&pair_index);
        let checked: Rows<'scope, Result<PreferencePair, OutputRow>> = self.unary(
            Exchange::new(|p: &PreferencePair| p.pair_key),
            "UniquePairIds",
            move |_, _| {
                move |input, output| {
                    let map = index.borrow();
                    input.for_each(|time, data| {
                        let mut session = output.session(&time);
                        for pair in data.drain(..) {
                            let first = map.first(pair.pair_key);
                            if first.is_none_or(|f| f == pair.key) {
                                session.give(Ok(pair));
                            } else {
                                let message = format!("pair_id `{}` is already used by an earlier row with other content", pair.pair_id);
                                session.give(Err(routed(pair, Reason::Invalid(InvalidReason::DuplicatePairId), Some(message))));
                            }
                        }
                    });
                }
            },
        );
        checked.ok_err(|r| r)
    }
}
