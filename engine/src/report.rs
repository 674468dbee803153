//! Typed reports that jobs write and read back: the self-measured quality of a run
//! (DESIGN §4, `quality.*`; names fixed) and the interval it is stated with.

use serde::{Deserialize, Serialize};

/// z of a two-sided 95% normal interval.
const Z95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval (Wilson 1927) at 95% for `hits` successes of `n`: unlike
/// the normal ("Wald") interval it stays inside [0, 1] and keeps its coverage for small
/// n and shares near 0 or 1 (Brown, Cai & DasGupta 2001, "Interval estimation for a
/// binomial proportion", who recommend it for n < 40 and as a default beyond). `hits`
/// may be fractional (a tie counts half).
pub fn wilson95(hits: f64, n: u64) -> Option<[f64; 2]> {
    if n == 0 {
        return None;
    }
    let n = n as f64;
    let p = (hits / n).clamp(0.0, 1.0);
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some([(centre - half).max(0.0), (centre + half).min(1.0)])
}

/// A share measured on a sample, with its 95% Wilson interval (`null`s when n = 0).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: Option<f64>,
    pub ci95: Option<[f64; 2]>,
    pub n: u64,
}

impl Estimate {
    pub fn from_counts(hits: f64, n: u64) -> Estimate {
        Estimate {
            value: (n > 0).then(|| hits / n as f64),
            ci95: wilson95(hits, n),
            n,
        }
    }

    /// Whether the interval reaches down to chance (0.5), i.e. the figure is not shown
    /// to be better than a coin toss. False when nothing was measured.
    pub fn reaches_chance(&self) -> bool {
        self.ci95.is_some_and(|[low, _]| low <= 0.5)
    }
}

/// A model's accuracy on labels it was not trained on: the gold RM's on gold verdicts
/// (K-fold cross-validation), the best RM's on the pool labels of its sample
/// (out-of-fold over its cross-fitting folds).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelQuality {
    /// Out-of-fold accuracy, ties counting half; `null` when nothing could be scored.
    pub cv_accuracy: Option<f64>,
    pub ci95: Option<[f64; 2]>,
    /// Labels used (undecidable verdicts excluded).
    pub n: u64,
    /// Folds (1: a model never trained on these labels, e.g. `hf:`).
    pub folds: usize,
}

impl ModelQuality {
    pub fn from_counts(hits: f64, n: u64, folds: usize) -> ModelQuality {
        let e = Estimate::from_counts(hits, n);
        ModelQuality {
            cv_accuracy: e.value,
            ci95: e.ci95,
            n,
            folds,
        }
    }

    /// The same figure as an `Estimate`.
    pub fn estimate(&self) -> Estimate {
        Estimate {
            value: self.cv_accuracy,
            ci95: self.ci95,
            n: self.n,
        }
    }
}

/// Estimated label accuracy (agreement with held-out human verdicts).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelAccuracy {
    /// The labels as the pool gives them, over every pool pair with a decisive verdict.
    pub input: Estimate,
    /// The labels as curate writes them, over the verdict pairs that the consistency
    /// rule, applied with out-of-fold models as if the pair had no verdict, keeps.
    pub model_curated: Estimate,
}

/// How good a run's models and output are, measured from its own gold verdicts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub gold_rm: ModelQuality,
    pub best_rm: ModelQuality,
    pub estimated_label_accuracy: LabelAccuracy,
    /// Model-kept verdict pairs per rule outcome (both_rms_agree, gold_rm_and_judge_agree)
    /// and the verdict pairs the rule would discard.
    pub model_kept: u64,
    pub model_discarded: u64,
    /// Plain sentences: what a user must know before trusting the output.
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_the_published_values() {
        // Brown, Cai & DasGupta (2001), and any statistics package: 8 of 10 gives
        // 0.4902 – 0.9433 at 95%.
        let [low, high] = wilson95(8.0, 10).unwrap();
        assert!(
            (low - 0.4902).abs() < 1e-4 && (high - 0.9433).abs() < 1e-4,
            "{low} {high}"
        );
        // It stays inside [0, 1] at the edges, where the normal interval does not.
        let [low, high] = wilson95(10.0, 10).unwrap();
        assert!(low > 0.69 && low < 0.73 && high > 0.999_999, "{low} {high}");
        assert_eq!(wilson95(0.0, 0), None);
        let e = Estimate::from_counts(8.0, 10);
        assert!(e.reaches_chance());
        assert!(!Estimate::from_counts(900.0, 1000).reaches_chance());
    }
}
