//! `dedup`: exact deduplication on (x, y_w, y_l) (DESIGN §1). Pairs are exchanged by
//! content hash to the worker holding that part of the survey's index; a pair that is
//! not the first with its content is discarded as `duplicate`.

use std::rc::Rc;

use synpref_engine::hashing::content_key;
use synpref_engine::model::{PreferencePair, Reason};
use synpref_engine::output::OutputRow;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::Operator;

use crate::index_first::FirstIndex;
use crate::{routed, Rows};

pub trait Dedup<'scope> {
    fn dedup(self, content_index: FirstIndex) -> (Rows<'scope, PreferencePair>, Rows<'scope, OutputRow>);
}

impl<'scope> Dedup<'scope> for Rows<'scope, PreferencePair> {
    fn dedup(self, content_index: FirstIndex) -> (Rows<'scope, PreferencePair>, Rows<'scope, OutputRow>) {
        let index = Rc::clone(&content_index);
        let checked: Rows<'scope, Result<PreferencePair, OutputRow>> = self.unary(
            Exchange::new(|p: &PreferencePair| content_key(p.content_hash)),
            "Dedup",
            move |_, _| {
                move |input, output| {
                    let map = index.borrow();
                    input.for_each(|time, data| {
                        let mut session = output.session(&time);
                        for pair in data.drain(..) {
                            let first = map.first(content_key(pair.content_hash));
                            if first.is_none_or(|f| f == pair.key) {
                                session.give(Ok(pair));
                            } else {
                                let first = first.expect("checked");
                                let message = format!("same prompt, chosen and rejected as the row with key {}", first.0);
                                session.give(Err(routed(pair, Reason::Duplicate, Some(message))));
                            }
                        }
                    });
                }
            },
        );
        checked.ok_err(|r| r)
    }
}
