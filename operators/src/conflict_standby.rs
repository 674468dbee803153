//! `conflict_standby`: for `serve`, the copies of conflicting comparisons that `dedup`
//! routes away as `conflicting_labels` because another copy decides (or none can), so
//! that serve scores them too and can let one decide when a later label makes it the
//! deciding copy (DESIGN §4 `conflicting_labels`; issue 28 part 5).
//!
//! Those rows are the first row of an orientation whose swapped copy also occurs and
//! which is not the comparison's deciding row (`ConflictDeciders::standby_rows`, on
//! the worker owning the content key); later copies of an orientation are duplicates
//! either way and never decide. They are a few per cent of a pool at most, so their
//! row keys are gathered on every worker (`StandbyRows`) and `standby_copy` picks them
//! out where they are read, in serve's one tap over the valid pairs: no pair crosses
//! workers for it, and the valid stream gains no consumer (timely clones a stream's
//! batches for every extra consumer; an exchange of every pair to its content's owner
//! plus two more consumers measured 8–17% more peak memory in serve's first pass). The
//! rows are marked `conflict`, as the deciding row is. Serve sends them through the
//! main path's later stages (near-duplicates, unique pair ids, decontamination) before
//! scoring, so that it holds exactly the rows that would reach the rule were they the
//! deciding copy. Curate's output is untouched: these rows only feed serve's capture.
//! Not an operator: a function serve's tap applies to each valid pair.

use rustc_hash::FxHashMap;
use synpref_engine::model::{PreferencePair, RowKey};

/// Every standby row (row key → the pair key of the duplicate copy whose human label
/// it takes, `PreferencePair::adopted_label`), the same on every worker.
pub type StandbyRows = FxHashMap<RowKey, Option<u64>>;

/// The standby copy of `pair`, marked `conflict`, if it is one of `rows`.
pub fn standby_copy(pair: &PreferencePair, rows: &StandbyRows) -> Option<PreferencePair> {
    let adopted = *rows.get(&pair.key)?;
    let mut copy = pair.clone();
    copy.conflict = true;
    copy.adopted_label = adopted;
    Some(copy)
}
