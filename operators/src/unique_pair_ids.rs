//! `unique_pair_ids`: exchanges pairs by pair id (the key every later stage joins on:
//! gold labels, judge votes, scores) and quarantines a row that reuses the pair id of an
//! earlier row with different content (`invalid_duplicate_pair_id`): a gold label for
//! that id could not say which pair it meant.

use synpref_engine::model::{InvalidReason, PreferencePair, Reason};
use synpref_engine::output::OutputRow;

use crate::index_first::{keep_first, FirstIndex};
use crate::{routed, Rows};

pub trait UniquePairIds<'scope> {
    fn unique_pair_ids(
        self,
        pair_index: FirstIndex,
    ) -> (Rows<'scope, PreferencePair>, Rows<'scope, OutputRow>);
}

impl<'scope> UniquePairIds<'scope> for Rows<'scope, PreferencePair> {
    fn unique_pair_ids(
        self,
        pair_index: FirstIndex,
    ) -> (Rows<'scope, PreferencePair>, Rows<'scope, OutputRow>) {
        keep_first(
            self,
            "UniquePairIds",
            pair_index,
            |p| p.pair_key,
            |pair, _first| {
                let message = format!(
                    "pair_id `{}` is already used by an earlier row with other content",
                    pair.pair_id
                );
                routed(
                    pair,
                    Reason::Invalid(InvalidReason::DuplicatePairId),
                    Some(message),
                )
            },
        )
    }
}
