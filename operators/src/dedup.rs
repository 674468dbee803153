//! `dedup`: exact deduplication on (x, y_w, y_l) (DESIGN §1), on the canonical key
//! (DESIGN §4: every input form normalised to one conversation + final replies,
//! whitespace collapsed; `hashing::canonical_pair_hash`) unless `--dedup-as-written`.
//! Pairs are exchanged by that key to the worker holding that part of the survey's
//! index; a pair that is not the first with its key (input order) is discarded as
//! `duplicate`.

use synpref_engine::hashing::content_key;
use synpref_engine::model::{PreferencePair, Reason};
use synpref_engine::output::OutputRow;

use crate::index_first::{keep_first, FirstIndex};
use crate::{routed, Rows};

pub trait Dedup<'scope> {
    fn dedup(
        self,
        content_index: FirstIndex,
    ) -> (Rows<'scope, PreferencePair>, Rows<'scope, OutputRow>);
}

impl<'scope> Dedup<'scope> for Rows<'scope, PreferencePair> {
    fn dedup(
        self,
        content_index: FirstIndex,
    ) -> (Rows<'scope, PreferencePair>, Rows<'scope, OutputRow>) {
        keep_first(
            self,
            "Dedup",
            content_index,
            |p| content_key(p.dedup_hash),
            |pair, first| {
                let message = format!(
                    "same conversation, chosen and rejected reply as the row with key {}",
                    first.0
                );
                routed(pair, Reason::Duplicate, Some(message))
            },
        )
    }
}
