//! Training of the Bradley–Terry models a job needs, with its own settings types (no
//! job spec reaches in here): the best RM's cross-fitted folds over a pool sample
//! (`best`), the gold RM and the rules of which labels it learns from (`gold`), the
//! cross-fitted scorer over `models::FoldAssignment` (`folds`), and the self-measurement of a
//! run from held-out gold verdicts (`quality`).

pub mod best;
pub mod folds;
pub mod gold;
pub mod quality;

/// Salt of the held-out slice that chooses a checkpoint's epoch (any fixed value).
pub const SALT_HELDOUT: u64 = 0x5a17_0002;

/// Out-of-fold accuracy: hits (ties count half) over examples.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CvAccuracy {
    pub hits: f64,
    pub n: u64,
}

impl CvAccuracy {
    pub fn add(&mut self, hit: f64) {
        self.hits += hit;
        self.n += 1;
    }
    pub fn merge(&mut self, other: &CvAccuracy) {
        self.hits += other.hits;
        self.n += other.n;
    }
    pub fn value(&self) -> Option<f64> {
        (self.n > 0).then(|| self.hits / self.n as f64)
    }
}
