//! The gold RM: which label records it learns from, how (one online pass over the label
//! stream for the built-in model, a head for an encoder), and its cross-validation
//! folds. `curate` and `serve` both train through these functions, so they get the
//! same weights from the same labels.

use rustc_hash::{FxHashMap, FxHashSet};
use synpref_engine::hashing::pair_key;
use synpref_engine::model::{GoldLabel, PreferencePair, RowKey, Verdict};
use synpref_engine::side::GoldLabels;

use crate::models::builtin::{HashedBtModel, OnlineTrainer, TrainExample, TrainSettings};
use crate::models::encoder::HeadSettings;
use crate::models::FoldAssignment;

/// Labelled pairs in a total order: pair id, then content.
pub fn sort_labelled(pairs: &mut [(PreferencePair, bool)]) {
    pairs.sort_by(|a, b| {
        a.0.pair_id
            .cmp(&b.0.pair_id)
            .then(a.0.content_hash.cmp(&b.0.content_hash))
    });
}

/// Whether a pool row with this pair key trains the gold RM, and oriented how: it does
/// when its label carries no text of its own and is decisive (`Some(true)`: the human
/// preferred the rejected reply, so the example is swapped).
pub fn pool_label_swap(gold: &GoldLabels, pair_key: u64) -> Option<bool> {
    match gold.labels.get(&pair_key) {
        Some(l) if l.text.is_none() && l.verdict != Verdict::Undecidable => {
            Some(l.verdict == Verdict::Rejected)
        }
        _ => None,
    }
}

/// The encoder gold head's training set: the labelled pool pairs plus every decisive
/// label that carries its own text, one per pair id, in a total order.
pub fn complete_gold_pairs(
    gold: &GoldLabels,
    mut gold_pair_set: Vec<(PreferencePair, bool)>,
) -> Vec<(PreferencePair, bool)> {
    gold_pair_set.extend(gold.labels.values().filter_map(label_pair));
    sort_labelled(&mut gold_pair_set);
    gold_pair_set.dedup_by(|a, b| a.0.pair_id == b.0.pair_id);
    gold_pair_set
}

/// Pair keys whose pool rows the built-in gold RM learns from: those with a decisive
/// label record that carries no text of its own.
pub fn pool_trained_keys(gold: &GoldLabels) -> FxHashSet<u64> {
    gold.stream
        .iter()
        .filter(|l| l.text.is_none() && l.verdict != Verdict::Undecidable)
        .map(|l| pair_key(&l.pair_id))
        .collect()
}

/// The example one label record gives the built-in gold RM, if any: from the record's
/// own text, else from the pool row with its pair id (`pool`: unswapped features of the
/// first valid row per key), oriented by the verdict. Undecidable records and records
/// for pairs neither in the pool nor carrying text give none.
pub fn gold_example(
    label: &GoldLabel,
    pool: &FxHashMap<u64, TrainExample>,
    bits: u32,
) -> Option<TrainExample> {
    if label.verdict == Verdict::Undecidable {
        return None;
    }
    if let Some((pair, swap)) = label_pair(label) {
        return Some(TrainExample::from_pair(&pair, bits, swap));
    }
    let mut e = pool.get(&pair_key(&label.pair_id))?.clone();
    if label.verdict == Verdict::Rejected {
        std::mem::swap(&mut e.winner, &mut e.loser);
    }
    Some(e)
}

/// The unswapped example of the first valid row (by row key) of each pair key.
pub fn first_pool_examples(
    mut rows: Vec<(u64, RowKey, TrainExample)>,
) -> FxHashMap<u64, TrainExample> {
    rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut out = FxHashMap::default();
    for (key, _, e) in rows {
        out.entry(key).or_insert(e);
    }
    out
}

/// A decisive label with its own text as a pair (and whether the example is swapped).
pub fn label_pair(label: &GoldLabel) -> Option<(PreferencePair, bool)> {
    let (p, c, r) = label.text.as_ref()?;
    if label.verdict == Verdict::Undecidable {
        return None;
    }
    let pair = PreferencePair {
        content_hash: synpref_engine::hashing::content_hash(p, c, r),
        dedup_hash: synpref_engine::hashing::canonical_pair_hash(p, c, r, false),
        ..PreferencePair::outside_pool(label.pair_id.clone(), p.clone(), c.clone(), r.clone())
    };
    Some((pair, label.verdict == Verdict::Rejected))
}

/// Trains the built-in gold RM: one online pass over the label records in force, in
/// stream order (`OnlineTrainer`; a superseded label does not train it), so that serve,
/// extending the pass or running it again when a label is superseded, reaches the same
/// weights.
pub fn train_builtin_gold(
    settings: &TrainSettings,
    gold: &GoldLabels,
    pool: &FxHashMap<u64, TrainExample>,
) -> HashedBtModel {
    let bits = settings.feature_bits;
    let mut trainer = OnlineTrainer::new(settings);
    let mut examples = Vec::new();
    for label in gold.in_force(0) {
        if let Some(e) = gold_example(label, pool, bits) {
            trainer.step(&e);
            examples.push(e);
        }
    }
    let mut model = trainer.model().clone();
    model.info.chosen_epoch = 1;
    model.info.train_accuracy = model.accuracy(&examples);
    model
}

/// The built-in gold RM's cross-validation folds: model k is the same online pass over
/// the records in force without those of fold k's pair ids.
pub fn builtin_gold_folds(
    settings: &TrainSettings,
    gold: &GoldLabels,
    pool: &FxHashMap<u64, TrainExample>,
    assignment: FoldAssignment,
) -> Vec<HashedBtModel> {
    use rayon::prelude::*;
    let bits = settings.feature_bits;
    // The stream's examples once, with their folds; then one pass per fold, in
    // parallel (each pass alone is the deterministic left fold).
    let stream: Vec<(usize, TrainExample)> = gold
        .in_force(0)
        .filter_map(|l| Some((assignment.fold_of(&l.pair_id), gold_example(l, pool, bits)?)))
        .collect();
    (0..assignment.folds)
        .into_par_iter()
        .map(|k| {
            let mut t = OnlineTrainer::new(settings);
            for (fold, e) in &stream {
                if *fold != k {
                    t.step(e);
                }
            }
            t.model().clone()
        })
        .collect()
}

/// The encoder heads' training settings with `seed` (the defaults else).
pub fn head_settings(seed: u64) -> HeadSettings {
    HeadSettings {
        seed,
        ..HeadSettings::default()
    }
}
