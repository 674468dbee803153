//! `consistency_rule`: the Stage-2 decision of DESIGN §1 for every scored pair.
//!
//! - a human verdict decides: agrees → keep (`human_agrees`); prefers the rejected reply
//!   → keep with chosen/rejected swapped (`human_corrected`); undecidable → discard;
//! - otherwise KEEP iff p_gold > τ AND (p_best > τ OR the LLM judges agree), the judges
//!   consulted only when p_best ≤ τ, and "no" without judges;
//! - the copy of a conflicting comparison that judges decide (`PreferencePair::conflict`)
//!   skips the best RM: KEEP iff p_gold > τ AND the judges agree;
//! - with `emit_flipped`, pairs discarded by the RMs are written with chosen and rejected
//!   swapped, as the paper's 40M training mix did.
//!
//! `p_best`/`p_gold` in the output refer to the row as written: swapped rows carry 1 − p.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use synpref_engine::model::{PreferencePair, Reason, Verdict};
use synpref_engine::output::OutputRow;
use synpref_engine::side::{GoldLabels, JudgeVotes};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::score::ScoredPair;
use crate::{routed, Rows};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleSettings {
    /// τ of the consistency rule (paper default 0.5).
    pub threshold: f64,
    pub emit_flipped: bool,
}

/// What the rule consults besides the scores.
pub struct RuleInputs {
    pub settings: RuleSettings,
    pub gold: Arc<GoldLabels>,
    pub judges: Option<Arc<JudgeVotes>>,
}

/// (reason, swap) for one pair. Its human verdict is its own label, else the label of
/// the duplicate copy it takes (`PreferencePair::adopted_label`). A pair an earlier
/// pass corrected (`corrected`) or kept for an agreeing verdict (`agreed`) keeps that
/// recorded verdict where the gold labels have none. The copy of a conflicting comparison that judges decide
/// (`conflict`, no human verdict) goes to the judges whatever p_best says: the best RM
/// may have learned either label.
pub fn decide(
    inputs: &RuleInputs,
    pair: &PreferencePair,
    p_best: f64,
    p_gold: f64,
) -> (Reason, bool) {
    let p_best_for_rule = if pair.conflict { 0.0 } else { p_best };
    let labels = &inputs.gold.labels;
    let verdict = labels
        .get(&pair.pair_key)
        .or_else(|| pair.adopted_label.and_then(|k| labels.get(&k)))
        .map(|l| l.verdict)
        .or(pair.corrected.then_some(Verdict::Rejected))
        .or(pair.agreed.then_some(Verdict::Chosen));
    decide_with(
        &inputs.settings,
        verdict,
        || {
            inputs
                .judges
                .as_ref()
                .and_then(|j| j.agree_key(pair.pair_key))
                .unwrap_or(false)
        },
        p_best_for_rule,
        p_gold,
    )
}

/// The rule itself, from the pair's human verdict (if any), whether the LLM judges
/// agree with its label (asked only when needed), and the two probabilities. `curate`
/// and `serve` both decide through this one function.
pub fn decide_with(
    settings: &RuleSettings,
    verdict: Option<Verdict>,
    judges_agree: impl FnOnce() -> bool,
    p_best: f64,
    p_gold: f64,
) -> (Reason, bool) {
    let tau = settings.threshold;
    if let Some(verdict) = verdict {
        return match verdict {
            Verdict::Chosen => (Reason::HumanAgrees, false),
            Verdict::Rejected => (Reason::HumanCorrected, true),
            Verdict::Undecidable => (Reason::HumanUndecidable, false),
        };
    }
    let flip = settings.emit_flipped;
    if p_gold <= tau {
        return (Reason::GoldRmDisagrees, flip);
    }
    if p_best > tau {
        return (Reason::BothRmsAgree, false);
    }
    if judges_agree() {
        (Reason::GoldRmAndJudgeAgree, false)
    } else {
        (Reason::BestRmAndJudgeDisagree, flip)
    }
}

/// The output row of a scored pair under its decision: swapped rows carry 1 − p.
pub fn decided_row(
    pair: PreferencePair,
    reason: Reason,
    swap: bool,
    p_best: f64,
    p_gold: f64,
) -> OutputRow {
    let mut row = routed(pair, reason, None);
    if swap {
        std::mem::swap(&mut row.chosen, &mut row.rejected);
        row.swapped = true;
        row.p_best = Some(1.0 - p_best);
        row.p_gold = Some(1.0 - p_gold);
    } else {
        row.p_best = Some(p_best);
        row.p_gold = Some(p_gold);
    }
    row
}

pub trait ConsistencyRule<'scope> {
    fn consistency_rule(self, inputs: Arc<RuleInputs>) -> Rows<'scope, OutputRow>;
}

impl<'scope> ConsistencyRule<'scope> for Rows<'scope, ScoredPair> {
    fn consistency_rule(self, inputs: Arc<RuleInputs>) -> Rows<'scope, OutputRow> {
        self.unary(Pipeline, "ConsistencyRule", move |_, _| {
            move |input, output| {
                input.for_each(|time, data| {
                    let mut session = output.session(&time);
                    for s in data.drain(..) {
                        let (p_best, p_gold) = (s.p_best(), s.p_gold());
                        let (reason, swap) = decide(&inputs, &s.pair, p_best, p_gold);
                        session.give(decided_row(s.pair, reason, swap, p_best, p_gold));
                    }
                });
            }
        })
    }
}
