//! Stage 2 of curate: train the models on worker 0 and hand them to every worker.
//!
//! - The best RM is cross-fitted on the pool sample (`training::best`): one model per
//!   fold, each pair scored by the model trained without its fold.
//! - The gold RM is trained on all gold labels (it never sees pool labels, so its
//!   scores of pool pairs are out-of-sample already), and cross-validated on them:
//!   K fold models, each verdict judged by the one that did not learn it.
//! - From those out-of-fold judgements the run measures itself (`training::quality`).
//!
//! All of it happens on one worker from inputs put in a total order, so the result is
//! the same for any number of workers or processes.

use std::sync::Arc;
use std::time::Instant;

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use synpref_engine::collective::compute_on_leader;
use synpref_engine::hashing::pair_key;
use synpref_engine::model::{PreferencePair, RowKey, Verdict};
use synpref_engine::report::Quality;
use synpref_engine::Result;
use synpref_operators::models::builtin::{HashedBtModel, TrainInfo};
use synpref_operators::models::encoder::DenseHead;
use synpref_operators::models::{
    CachedFeatures, EncoderScorer, FoldAssignment, HfScorer, LoadedModel, ModelSpec, RewardModel,
};
use synpref_operators::training::best::{self, CrossFitSettings, Folded};
use synpref_operators::training::folds::CrossFitted;
use synpref_operators::training::gold::{
    builtin_gold_folds, complete_gold_pairs, first_pool_examples, head_settings, label_pair,
    sort_labelled, train_builtin_gold,
};
use synpref_operators::training::quality::{assess, builtin_outcome, VerdictOutcome};
use timely::worker::Worker;

use super::plan::CuratePlan;
use super::survey::Material;

/// The best RM as trained on worker 0 and handed to every worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum BestModel {
    Builtin(Folded<HashedBtModel>),
    /// A ready reward model (`hf:`): nothing to train.
    Hf,
    Encoder(Folded<DenseHead>),
    /// Given by the caller (serve's current models): nothing is trained.
    Given,
}

/// The gold RM, and the fold models that cross-validate it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum GoldModel {
    Builtin {
        model: HashedBtModel,
        folds: Vec<HashedBtModel>,
    },
    Hf,
    Encoder {
        head: DenseHead,
        folds: Vec<DenseHead>,
    },
    Given,
}

/// The two models, what they were trained on, and the run's self-measurement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Models {
    pub best: BestModel,
    pub gold: GoldModel,
    pub train_s: f64,
    /// `None` when the models were given (nothing was trained to be measured).
    pub quality: Option<Quality>,
}

/// What a model's training reports: one entry per fold for a cross-fitted model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    pub folds: Vec<TrainInfo>,
    /// The model that scores the pool, when it is one model (the gold RM).
    pub model: Option<TrainInfo>,
}

impl BestModel {
    pub fn training(&self) -> Option<TrainingSummary> {
        let folds = match self {
            BestModel::Builtin(f) => f.models.iter().map(|m| m.info.clone()).collect(),
            BestModel::Encoder(f) => f.models.iter().map(|m| m.info.clone()).collect(),
            BestModel::Hf | BestModel::Given => return None,
        };
        Some(TrainingSummary { folds, model: None })
    }

    /// The scorer of pool pairs: cross-fitted where the model was trained; `model` is
    /// the loaded model it was trained from.
    pub fn scorer(&self, model: &LoadedModel) -> Option<Arc<dyn RewardModel>> {
        Some(match (self, model) {
            (BestModel::Builtin(f), _) => cross_fitted(
                f.assignment,
                f.models
                    .iter()
                    .map(|m| Arc::new(m.clone()) as Arc<dyn RewardModel>)
                    .collect(),
            ),
            (BestModel::Encoder(f), LoadedModel::Encoder(features)) => {
                head_folds(f.assignment, &f.models, features)
            }
            (BestModel::Hf, LoadedModel::Hf(features)) => Arc::new(HfScorer(features.clone())),
            (BestModel::Given, _) => return None,
            (BestModel::Encoder(_) | BestModel::Hf, _) => not_trained_from(model),
        })
    }
}

impl GoldModel {
    pub fn training(&self) -> Option<TrainingSummary> {
        match self {
            GoldModel::Builtin { model, folds } => Some(TrainingSummary {
                folds: folds.iter().map(|m| m.info.clone()).collect(),
                model: Some(model.info.clone()),
            }),
            GoldModel::Encoder { head, folds } => Some(TrainingSummary {
                folds: folds.iter().map(|m| m.info.clone()).collect(),
                model: Some(head.info.clone()),
            }),
            GoldModel::Hf | GoldModel::Given => None,
        }
    }

    /// The scorer of pool pairs: the model trained on every gold label; `loaded` is
    /// the loaded model it was trained from.
    pub fn scorer(&self, loaded: &LoadedModel) -> Option<Arc<dyn RewardModel>> {
        Some(match (self, loaded) {
            (GoldModel::Builtin { model, .. }, _) => Arc::new(model.clone()),
            (GoldModel::Encoder { head, .. }, LoadedModel::Encoder(features)) => {
                Arc::new(EncoderScorer {
                    features: features.clone(),
                    head: head.clone(),
                })
            }
            (GoldModel::Hf, LoadedModel::Hf(features)) => Arc::new(HfScorer(features.clone())),
            (GoldModel::Given, _) => return None,
            (GoldModel::Encoder { .. } | GoldModel::Hf, _) => not_trained_from(loaded),
        })
    }

    /// The scorer of gold verdicts: each judged by the fold model that did not learn it
    /// (a model never trained on labels judges them all). With the folds' count.
    fn out_of_fold(
        &self,
        loaded: &LoadedModel,
        assignment: FoldAssignment,
    ) -> Option<(Arc<dyn RewardModel>, usize)> {
        Some(match (self, loaded) {
            (GoldModel::Builtin { folds, .. }, _) => (
                cross_fitted(
                    assignment,
                    folds
                        .iter()
                        .map(|m| Arc::new(m.clone()) as Arc<dyn RewardModel>)
                        .collect(),
                ),
                folds.len(),
            ),
            (GoldModel::Encoder { folds, .. }, LoadedModel::Encoder(features)) => {
                (head_folds(assignment, folds, features), folds.len())
            }
            (GoldModel::Hf, _) => (self.scorer(loaded)?, 1),
            (GoldModel::Given, _) => return None,
            (GoldModel::Encoder { .. }, _) => not_trained_from(loaded),
        })
    }
}

/// A trained model paired with a loaded model of another kind: impossible, since the
/// models are trained from the loaded ones (`train_on_leader` matches on them), and a
/// checkpoint's models are restored only into a run with the same fingerprint, which
/// covers the model specs.
fn not_trained_from(loaded: &LoadedModel) -> ! {
    let kind = match loaded {
        LoadedModel::Builtin => "builtin",
        LoadedModel::Hf(_) => "hf",
        LoadedModel::Encoder(_) => "encoder",
    };
    unreachable!("trained models do not fit the loaded {kind} model")
}

/// Encoder heads, one per fold, over one feature source, as one cross-fitted scorer.
fn head_folds(
    assignment: FoldAssignment,
    heads: &[DenseHead],
    features: &Arc<CachedFeatures>,
) -> Arc<dyn RewardModel> {
    cross_fitted(
        assignment,
        heads
            .iter()
            .map(|h| {
                Arc::new(EncoderScorer {
                    features: features.clone(),
                    head: h.clone(),
                }) as Arc<dyn RewardModel>
            })
            .collect(),
    )
}

/// One fold: the model itself; else the cross-fitted set.
fn cross_fitted(
    assignment: FoldAssignment,
    mut models: Vec<Arc<dyn RewardModel>>,
) -> Arc<dyn RewardModel> {
    if models.len() == 1 {
        return models.pop().expect("one model");
    }
    Arc::new(CrossFitted::new(assignment, models))
}

/// The best and the gold model, each with its feature source loaded.
pub type Features = (LoadedModel, LoadedModel);

/// Trains both models on worker 0 from every worker's material and measures the run;
/// every worker gets the same `Models`.
pub fn train(
    worker: &mut Worker,
    plan: &CuratePlan,
    material: Material,
    features: &Features,
) -> Result<Models> {
    if plan.given_models.is_some() {
        return Ok(Models {
            best: BestModel::Given,
            gold: GoldModel::Given,
            train_s: 0.0,
            quality: None,
        });
    }
    compute_on_leader(worker, || train_on_leader(plan, material, features))
}

fn train_on_leader(plan: &CuratePlan, material: Material, features: &Features) -> Result<Models> {
    let spec = &plan.spec;
    let t = Instant::now();
    let Material {
        mut best_examples,
        mut best_pairs,
        gold_examples,
        gold_pairs,
        verdict_pairs,
        verdict_keys,
    } = material;
    best_examples.sort_by(|a, b| a.pair_id.cmp(&b.pair_id));
    sort_labelled(&mut best_pairs);
    let gold_pool = first_pool_examples(gold_examples);
    let gold_pair_set = complete_gold_pairs(&plan.gold, gold_pairs);
    let gold_stream = plan
        .gold
        .stream
        .iter()
        .filter(|l| {
            l.verdict != Verdict::Undecidable
                && (l.text.is_some() || gold_pool.contains_key(&pair_key(&l.pair_id)))
        })
        .count();
    if gold_stream == 0 && gold_pair_set.is_empty() && !matches!(spec.gold_rm, ModelSpec::Hf(_)) {
        tracing::warn!("no gold label matches a pool pair or carries its text: the gold RM is untrained (p_gold = 0.5), so no pair passes the gold check");
    }
    tracing::info!(
        best_sample = best_examples.len() + best_pairs.len(),
        gold = match spec.gold_rm {
            ModelSpec::Builtin => gold_stream,
            _ => gold_pair_set.len(),
        },
        best_folds = spec.cross_fit.folds,
        gold_folds = spec.gold_folds,
        "training the best RM (pool labels, cross-fitted) and the gold RM (gold labels)"
    );
    let bar = synpref_engine::progress::bar("train", 2, "models");
    if !spec.machine.run.progress {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let heads = head_settings(spec.train.seed);
    let assignment = FoldAssignment::new(spec.gold_folds);
    let (best_features, gold_features) = features;
    // The two models train at once on two threads; each alone is deterministic.
    let (best, gold) = std::thread::scope(|scope| -> Result<(BestModel, GoldModel)> {
        let gold = scope.spawn(|| -> Result<GoldModel> {
            let g = match gold_features {
                LoadedModel::Builtin => GoldModel::Builtin {
                    model: train_builtin_gold(&spec.train, &plan.gold, &gold_pool),
                    folds: builtin_gold_folds(&spec.train, &plan.gold, &gold_pool, assignment),
                },
                LoadedModel::Hf(_) => GoldModel::Hf,
                LoadedModel::Encoder(f) => {
                    let head = best::train_head(f, &best::borrowed(&gold_pair_set), 0.0, &heads)
                        .map_err(|e| e.for_setting("--gold-rm"))?;
                    let cross = CrossFitSettings {
                        folds: spec.gold_folds,
                        heldout_share: 0.0,
                    };
                    let folds = best::train_heads(f, &gold_pair_set, &cross, &heads)
                        .map_err(|e| e.for_setting("--gold-rm"))?;
                    GoldModel::Encoder {
                        head,
                        folds: folds.models,
                    }
                }
            };
            bar.inc(1);
            Ok(g)
        });
        let best = match best_features {
            LoadedModel::Builtin => BestModel::Builtin(best::train_builtin(
                &best_examples,
                &spec.cross_fit,
                &spec.train,
            )),
            LoadedModel::Hf(_) => BestModel::Hf,
            LoadedModel::Encoder(f) => BestModel::Encoder(
                best::train_heads(f, &best_pairs, &spec.cross_fit, &heads)
                    .map_err(|e| e.for_setting("--best-rm"))?,
            ),
        };
        bar.inc(1);
        Ok((best, gold.join().expect("gold RM training thread")?))
    })?;
    bar.finish_and_clear();
    let mut models = Models {
        best,
        gold,
        train_s: 0.0,
        quality: None,
    };
    models.quality = Some(match (&models.best, &models.gold) {
        // Built-in models: from the examples the gold RM already has, no pair kept.
        (BestModel::Builtin(best), GoldModel::Builtin { folds, .. }) => {
            measure_builtin(plan, best, folds, verdict_keys, &gold_pool, assignment)
        }
        _ => measure(plan, &models, verdict_pairs, features, assignment)?,
    });
    models.train_s = t.elapsed().as_secs_f64();
    Ok(models)
}

/// `measure` for two built-in models, from the gold RM's unswapped pool examples
/// (`gold_pool`: the first valid row of each labelled pair key) and which of those rows
/// are clean: the same verdicts, scored by the same arithmetic as the score operator.
fn measure_builtin(
    plan: &CuratePlan,
    best: &Folded<HashedBtModel>,
    gold_folds: &[HashedBtModel],
    mut verdict_keys: Vec<(u64, RowKey, bool, bool)>,
    gold_pool: &rustc_hash::FxHashMap<u64, synpref_operators::models::builtin::TrainExample>,
    assignment: FoldAssignment,
) -> Quality {
    use synpref_operators::models::builtin::TrainExample;
    verdict_keys.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    verdict_keys.dedup_by_key(|v| v.0);
    let mut labels: Vec<_> = plan
        .gold
        .labels
        .iter()
        .filter(|(_, l)| l.verdict != Verdict::Undecidable)
        .collect();
    labels.sort_by(|a, b| a.1.pair_id.cmp(&b.1.pair_id));
    let clean_row = |key: u64| -> Option<bool> {
        verdict_keys
            .binary_search_by_key(&key, |v| v.0)
            .ok()
            .map(|i| verdict_keys[i].2)
    };
    let corrected = |key: u64| -> bool {
        verdict_keys
            .binary_search_by_key(&key, |v| v.0)
            .is_ok_and(|i| verdict_keys[i].3)
    };
    let bits = plan.spec.train.feature_bits;
    let outcomes: Vec<VerdictOutcome> = labels
        .into_iter()
        .filter_map(|(key, l)| {
            let pooled = gold_pool.get(key).filter(|_| clean_row(*key) == Some(true));
            let (example, in_pool) = match pooled {
                Some(e) => (e.clone(), true),
                // A contaminated pool row never reaches the rule; a label with its own
                // text still tests the gold RM.
                None if clean_row(*key) == Some(false) => return None,
                None => (
                    TrainExample::from_pair(&label_pair(l)?.0, bits, false),
                    false,
                ),
            };
            let m_best = if in_pool {
                best.models[best.assignment.fold_of(&l.pair_id)].margin(&example)
            } else {
                0.0
            };
            builtin_outcome(
                l,
                &example,
                in_pool,
                m_best,
                gold_folds,
                assignment,
                plan.judges.as_deref(),
            )
            .map(|o| VerdictOutcome {
                recorded_correction: in_pool && corrected(*key),
                ..o
            })
        })
        .collect();
    assess(
        &outcomes,
        &plan.spec.rule(),
        gold_folds.len(),
        best.quality(),
    )
}

/// The run's quality from its decisive gold verdicts, each judged as if it had none.
fn measure(
    plan: &CuratePlan,
    models: &Models,
    mut verdict_pairs: Vec<(u64, RowKey, PreferencePair)>,
    (best_features, gold_features): &Features,
    assignment: FoldAssignment,
) -> Result<Quality> {
    // The first valid row of each labelled pair id, as the curate pass will keep it.
    verdict_pairs.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    verdict_pairs.dedup_by_key(|v| v.0);
    let in_pool: FxHashSet<u64> = verdict_pairs.iter().map(|v| v.0).collect();
    let mut pairs: Vec<(PreferencePair, bool)> = verdict_pairs
        .into_iter()
        .map(|(_, _, p)| (p, true))
        .collect();
    // Labels with their own text for pairs outside the pool test the gold RM too.
    let mut texts: Vec<PreferencePair> = plan
        .gold
        .labels
        .iter()
        .filter(|(k, _)| !in_pool.contains(k))
        .filter_map(|(_, l)| label_pair(l).map(|(p, _)| p))
        .collect();
    texts.sort_by(|a, b| a.pair_id.cmp(&b.pair_id));
    pairs.extend(texts.into_iter().map(|p| (p, false)));
    let refs: Vec<&PreferencePair> = pairs.iter().map(|(p, _)| p).collect();
    let (gold_oof, gold_folds) = models
        .gold
        .out_of_fold(gold_features, assignment)
        .expect("trained models");
    let best = models.best.scorer(best_features).expect("trained models");
    let m_gold = gold_oof
        .score(&refs)
        .map_err(|e| e.for_setting("--gold-rm"))?;
    let pool_refs: Vec<&PreferencePair> =
        pairs.iter().filter(|(_, p)| *p).map(|(p, _)| p).collect();
    let m_best = best
        .score(&pool_refs)
        .map_err(|e| e.for_setting("--best-rm"))?;
    let mut best_margins = m_best.into_iter();
    let outcomes: Vec<VerdictOutcome> = pairs
        .iter()
        .zip(m_gold)
        .filter_map(|((p, pool), (gc, gr))| {
            // Taken first, so that the margins stay aligned with the pool pairs.
            let m_best = if *pool {
                best_margins.next().map(|(c, r)| c - r).unwrap_or(0.0)
            } else {
                0.0
            };
            let key = pair_key(&p.pair_id);
            let verdict = plan.gold.labels.get(&key)?.verdict;
            let judges = plan
                .judges
                .as_ref()
                .and_then(|j| j.agree_key(key))
                .unwrap_or(false);
            VerdictOutcome::new(verdict, *pool, gc - gr, m_best, judges).map(|o| VerdictOutcome {
                recorded_correction: *pool && p.corrected,
                ..o
            })
        })
        .collect();
    let best_rm = match &models.best {
        BestModel::Builtin(f) => f.quality(),
        BestModel::Encoder(f) => f.quality(),
        _ => Default::default(),
    };
    Ok(assess(&outcomes, &plan.spec.rule(), gold_folds, best_rm))
}
