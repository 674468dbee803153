//! Gold labels and judge votes that name no pair of the pool (issue 30 item 5): a typo
//! in an id column would otherwise lose a person's work without a trace. After the
//! survey every worker holds the pair ids of its share of the valid rows (the pair
//! index); each marks which labels and votes it holds, the marks are gathered and
//! combined, and what no worker marked is unmatched. A gold label that carries its
//! pair's text is not counted: it trains the gold RM whether or not the pool has it.

use serde::{Deserialize, Serialize};
use synpref_engine::collective::all_gather;
use synpref_engine::Result;
use synpref_operators::index_first::FirstIndex;
use timely::worker::Worker;

use super::plan::CuratePlan;

/// How many unmatched ids the report names.
pub const NAMED_IDS: usize = 5;

/// What matched no valid pool row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Unmatched {
    /// Distinct pair ids with a gold label (without text) that no valid row has.
    pub gold_labels: u64,
    /// The first of them, in the order the labels were read.
    pub gold_label_ids: Vec<String>,
    /// Distinct pair ids with judge votes that no valid row has.
    pub judge_votes: u64,
}

/// Marks `keys` (sorted) that this worker's pair index holds, as a bitmap.
fn marks(keys: &[u64], index: &FirstIndex) -> Vec<u64> {
    let index = index.borrow();
    let mut bits = vec![0u64; keys.len().div_ceil(64)];
    for (i, key) in keys.iter().enumerate() {
        if index.first(*key).is_some() {
            bits[i / 64] |= 1 << (i % 64);
        }
    }
    bits
}

/// The keys no worker marked.
fn unmarked(worker: &mut Worker, keys: &[u64], index: &FirstIndex) -> Result<Vec<u64>> {
    let all = all_gather(worker, &marks(keys, index))?;
    Ok(keys
        .iter()
        .enumerate()
        .filter(|(i, _)| all.iter().all(|bits| bits[i / 64] & (1 << (i % 64)) == 0))
        .map(|(_, k)| *k)
        .collect())
}

/// Counts, on every worker, the gold labels and judge votes no valid pool row matches.
pub fn find(worker: &mut Worker, plan: &CuratePlan, pair_index: &FirstIndex) -> Result<Unmatched> {
    let mut label_keys: Vec<u64> = plan
        .gold
        .labels
        .iter()
        .filter(|(_, l)| l.text.is_none())
        .map(|(k, _)| *k)
        .collect();
    label_keys.sort_unstable();
    let lost = unmarked(worker, &label_keys, pair_index)?;
    let mut vote_keys: Vec<u64> = plan
        .judges
        .as_ref()
        .map(|j| j.votes.keys().copied().collect())
        .unwrap_or_default();
    vote_keys.sort_unstable();
    let lost_votes = unmarked(worker, &vote_keys, pair_index)?;
    let lost_set: rustc_hash::FxHashSet<u64> = lost.iter().copied().collect();
    let mut named: Vec<String> = Vec::new();
    for l in &plan.gold.stream {
        if named.len() == NAMED_IDS {
            break;
        }
        let key = synpref_engine::hashing::pair_key(&l.pair_id);
        if lost_set.contains(&key) && !named.contains(&l.pair_id) {
            named.push(l.pair_id.clone());
        }
    }
    Ok(Unmatched {
        gold_labels: lost.len() as u64,
        gold_label_ids: named,
        judge_votes: lost_votes.len() as u64,
    })
}

/// The warning printed on standard error when anything is unmatched.
pub fn warning(u: &Unmatched, job: &str) -> Option<String> {
    if u.gold_labels == 0 && u.judge_votes == 0 {
        return None;
    }
    let mut parts = Vec::new();
    if u.gold_labels > 0 {
        parts.push(format!(
            "{} gold-labelled pair ids match no valid pair of the pool (first: {})",
            u.gold_labels,
            u.gold_label_ids.join(", ")
        ));
    }
    if u.judge_votes > 0 {
        parts.push(format!(
            "{} pair ids with judge votes match no valid pair of the pool",
            u.judge_votes
        ));
    }
    Some(format!(
        "synpref {job}: warning: {}; those labels decide nothing (check the pair_id column)",
        parts.join("; ")
    ))
}
