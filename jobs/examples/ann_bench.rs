//! Retrieval index benchmark for docs/stage1.md: exact scan against HNSW graphs
//! (`stage1::ann`) on clustered unit vectors of MiniLM's width, one shard of N rows
//! on one thread, as one stage1 worker sees its shard.
//!   cargo run --release -p synpref-jobs --example ann_bench -- [ROWS,...] [QUERIES]
//! Prints, per size: the build time, and per search list (ef) the time per query and
//! recall@8 against the exact scan; the exact scan's time per query.
//! Synthetic vectors are harder for HNSW than sentence embeddings (no low intrinsic
//! dimension), so their recall is a floor; the real-data figures come from
//! `synpref stage1` runs (docs/stage1.md).
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rustc_hash::FxHashSet;
use synpref_jobs::stage1::ann::{recall, IndexKind, IndexSettings, PoolIndex};

const DIMS: usize = 384;
const K: usize = 8;

/// Unit vectors scattered around `n / 50` centres.
fn clustered(n: usize, seed: u64, centres: &[Vec<f32>]) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n * DIMS);
    for _ in 0..n {
        let c = &centres[rng.random_range(0..centres.len())];
        let mut v: Vec<f32> = c
            .iter()
            .map(|x| x + 0.08 * (rng.random::<f32>() - 0.5))
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        out.extend(v);
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = args
        .get(1)
        .map(|s| s.split(',').map(|x| x.parse().expect("ROWS")).collect())
        .unwrap_or_else(|| vec![20_000, 100_000]);
    let queries: usize = args
        .get(2)
        .map(|s| s.parse().expect("QUERIES"))
        .unwrap_or(200);
    println!("rows\tbuild_s\tef\tms/query\trecall@8\texact ms/query");
    for &n in &sizes {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let centres: Vec<Vec<f32>> = (0..(n / 50).max(1))
            .map(|_| (0..DIMS).map(|_| rng.random::<f32>() - 0.5).collect())
            .collect();
        let rows = clustered(n, 1, &centres);
        let qs = clustered(queries, 2, &centres);
        let keys: Vec<u64> = (0..n as u64).collect();
        let excluded = FxHashSet::default();
        let settings = IndexSettings {
            kind: IndexKind::Hnsw,
            shards: 1,
            ..IndexSettings::default()
        };
        let t = Instant::now();
        let mut index = PoolIndex::build(&settings, &rows, DIMS, &keys, |_| true);
        let build_s = t.elapsed().as_secs_f64();
        let candidates = index.candidates(&keys, &excluded);
        let t = Instant::now();
        let exact: Vec<Vec<f32>> = qs
            .chunks(DIMS)
            .map(|q| {
                index
                    .exact(&rows, q, K, &candidates)
                    .into_iter()
                    .map(|x| x.1)
                    .collect()
            })
            .collect();
        let exact_ms = t.elapsed().as_secs_f64() * 1000.0 / queries as f64;
        for ef in [16, 32, 64, 128, 256] {
            index.set_ef_search(ef);
            let t = Instant::now();
            let found: Vec<Vec<f32>> = qs
                .chunks(DIMS)
                .map(|q| {
                    index
                        .search(&rows, q, K, &candidates)
                        .into_iter()
                        .map(|x| x.1)
                        .collect()
                })
                .collect();
            let ms = t.elapsed().as_secs_f64() * 1000.0 / queries as f64;
            println!(
                "{n}\t{build_s:.1}\t{ef}\t{ms:.3}\t{:.4}\t{exact_ms:.2}",
                recall(&found, &exact).unwrap()
            );
        }
    }
}
