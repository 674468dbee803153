//! The shared readers of the jobs layer: preference pairs from any input curate accepts
//! (`pairs`) and evaluation sets with the measure of a model on them (`eval_sets`).
//! Jobs read through this module instead of borrowing another job's code: `score`,
//! `eval`, `fractions` and `stage1` all use it, and none of them imports another.

pub mod eval_sets;
pub mod pairs;

pub use eval_sets::{accuracy, load_eval_set, EvalModel, EvalSet, SetAccuracy};
pub use pairs::{input_schema, read_valid_pairs};
