//! `decide_incrementally`: the consistency rule of DESIGN §1 as a differential-dataflow
//! `reduce`, for `serve`.
//!
//! Its input is a collection of facts per pool pair (keyed by pair key): the pair's two
//! margins (best and gold RM) and the human verdict in force, if any. New labels and
//! re-scored pairs arrive as updates to that collection (the old fact retracted, the
//! new one asserted) at the epoch of the label batch; the output is the collection of
//! decisions, and differential dataflow emits, per epoch, only the decisions that
//! changed (a −1 for the old, a +1 for the new): serve's changelog. A re-scored pair
//! whose decision stays the same produces no output.
//!
//! The rule itself is `consistency_rule::decide_with`, the function `curate` uses, so
//! the two jobs cannot disagree on a decision given the same facts.

use std::sync::Arc;

use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use synpref_engine::model::{Reason, Verdict};
use synpref_engine::side::JudgeVotes;

use crate::consistency_rule::{decide_with, RuleSettings};
use crate::models::sigmoid;

/// Epochs: label batches, numbered from 0 (the state serve starts from).
pub type Epoch = u64;

/// A fact about one pool pair that its decision depends on and that can change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PairFact {
    /// The pair's margins r(y_w) − r(y_l) under the best and the gold RM (f32 bits, so
    /// that facts are totally ordered and compare exactly).
    Margins { best: u32, gold: u32 },
    /// The human verdict in force for the pair.
    Verdict(Verdict),
    /// The pool row is an earlier pass's human correction: without a verdict in force,
    /// the recorded correction is the verdict (as `consistency_rule::decide`).
    Corrected,
    /// The pool row is an earlier pass's human agreement: likewise, a `chosen` verdict.
    Agreed,
    /// The pair is a copy of a comparison that also occurs swapped (`dedup`,
    /// `PreferencePair::conflict`): the rule does not take the best RM's word for it.
    Conflict,
    /// The pair is such a copy and another copy decides the comparison, or none can
    /// (no human verdict or judge votes on any): it is `conflicting_labels`.
    Outvoted,
}

/// The decision for one pool pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Decided {
    pub reason: Reason,
    /// Chosen and rejected are swapped on output.
    pub swap: bool,
}

pub type Facts<'scope> = VecCollection<'scope, Epoch, (u64, PairFact), isize>;
pub type Decisions<'scope> = VecCollection<'scope, Epoch, (u64, Decided), isize>;

pub trait DecideIncrementally<'scope> {
    fn decide_incrementally(
        self,
        settings: RuleSettings,
        judges: Option<Arc<JudgeVotes>>,
    ) -> Decisions<'scope>;
}

impl<'scope> DecideIncrementally<'scope> for Facts<'scope> {
    fn decide_incrementally(
        self,
        settings: RuleSettings,
        judges: Option<Arc<JudgeVotes>>,
    ) -> Decisions<'scope> {
        self.reduce_named("DecideIncrementally", move |key, facts, out| {
            let mut margins = None;
            let mut verdict = None;
            let mut row = RowFlags::default();
            for (fact, count) in facts {
                if *count <= 0 {
                    continue;
                }
                match fact {
                    PairFact::Margins { best, gold } => margins = Some((*best, *gold)),
                    PairFact::Verdict(v) => verdict = Some(*v),
                    PairFact::Corrected => row.corrected = true,
                    PairFact::Agreed => row.agreed = true,
                    PairFact::Conflict => row.conflict = true,
                    PairFact::Outvoted => row.outvoted = true,
                }
            }
            // Labels for pairs outside the pool have no margins: nothing to decide.
            if let Some((best, gold)) = margins {
                let decided =
                    decide_pair(&settings, judges.as_deref(), *key, best, gold, verdict, row);
                out.push((decided, 1));
            }
        })
    }
}

/// What a pool row itself says about its decision, besides margins and verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowFlags {
    /// An earlier pass's recorded human correction (`PairFact::Corrected`).
    pub corrected: bool,
    /// An earlier pass's recorded human agreement (`PairFact::Agreed`).
    pub agreed: bool,
    /// A copy of a conflicting comparison (`PairFact::Conflict`).
    pub conflict: bool,
    /// Not the copy that decides it (`PairFact::Outvoted`).
    pub outvoted: bool,
}

/// The decision for one pool pair from its facts: margins as f32 bits, the verdict in
/// force, whether the row is a recorded correction (which stands for a `rejected`
/// verdict while none is in force) or a conflict's deciding row. The one function both `decide_incrementally` and
/// serve's per-shard decisions apply.
pub fn decide_pair(
    settings: &RuleSettings,
    judges: Option<&JudgeVotes>,
    key: u64,
    best: u32,
    gold: u32,
    verdict: Option<Verdict>,
    row: RowFlags,
) -> Decided {
    if row.outvoted {
        return Decided {
            reason: Reason::ConflictingLabels,
            swap: false,
        };
    }
    let (corrected, conflict) = (row.corrected, row.conflict);
    let verdict = verdict
        .or(corrected.then_some(Verdict::Rejected))
        .or(row.agreed.then_some(Verdict::Chosen));
    // As `consistency_rule::decide`: a conflict's deciding row gets no word from the
    // best RM, which learned whichever copy it saw.
    let (p_best, p_gold) = (
        if conflict {
            0.0
        } else {
            sigmoid(f32::from_bits(best) as f64)
        },
        sigmoid(f32::from_bits(gold) as f64),
    );
    let judges_agree = || judges.and_then(|j| j.agree_key(key)).unwrap_or(false);
    let (reason, swap) = decide_with(settings, verdict, judges_agree, p_best, p_gold);
    Decided { reason, swap }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A conflict's deciding row is decided as curate's rule decides it: the best RM's
    /// margin counts as p = 0, so models that both agree send it to the judges.
    #[test]
    fn a_conflicts_deciding_row_gets_no_word_from_the_best_rm() {
        let settings = RuleSettings {
            threshold: 0.5,
            emit_flipped: false,
        };
        let (best, gold) = (2.0f32.to_bits(), 2.0f32.to_bits());
        let plain = decide_pair(&settings, None, 1, best, gold, None, RowFlags::default());
        assert_eq!(plain.reason, Reason::BothRmsAgree);
        let conflict = RowFlags {
            conflict: true,
            ..RowFlags::default()
        };
        let decided = decide_pair(&settings, None, 1, best, gold, None, conflict);
        let (reason, swap) =
            crate::consistency_rule::decide_with(&settings, None, || false, 0.0, sigmoid(2.0));
        assert_eq!((decided.reason, decided.swap), (reason, swap));
        assert_eq!(decided.reason, Reason::BestRmAndJudgeDisagree);
        // Another copy decides: whatever the verdict, this one is conflicting_labels.
        let outvoted = RowFlags {
            outvoted: true,
            ..conflict
        };
        let decided = decide_pair(
            &settings,
            None,
            1,
            best,
            gold,
            Some(Verdict::Chosen),
            outvoted,
        );
        assert_eq!(decided.reason, Reason::ConflictingLabels);
    }
    use differential_dataflow::input::Input;
    use std::sync::Mutex;

    /// A pool row recorded as a human correction keeps its correction while no verdict
    /// is in force, whatever the models say, and a later verdict overrides it: the same
    /// decisions as `consistency_rule::decide` for curate.
    #[test]
    fn a_recorded_correction_stands_for_the_verdict_until_one_arrives() {
        let got: Arc<Mutex<Vec<(u64, Decided, Epoch, isize)>>> = Arc::default();
        let sink = got.clone();
        timely::execute_directly(move |worker| {
            let sink = sink.clone();
            let (mut input, probe) = worker.dataflow::<Epoch, _, _>(|scope| {
                let (input, facts) = scope.new_collection::<(u64, PairFact), isize>();
                let probe = facts
                    .decide_incrementally(
                        RuleSettings {
                            threshold: 0.5,
                            emit_flipped: false,
                        },
                        None,
                    )
                    .inspect(move |((k, d), t, r)| sink.lock().unwrap().push((*k, *d, *t, *r)))
                    .probe();
                (input, probe.0)
            });
            // Both models agree with the row as held (positive margins).
            let margins = PairFact::Margins {
                best: 2.0f32.to_bits(),
                gold: 2.0f32.to_bits(),
            };
            input.insert((1, margins));
            input.insert((1, PairFact::Corrected));
            input.insert((2, margins));
            input.advance_to(1);
            input.insert((1, PairFact::Verdict(Verdict::Chosen)));
            input.advance_to(2);
            input.flush();
            while probe.less_than(&2) {
                worker.step();
            }
        });
        let mut got = got.lock().unwrap().clone();
        got.sort();
        let decided = |reason, swap| Decided { reason, swap };
        assert_eq!(
            got,
            vec![
                (1, decided(Reason::HumanAgrees, false), 1, 1),
                (1, decided(Reason::HumanCorrected, true), 0, 1),
                (1, decided(Reason::HumanCorrected, true), 1, -1),
                (2, decided(Reason::BothRmsAgree, false), 0, 1),
            ]
        );
    }
}
