//! Self-measurement of a run from its held-out gold verdicts (DESIGN §2 "Trust", §4
//! `quality`): the gold RM's cross-validated accuracy, the estimated accuracy of the
//! labels as read and as curate writes them for the pairs the models keep, and plain
//! warnings when a model is no better than chance.
//!
//! Gold verdicts are the only unbiased sample of the truth a run has. Each verdict pair
//! is judged as if it had no verdict: by the gold RM's fold model that never saw its
//! label, by the cross-fitted best RM, and by the judges; the rule's decision then says
//! whether the models alone would have kept it, and the verdict says whether the label
//! so kept is right. These are agreement with human verdicts (what the paper's Table 19
//! reports), and humans err too: with annotator error e and true label accuracy t, the
//! expected agreement is t(1 − e) + (1 − t)e.

use synpref_engine::model::{Reason, Verdict};
use synpref_engine::report::{Estimate, LabelAccuracy, ModelQuality, Quality};

use synpref_engine::hashing::pair_key;
use synpref_engine::model::GoldLabel;
use synpref_engine::side::JudgeVotes;

use super::CvAccuracy;
use crate::consistency_rule::{decide_with, RuleSettings};
use crate::models::builtin::hit;
use crate::models::builtin::{HashedBtModel, TrainExample};
use crate::models::sigmoid;
use crate::models::FoldAssignment;

/// Fewest verdicts behind an estimate before its width earns a warning: below 30 the
/// 95% interval of a share near 0.8 is wider than ±0.15 (Wilson), too wide to act on.
pub const FEW_VERDICTS: u64 = 30;

/// One decisive gold verdict, scored as if the pair had no verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct VerdictOutcome {
    /// The human prefers the reply the pair gives as chosen.
    pub human_agrees: bool,
    /// A pool pair (label accuracy counts only those; labels that carry their own text
    /// for a pair outside the pool only test the gold RM).
    pub in_pool: bool,
    /// r(chosen) − r(rejected) under the gold RM's fold model that did not learn it.
    pub m_gold: f32,
    /// The same under the (cross-fitted) best RM; pool pairs only.
    pub m_best: f32,
    /// The LLM judges' majority agrees with the pool label.
    pub judges_agree: bool,
    /// The pool row is an earlier pass's recorded human correction: the pool gives it
    /// swapped relative to the verdict, and curate decides it by that record, never by
    /// the models.
    pub recorded_correction: bool,
}

impl VerdictOutcome {
    pub fn new(
        verdict: Verdict,
        in_pool: bool,
        m_gold: f32,
        m_best: f32,
        judges: bool,
    ) -> Option<Self> {
        (verdict != Verdict::Undecidable).then_some(VerdictOutcome {
            human_agrees: verdict == Verdict::Chosen,
            in_pool,
            m_gold,
            m_best,
            judges_agree: judges,
            recorded_correction: false,
        })
    }
}

/// The outcome of one verdict under built-in models: `example` is the pair's unswapped
/// features (its pool row's, or its label's own text), judged by the gold RM's fold
/// model that did not learn it; `m_best` is the best RM's margin of a pool pair.
pub fn builtin_outcome(
    label: &GoldLabel,
    example: &TrainExample,
    in_pool: bool,
    m_best: f32,
    gold_folds: &[HashedBtModel],
    assignment: FoldAssignment,
    judges: Option<&JudgeVotes>,
) -> Option<VerdictOutcome> {
    let m_gold = gold_folds[assignment.fold_of(&label.pair_id)].margin(example);
    let agree = judges
        .and_then(|j| j.agree_key(pair_key(&label.pair_id)))
        .unwrap_or(false);
    VerdictOutcome::new(label.verdict, in_pool, m_gold, m_best, agree)
}

/// The quality of a run from its verdict outcomes, the best RM's out-of-fold accuracy
/// on its sample (default for a model that was not trained) and the gold RM's folds.
pub fn assess(
    outcomes: &[VerdictOutcome],
    rule: &RuleSettings,
    gold_folds: usize,
    best_rm: ModelQuality,
) -> Quality {
    let mut gold = CvAccuracy::default();
    let (mut input, mut curated) = (CvAccuracy::default(), CvAccuracy::default());
    let (mut kept, mut discarded) = (0u64, 0u64);
    for o in outcomes {
        gold.add(hit(if o.human_agrees { o.m_gold } else { -o.m_gold }));
        if !o.in_pool {
            continue;
        }
        // The label as the pool gives it (a recorded correction gives it swapped).
        let agrees = (o.human_agrees != o.recorded_correction) as u8 as f64;
        input.add(agrees);
        if o.recorded_correction {
            continue;
        }
        let (reason, _) = decide_with(
            rule,
            None,
            || o.judges_agree,
            sigmoid(o.m_best as f64),
            sigmoid(o.m_gold as f64),
        );
        if matches!(reason, Reason::BothRmsAgree | Reason::GoldRmAndJudgeAgree) {
            kept += 1;
            curated.add(agrees);
        } else {
            discarded += 1;
        }
    }

    let mut q = Quality {
        gold_rm: ModelQuality::from_counts(gold.hits, gold.n, gold_folds),
        best_rm,
        estimated_label_accuracy: LabelAccuracy {
            input: Estimate::from_counts(input.hits, input.n),
            model_curated: Estimate::from_counts(curated.hits, curated.n),
        },
        model_kept: kept,
        model_discarded: discarded,
        warnings: Vec::new(),
    };
    q.warnings = warnings(&q);
    q
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn interval(ci: Option<[f64; 2]>) -> String {
    match ci {
        Some([l, h]) => format!("95% CI {}–{}", pct(l), pct(h)),
        None => "no interval".into(),
    }
}

/// The plain sentences a user must read before trusting a run.
pub fn warnings(q: &Quality) -> Vec<String> {
    let mut w = Vec::new();
    let g = &q.gold_rm;
    match g.cv_accuracy {
        None => w.push(
            "No gold verdict could be used to test the gold RM (none is decisive and matches a pool pair or carries its text): its accuracy is unknown, and nothing shows that its filter is better than chance."
                .to_string(),
        ),
        Some(acc) if g.ci95.is_some_and(|[low, _]| low <= 0.5) => w.push(format!(
            "The gold RM is no better than chance: it agrees with {} of {} held-out gold verdicts ({}), an interval that reaches 50%. Its filter is noise: the pairs it keeps and drops are chosen no better than by a coin toss. Add gold labels or use a stronger gold RM (--gold-rm).",
            pct(acc),
            g.n,
            interval(g.ci95)
        )),
        Some(_) => {}
    }
    let b = &q.best_rm;
    if let Some(acc) = b.cv_accuracy {
        if b.ci95.is_some_and(|[low, _]| low <= 0.5) {
            w.push(format!(
                "The best RM is no better than chance: it agrees with {} of {} held-out pool labels ({}), an interval that reaches 50%. Its check adds nothing; the judges (--judges) or a stronger best RM (--best-rm) would.",
                pct(acc),
                b.n,
                interval(b.ci95)
            ));
        }
    }
    let (input, curated) = (
        &q.estimated_label_accuracy.input,
        &q.estimated_label_accuracy.model_curated,
    );
    if input.n == 0 {
        w.push("No gold verdict falls on a pool pair: the accuracy of the input and curated labels cannot be estimated.".into());
    } else if curated.n < FEW_VERDICTS {
        w.push(format!(
            "Only {} held-out gold verdicts fall on pairs the models keep: the estimate of the curated labels' accuracy ({}) is too wide to rely on.",
            curated.n,
            interval(curated.ci95)
        ));
    }
    if let (Some(i), Some([_, high])) = (input.value, curated.ci95) {
        if high < i {
            w.push(format!(
                "The labels the models keep agree with human verdicts less often ({}) than the input labels do ({}): curation by these models makes the data worse.",
                pct(curated.value.unwrap_or(0.0)),
                pct(i)
            ));
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(agrees: bool, m_gold: f32, m_best: f32) -> VerdictOutcome {
        VerdictOutcome {
            human_agrees: agrees,
            in_pool: true,
            m_gold,
            m_best,
            judges_agree: false,
            recorded_correction: false,
        }
    }

    /// A recorded correction is given swapped by the pool (so a "rejected" verdict
    /// agrees with it) and is never the models' to keep.
    #[test]
    fn recorded_corrections_count_as_given_and_are_not_model_decisions() {
        let rule = RuleSettings {
            threshold: 0.5,
            emit_flipped: false,
        };
        let corrected = VerdictOutcome {
            recorded_correction: true,
            ..o(false, 2.0, 2.0)
        };
        let q = assess(
            &[corrected, o(true, 2.0, 2.0)],
            &rule,
            5,
            ModelQuality::default(),
        );
        assert_eq!(q.estimated_label_accuracy.input.value, Some(1.0));
        assert_eq!(q.estimated_label_accuracy.input.n, 2);
        assert_eq!(q.estimated_label_accuracy.model_curated.n, 1);
    }

    #[test]
    fn counts_follow_the_rule_and_the_verdicts() {
        let rule = RuleSettings {
            threshold: 0.5,
            emit_flipped: false,
        };
        let outcomes = vec![
            o(true, 1.0, 1.0),   // kept, right; gold right
            o(false, 1.0, 1.0),  // kept, wrong; gold wrong
            o(true, -1.0, 1.0),  // discarded by gold; gold wrong
            o(false, -1.0, 1.0), // discarded; gold right
            o(true, 1.0, -1.0),  // discarded by best (no judges); gold right
        ];
        let q = assess(&outcomes, &rule, 5, ModelQuality::default());
        assert_eq!(q.gold_rm.n, 5);
        assert_eq!(q.gold_rm.cv_accuracy, Some(3.0 / 5.0));
        assert_eq!(q.estimated_label_accuracy.input.value, Some(3.0 / 5.0));
        assert_eq!(q.estimated_label_accuracy.model_curated.n, 2);
        assert_eq!(q.estimated_label_accuracy.model_curated.value, Some(0.5));
        assert_eq!((q.model_kept, q.model_discarded), (2, 3));
        // n = 5 at 60%: the interval reaches 50%, so the gold RM gets its warning.
        assert!(q
            .warnings
            .iter()
            .any(|w| w.contains("gold RM is no better than chance")));
    }

    #[test]
    fn a_good_gold_rm_gets_no_chance_warning() {
        let rule = RuleSettings {
            threshold: 0.5,
            emit_flipped: false,
        };
        let outcomes: Vec<_> = (0..400).map(|i| o(i % 10 != 0, 2.0, 2.0)).collect();
        let q = assess(&outcomes, &rule, 5, ModelQuality::default());
        assert!(q.gold_rm.ci95.unwrap()[0] > 0.5);
        assert!(
            !q.warnings
                .iter()
                .any(|w| w.contains("no better than chance")),
            "{:?}",
            q.warnings
        );
    }
}
