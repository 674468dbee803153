//! Measures how many pairs serve's margin bound would re-score after one epoch of
//! 1, 100 or 1,000 labels, against how many margins really cross the threshold, and
//! what splitting the features into common ones (bounded by Cauchy–Schwarz) and rare
//! ones (an exact index from features to pairs, re-scored outright) would change.
//! Analysis for docs/benchmarks.md ("A common/rare feature split, probed"), not part
//! of serve:
//!   cargo run --release -p synpref-jobs --example margin_bound_probe -- DIR [CUTOFFS]
//! DIR is a `synpref gen` output (pairs/, gold.parquet, truth.parquet); CUTOFFS the
//! document frequencies at or below which a feature counts as rare (default
//! 10,100,1000,10000). The gold RM is trained online on gold.parquet as serve's first
//! epoch does, then batches of random truth labels follow (three epochs per size);
//! τ = 0.5, so the threshold logit is 0.
use std::collections::HashMap;

use arrow::array::{Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use synpref_operators::models::builtin::{OnlineTrainer, TrainExample, TrainSettings};
use synpref_operators::models::features::{category_hash, response_features, SparseFeatures};
use synpref_operators::models::margin_bound::MARGIN_ROUNDING;

fn string_columns(path: &str, names: &[&str]) -> Vec<Vec<String>> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut rows = vec![];
    for batch in ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
    {
        let batch = batch.unwrap();
        let cols: Vec<&StringArray> = names
            .iter()
            .map(|n| {
                let c = batch
                    .column_by_name(n)
                    .unwrap_or_else(|| panic!("{path}: no `{n}`"));
                c.as_any()
                    .downcast_ref::<StringArray>()
                    .expect("a string column")
            })
            .collect();
        for i in 0..batch.num_rows() {
            rows.push(cols.iter().map(|c| c.value(i).to_string()).collect());
        }
    }
    rows
}

/// d = φ(chosen) − φ(rejected) as (index, value), zeros dropped.
fn difference(e: &TrainExample) -> Vec<(u32, f32)> {
    let mut d: HashMap<u32, f32> = HashMap::new();
    e.winner
        .indices
        .iter()
        .for_each(|&i| *d.entry(i).or_default() += e.winner.value);
    e.loser
        .indices
        .iter()
        .for_each(|&i| *d.entry(i).or_default() -= e.loser.value);
    d.into_iter().filter(|(_, x)| *x != 0.0).collect()
}

fn oriented(e: &TrainExample, chosen_wins: bool) -> TrainExample {
    if chosen_wins {
        return e.clone();
    }
    TrainExample {
        pair_id: e.pair_id.clone(),
        winner: e.loser.clone(),
        loser: e.winner.clone(),
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: margin_bound_probe DIR [CUTOFFS]");
    let cutoffs: Vec<u32> = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "10,100,1000,10000".into())
        .split(',')
        .map(|s| s.parse().expect("a cutoff"))
        .collect();
    let settings = TrainSettings::default();
    let bits = settings.feature_bits;
    let mut parts: Vec<_> = std::fs::read_dir(format!("{dir}/pairs"))
        .expect("DIR/pairs")
        .map(|e| e.unwrap().path())
        .collect();
    parts.sort();
    let (mut examples, mut at) = (vec![], HashMap::new());
    for part in parts {
        let path = part.to_str().unwrap();
        for r in string_columns(path, &["pair_id", "chosen", "rejected", "task_category"]) {
            let category = category_hash(Some(&r[3]));
            let (mut c, mut j) = (SparseFeatures::default(), SparseFeatures::default());
            response_features(&r[1], category, bits, &mut c);
            response_features(&r[2], category, bits, &mut j);
            at.insert(r[0].clone(), examples.len());
            examples.push(TrainExample {
                pair_id: r[0].clone(),
                winner: c,
                loser: j,
            });
        }
    }
    let n = examples.len();
    let diffs: Vec<Vec<(u32, f32)>> = examples.iter().map(difference).collect();
    let mut df = vec![0u32; 1 << bits];
    diffs
        .iter()
        .flatten()
        .for_each(|(i, _)| df[*i as usize] += 1);
    let nnz: usize = diffs.iter().map(Vec::len).sum();
    println!(
        "{n} pairs, {:.1} non-zero features per difference",
        nnz as f64 / n as f64
    );
    let mut trainer = OnlineTrainer::new(&settings);
    for g in string_columns(&format!("{dir}/gold.parquet"), &["pair_id", "verdict"]) {
        if let (Some(&k), "chosen" | "rejected") = (at.get(&g[0]), g[1].as_str()) {
            trainer.step(&oriented(&examples[k], g[1] == "chosen"));
        }
    }
    let truth = string_columns(&format!("{dir}/truth.parquet"), &["pair_id", "preference"]);
    let mut seed: u64 = 12345;
    for batch in [1usize, 100, 1000] {
        for epoch in 0..3 {
            let before = trainer.model().weights.clone();
            for _ in 0..batch {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let t = &truth[(seed >> 33) as usize % truth.len()];
                trainer.step(&oriented(&examples[at[&t[0]]], t[1] == "chosen"));
            }
            let after = &trainer.model().weights;
            let delta = |i: usize| after[i] as f64 - before[i] as f64;
            let moved: Vec<usize> = (0..before.len()).filter(|&i| delta(i) != 0.0).collect();
            let drift = |common: &dyn Fn(usize) -> bool| {
                moved
                    .iter()
                    .filter(|&&i| common(i))
                    .map(|&i| delta(i).powi(2))
                    .sum::<f64>()
                    .sqrt()
            };
            let whole = drift(&|_| true);
            let common_drift: Vec<f64> = cutoffs.iter().map(|&c| drift(&|i| df[i] > c)).collect();
            let (mut crossed, mut by_l2) = (0, 0);
            let mut split = vec![(0usize, 0usize); cutoffs.len()];
            for d in &diffs {
                let margin = |w: &[f32]| {
                    d.iter()
                        .map(|(i, x)| w[*i as usize] as f64 * *x as f64)
                        .sum::<f64>()
                };
                let (m0, m1) = (margin(&before), margin(after));
                crossed += usize::from((m0 > 0.0) != (m1 > 0.0));
                let gap = m0.abs() - MARGIN_ROUNDING;
                let norm = |keep: &dyn Fn(u32) -> bool| {
                    d.iter()
                        .filter(|(i, _)| keep(*i))
                        .map(|(_, x)| (*x as f64).powi(2))
                        .sum::<f64>()
                        .sqrt()
                };
                by_l2 += usize::from(gap <= whole * norm(&|_| true));
                for (k, &c) in cutoffs.iter().enumerate() {
                    let rare_moved = d
                        .iter()
                        .any(|(i, _)| df[*i as usize] <= c && delta(*i as usize) != 0.0);
                    if rare_moved {
                        split[k].0 += 1;
                    } else if gap <= common_drift[k] * norm(&|i| df[i as usize] > c) {
                        split[k].1 += 1;
                    }
                }
            }
            println!(
                "{batch} label(s), epoch {epoch}: {} weights moved, |dw| {whole:.4}; {crossed} margins crossed; L2 bound re-scores {by_l2}",
                moved.len()
            );
            for (k, &c) in cutoffs.iter().enumerate() {
                let postings: u64 = df.iter().filter(|&&x| x <= c).map(|&x| x as u64).sum();
                println!(
                    "  rare = df <= {c}: |dw_common| {:.4}; re-scored {} (rare moved) + {} (common bound) = {}; index {:.1} postings/pair",
                    common_drift[k], split[k].0, split[k].1, split[k].0 + split[k].1, postings as f64 / n as f64
                );
            }
        }
    }
}
