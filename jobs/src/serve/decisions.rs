//! Serve's decisions, kept per shard: the lean alternative to differential
//! dataflow's `decide_incrementally` reduce (issue 12: "or a leaner keyed operator if
//! its arrangements cost too much memory: measure").
//!
//! Every input of a pair's decision is on the worker that owns the pair: its margins
//! and correction flag in the shard, the verdict in the labels and copies
//! (`aliases`) every worker holds. So
//! the shard keeps one decision per pair, aligned with its sorted keys, and after an
//! epoch re-decides only the pairs whose margins or verdict changed, with the same
//! function the reduce applies (`decide_pair`), emitting a −1 for the old and a +1 for
//! the new decision where they differ: the reduce's output, without its arrangements
//! (which hold every fact and decision with its time and diff). docs/benchmarks.md has
//! the memory of both.

use serde::{Deserialize, Serialize};
use synpref_engine::side::JudgeVotes;
use synpref_operators::consistency_rule::RuleSettings;
use synpref_operators::decide_incrementally::{decide_pair, Decided, Epoch, PairFact, RowFlags};

use super::state::PoolState;

/// How serve keeps its decisions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DecisionEngine {
    /// One decision per pair in each shard (`ShardDecisions`).
    #[default]
    Shard,
    /// differential dataflow's `decide_incrementally` reduce over the facts.
    Differential,
}

impl std::fmt::Display for DecisionEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        synpref_engine::output::value_name(self, f)
    }
}

#[cfg(test)]
#[test]
fn decision_engine_has_one_name_for_clap_serde_and_display() {
    use clap::ValueEnum;
    let names: Vec<String> = DecisionEngine::value_variants()
        .iter()
        .map(|v| {
            assert_eq!(
                serde_json::to_value(v).unwrap().as_str(),
                Some(v.to_string().as_str())
            );
            v.to_string()
        })
        .collect();
    assert_eq!(names.join(" "), "shard differential");
}

/// One changed decision: (pair key, decision, epoch, +1/−1).
pub type Change = (u64, Decided, Epoch, isize);

/// The decision of every pair of one shard, by position in its sorted keys.
pub struct ShardDecisions {
    decided: Vec<Decided>,
}

fn decide_at(
    state: &PoolState,
    i: usize,
    settings: &RuleSettings,
    judges: Option<&JudgeVotes>,
) -> Decided {
    let key = state.keys[i];
    decide_pair(
        settings,
        judges,
        key,
        state.m_best[i].to_bits(),
        state.m_gold[i].to_bits(),
        state.verdict_of(key),
        RowFlags {
            corrected: state.corrected.binary_search(&key).is_ok(),
            agreed: state.agreed.binary_search(&key).is_ok(),
            conflict: state.is_conflict(key),
            outvoted: state.outvoted(key),
        },
    )
}

impl ShardDecisions {
    /// Decides every pair of the shard.
    pub fn new(state: &PoolState, settings: &RuleSettings, judges: Option<&JudgeVotes>) -> Self {
        ShardDecisions {
            decided: (0..state.keys.len())
                .map(|i| decide_at(state, i, settings, judges))
                .collect(),
        }
    }

    /// Re-decides the pairs an epoch's fact updates touch (facts of keys outside the
    /// shard are ignored); returns the changed decisions.
    pub fn update(
        &mut self,
        state: &PoolState,
        updates: &[((u64, PairFact), isize)],
        settings: &RuleSettings,
        judges: Option<&JudgeVotes>,
        epoch: Epoch,
    ) -> Vec<Change> {
        let mut touched: Vec<usize> = updates
            .iter()
            .filter_map(|((key, _), _)| state.find(*key))
            .collect();
        touched.sort_unstable();
        touched.dedup();
        let mut changes = Vec::new();
        for i in touched {
            let new = decide_at(state, i, settings, judges);
            let old = std::mem::replace(&mut self.decided[i], new);
            if old != new {
                changes.push((state.keys[i], old, epoch, -1));
                changes.push((state.keys[i], new, epoch, 1));
            }
        }
        changes
    }

    pub fn bytes(&self) -> usize {
        self.decided.capacity() * std::mem::size_of::<Decided>()
    }
}
