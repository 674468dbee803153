//! The model boundary: what the score operator needs of a reward model (`RewardModel`),
//! the model specs that choose one (`builtin`, `hf:DIR`, `encoder:DIR`), and the
//! models: the built-in hashed Bradley–Terry model, Qwen3/Llama sequence classifiers
//! (`decoder`, `hf`) and BERT encoders with a trained head (`bert`, `encoder`) in
//! candle, their batching (`batching`) and chat templates (`chat`), and trained models
//! saved to and loaded from a directory (`saved`). Transformer models
//! split into a label-free, cacheable part (`PairFeatures`, behind the score cache) and
//! what is computed from it.

pub mod attention;
pub mod batching;
pub mod bert;
pub mod builtin;
pub mod chat;
pub mod decoder;
pub mod encoder;
pub mod features;
pub mod hf;
pub mod margin_bound;
pub mod packed;
pub mod saved;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use synpref_engine::score_cache::ScoreCache;

/// What can go wrong loading or running a model (the operators crate's one error type
/// for models; jobs map it to exit codes).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model file or directory is missing or malformed; `path` names it.
    #[error("{path}: {message}")]
    Load { path: String, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("score cache: {0}")]
    Cache(String),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// A model spec (`--model`, `--best-rm`, `--embedder`, ...) that names no usable
    /// model; the message quotes the spec.
    #[error("{0}")]
    Spec(String),
}

use synpref_engine::model::PreferencePair;

/// A reward model: r(x, y) for the chosen and the rejected reply of each pair.
pub trait RewardModel: Send + Sync {
    /// Identifies weights and settings (for the manifest).
    fn fingerprint(&self) -> String;
    /// (r(x, y_w), r(x, y_l)) per pair, in order.
    fn score(&self, pairs: &[&PreferencePair]) -> Result<Vec<(f32, f32)>, ModelError>;
    /// The built-in models behind this one, one per fold, and which fold scores which
    /// pair (one fold for a plain built-in model): lets the score operator hash each
    /// reply once and read every built-in model's weights from one interleaved array.
    fn hashed_folds(&self) -> Option<(Vec<&builtin::HashedBtModel>, FoldAssignment)> {
        None
    }
    /// What scoring has cost so far (cache use, truncations); zero for the built-in model.
    fn usage(&self) -> ModelUsage {
        ModelUsage::default()
    }
    /// Writes what the model's score cache holds unwritten (nothing without a cache).
    fn flush(&self) -> Result<(), ModelError> {
        Ok(())
    }
}

/// Salt of `FoldAssignment` (any fixed value; changing it changes the folds).
pub const SALT_FOLD: u64 = 0x5a17_0003;

/// Which of `folds` folds a pair id falls in: how a cross-fitted model
/// (`training::folds::CrossFitted`) splits pairs between its fold models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldAssignment {
    pub folds: usize,
    pub salt: u64,
}

impl FoldAssignment {
    pub fn new(folds: usize) -> Self {
        FoldAssignment {
            folds: folds.max(1),
            salt: SALT_FOLD,
        }
    }

    /// The fold of a pair id, in `0..folds`.
    #[inline]
    pub fn fold_of(&self, pair_id: &str) -> usize {
        if self.folds == 1 {
            return 0;
        }
        ((synpref_engine::hashing::unit_interval(pair_id, self.salt) * self.folds as f64) as usize)
            .min(self.folds - 1)
    }
}

impl ModelError {
    /// This failure as an engine error under the flag that chose the model: a missing
    /// or malformed model file or template is bad input (exit 2, naming the flag and
    /// the file); anything else is a runtime failure (exit 1).
    pub fn for_setting(self, flag: &str) -> synpref_engine::Error {
        use synpref_engine::Error;
        match self {
            ModelError::Load { .. } | ModelError::Template(_) | ModelError::Spec(_) => {
                Error::setting(flag, self.to_string())
            }
            other => Error::other(flag, other),
        }
    }
}

impl From<ModelError> for synpref_engine::Error {
    /// Without a flag to name, the failure is named after the model boundary.
    fn from(e: ModelError) -> Self {
        e.for_setting("model")
    }
}

impl ModelError {
    /// A model file that cannot be used, naming it.
    pub fn load(path: &std::path::Path, e: impl std::fmt::Display) -> ModelError {
        ModelError::Load {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}

/// A model directory's tokenizer.json, with any padding and truncation it carries
/// switched off: hub files often set them (all-MiniLM-L6-v2 pads to 128), and we pad
/// per batch and truncate by our own policy.
pub fn load_tokenizer(dir: &std::path::Path) -> Result<tokenizers::Tokenizer, ModelError> {
    let path = dir.join("tokenizer.json");
    let mut tokenizer =
        tokenizers::Tokenizer::from_file(&path).map_err(|e| ModelError::load(&path, e))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| ModelError::load(&path, e))?;
    Ok(tokenizer)
}

/// Settings shared by the transformer models; every knob has its default here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelOptions {
    /// Longest input in tokens (hf: 4096; encoder: the model's max_seq_length).
    pub max_tokens: Option<usize>,
    /// Padded tokens per batch. 16384 keeps a CPU batch's activations of a 1B model
    /// near 100 MB; raise it on GPUs.
    pub token_budget: usize,
    /// Where the models run.
    pub device: DeviceChoice,
    /// The precision they run in.
    pub dtype: DTypeChoice,
    /// Which forward pass decoder models take.
    pub attention: AttentionChoice,
}

/// `--attention`: `auto` (packed, unpadded batches with prompt sharing where the device
/// has that path: the CPU in f32, CUDA in bf16 with flash attention; the eager path
/// elsewhere) or `eager` (padded batches and transformers' eager attention everywhere:
/// the reference the packed paths are checked against).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum AttentionChoice {
    #[default]
    Auto,
    Eager,
}

/// `--device`: `auto` (CUDA if built with it and a GPU is present), `cpu` or `cuda`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

/// `--dtype`: `auto` (bf16 on CUDA, f32 on the CPU), `f32` or `bf16`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum DTypeChoice {
    #[default]
    Auto,
    F32,
    Bf16,
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        synpref_engine::output::value_name(self, f)
    }
}

impl std::fmt::Display for AttentionChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        synpref_engine::output::value_name(self, f)
    }
}

impl std::fmt::Display for DTypeChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        synpref_engine::output::value_name(self, f)
    }
}

#[cfg(test)]
#[test]
fn device_and_dtype_have_one_name_for_clap_serde_and_display() {
    use clap::ValueEnum;
    let names = |all: Vec<String>| all.join(" ");
    let device = DeviceChoice::value_variants().iter().map(|v| {
        assert_eq!(
            serde_json::to_value(v).unwrap().as_str(),
            Some(v.to_string().as_str())
        );
        v.to_string()
    });
    assert_eq!(names(device.collect()), "auto cpu cuda");
    let dtype = DTypeChoice::value_variants().iter().map(|v| {
        assert_eq!(
            serde_json::to_value(v).unwrap().as_str(),
            Some(v.to_string().as_str())
        );
        v.to_string()
    });
    assert_eq!(names(dtype.collect()), "auto f32 bf16");
    let attention = AttentionChoice::value_variants().iter().map(|v| {
        assert_eq!(
            serde_json::to_value(v).unwrap().as_str(),
            Some(v.to_string().as_str())
        );
        v.to_string()
    });
    assert_eq!(names(attention.collect()), "auto eager");
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            max_tokens: None,
            token_budget: 16384,
            device: DeviceChoice::Auto,
            dtype: DTypeChoice::Auto,
            attention: AttentionChoice::Auto,
        }
    }
}

/// Inputs shortened to fit a model's limit (see hf.rs for the policy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruncationStats {
    pub prompt_truncated: u64,
    pub response_truncated: u64,
    /// The limit in effect, in tokens: `--max-tokens` (or its default), lowered to the
    /// model's own limit (`max_position_embeddings`, `max_seq_length`) where that is
    /// smaller; 0 for a model without one.
    #[serde(default)]
    pub max_tokens: usize,
}

/// Per-model counts for the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelUsage {
    /// Pairs the model computed in this run.
    pub scored: u64,
    /// Pairs whose outputs came from the score cache.
    pub cached: u64,
    pub truncations: TruncationStats,
    /// Where the computing time went (zero for models that batch nothing).
    #[serde(default)]
    pub compute: ComputeStats,
}

impl ModelUsage {
    pub fn merge(&mut self, o: &ModelUsage) {
        self.scored += o.scored;
        self.cached += o.cached;
        self.truncations.prompt_truncated += o.truncations.prompt_truncated;
        self.truncations.response_truncated += o.truncations.response_truncated;
        self.truncations.max_tokens = self.truncations.max_tokens.max(o.truncations.max_tokens);
        self.compute.merge(&o.compute);
    }
}

/// What a transformer model's computing cost, stage by stage: the tokens it was given
/// and the tokens it computed (after prompt sharing, with padding where the path pads),
/// and seconds per stage summed over the calls (tokenising overlaps the forward passes:
/// it runs ahead on other threads, so the stages add up to more than the wall time).
/// On the CPU the forward pass includes no transfers; on CUDA `forward_s` includes the
/// copies to and from the device and the synchronisation that reads the result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ComputeStats {
    /// Sequences scored (two per pair for a reward model).
    pub sequences: u64,
    /// Their tokens, each sequence counted whole: what an unpadded, unshared batch holds.
    pub sequence_tokens: u64,
    /// Tokens the model computed: packed tokens after prompt sharing, or padded rows.
    pub computed_tokens: u64,
    /// Model calls (batches).
    pub batches: u64,
    /// Wall time of the tokenising chunks (templates, tokenizer, truncation).
    pub tokenize_s: f64,
    /// Building batches (prefix search, packing).
    pub pack_s: f64,
    /// The model's forward passes.
    pub forward_s: f64,
    /// The model thread waiting for tokenised input.
    pub wait_s: f64,
}

impl ComputeStats {
    pub fn merge(&mut self, o: &ComputeStats) {
        self.sequences += o.sequences;
        self.sequence_tokens += o.sequence_tokens;
        self.computed_tokens += o.computed_tokens;
        self.batches += o.batches;
        self.tokenize_s += o.tokenize_s;
        self.pack_s += o.pack_s;
        self.forward_s += o.forward_s;
        self.wait_s += o.wait_s;
    }
}

/// The label-free, expensive part of a transformer model: a fixed number of floats per
/// pair, which the score cache keeps (rewards for `hf:`, embeddings for `encoder:`).
pub trait PairFeatures: Send + Sync {
    /// Covers everything that can change the floats: weights, config, tokenizer,
    /// template, max length and dtype.
    fn fingerprint(&self) -> &str;
    fn width(&self) -> usize;
    /// `pairs.len() × width` floats.
    fn compute(&self, pairs: &[&PreferencePair]) -> Result<Vec<f32>, ModelError>;
    fn truncations(&self) -> TruncationStats;
    /// What computing has cost so far, stage by stage.
    fn compute_stats(&self) -> ComputeStats {
        ComputeStats::default()
    }
}

/// Pairs computed per slice between cache writes (about one cache chunk).
const CACHE_SLICE_PAIRS: usize = 4096;

/// A feature source behind the durable score cache: only pairs missing from the cache
/// are computed, and what is computed is written back.
pub struct CachedFeatures {
    pub features: Arc<dyn PairFeatures>,
    cache: Option<Arc<ScoreCache>>,
    scored: AtomicU64,
    cached: AtomicU64,
}

impl CachedFeatures {
    pub fn new(features: Arc<dyn PairFeatures>, cache: Option<Arc<ScoreCache>>) -> Self {
        CachedFeatures {
            features,
            cache,
            scored: AtomicU64::new(0),
            cached: AtomicU64::new(0),
        }
    }

    /// The same model and cache, with usage counts of its own: for readers whose
    /// lookups are not scoring (serve's re-reads), so that they do not swell the
    /// counts reports give.
    pub fn uncounted_view(&self) -> CachedFeatures {
        CachedFeatures::new(self.features.clone(), self.cache.clone())
    }

    /// `pairs.len() × width` floats, from the cache where it has them.
    pub fn get(&self, pairs: &[&PreferencePair]) -> Result<Vec<f32>, ModelError> {
        let w = self.features.width();
        let Some(cache) = &self.cache else {
            self.scored.fetch_add(pairs.len() as u64, Ordering::Relaxed);
            return self.features.compute(pairs);
        };
        let keys: Vec<u128> = pairs.iter().map(|p| p.content_hash).collect();
        let hits = cache.get_many(&keys);
        let missing: Vec<usize> = (0..pairs.len()).filter(|&i| hits[i].is_none()).collect();
        let mut out = vec![0f32; pairs.len() * w];
        for (i, h) in hits.iter().enumerate() {
            if let Some(v) = h {
                out[i * w..(i + 1) * w].copy_from_slice(v);
            }
        }
        // In slices, each written to the cache as soon as it is computed, so that a
        // crash in a long call loses at most one slice of work.
        for (n, slice) in missing.chunks(CACHE_SLICE_PAIRS).enumerate() {
            let todo: Vec<&PreferencePair> = slice.iter().map(|&i| pairs[i]).collect();
            let fresh = self.features.compute(&todo)?;
            for (j, &i) in slice.iter().enumerate() {
                out[i * w..(i + 1) * w].copy_from_slice(&fresh[j * w..(j + 1) * w]);
            }
            let fresh_keys: Vec<u128> = slice.iter().map(|&i| keys[i]).collect();
            cache
                .insert_many(&fresh_keys, &fresh)
                .map_err(|e| ModelError::Cache(e.to_string()))?;
            tracing::info!(
                done = n * CACHE_SLICE_PAIRS + slice.len(),
                of = missing.len(),
                model = self.features.fingerprint(),
                "scored pairs"
            );
        }
        self.scored
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        self.cached
            .fetch_add((pairs.len() - missing.len()) as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// Writes the cache entries not yet written.
    pub fn flush(&self) -> Result<(), ModelError> {
        match &self.cache {
            Some(c) => c.flush().map_err(|e| ModelError::Cache(e.to_string())),
            None => Ok(()),
        }
    }

    pub fn usage(&self) -> ModelUsage {
        ModelUsage {
            scored: self.scored.load(Ordering::Relaxed),
            cached: self.cached.load(Ordering::Relaxed),
            truncations: self.features.truncations(),
            compute: self.features.compute_stats(),
        }
    }
}

/// `hf:DIR` as a reward model: its features are the two rewards.
pub struct HfScorer(pub Arc<CachedFeatures>);

impl RewardModel for HfScorer {
    fn fingerprint(&self) -> String {
        self.0.features.fingerprint().to_owned()
    }
    fn score(&self, pairs: &[&PreferencePair]) -> Result<Vec<(f32, f32)>, ModelError> {
        let f = self.0.get(pairs)?;
        Ok(f.chunks_exact(2).map(|r| (r[0], r[1])).collect())
    }
    fn usage(&self) -> ModelUsage {
        self.0.usage()
    }
    fn flush(&self) -> Result<(), ModelError> {
        self.0.flush()
    }
}

/// `encoder:DIR` as a reward model: cached encoder features and a trained head.
pub struct EncoderScorer {
    pub features: Arc<CachedFeatures>,
    pub head: encoder::DenseHead,
}

impl RewardModel for EncoderScorer {
    fn fingerprint(&self) -> String {
        format!(
            "{}+head-{}",
            self.features.features.fingerprint(),
            self.head.fingerprint()
        )
    }
    fn score(&self, pairs: &[&PreferencePair]) -> Result<Vec<(f32, f32)>, ModelError> {
        let f = self.features.get(pairs)?;
        let w = self.features.features.width();
        Ok(f.chunks_exact(w).map(|x| self.head.rewards(x)).collect())
    }
    fn usage(&self) -> ModelUsage {
        self.features.usage()
    }
    fn flush(&self) -> Result<(), ModelError> {
        self.features.flush()
    }
}

/// A model chosen by a spec string (`--best-rm`, `--gold-rm`, `--model`), parsed once
/// at the edge. Written in reports and manifests as the string it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSpec {
    /// The hashed BT model, trained in-process.
    Builtin,
    /// A Hugging Face reward-model directory (Qwen3 or Llama sequence classifier).
    Hf(PathBuf),
    /// A frozen BERT-family encoder with a BT head trained in-process.
    Encoder(PathBuf),
}

impl std::fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSpec::Builtin => write!(f, "builtin"),
            ModelSpec::Hf(d) => write!(f, "hf:{}", d.display()),
            ModelSpec::Encoder(d) => write!(f, "encoder:{}", d.display()),
        }
    }
}

impl Serialize for ModelSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ModelSpec {
    /// Reads a spec written by `Display` back (saved state, manifests) without checking
    /// that the directory still exists; `parse` checks at the edge.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "builtin" {
            Ok(ModelSpec::Builtin)
        } else if let Some(dir) = text.strip_prefix("hf:") {
            Ok(ModelSpec::Hf(PathBuf::from(dir)))
        } else if let Some(dir) = text.strip_prefix("encoder:") {
            Ok(ModelSpec::Encoder(PathBuf::from(dir)))
        } else {
            Err(serde::de::Error::custom(format!(
                "`{text}` is not a model spec (builtin, hf:DIR or encoder:DIR)"
            )))
        }
    }
}

impl ModelSpec {
    /// Parses `builtin`, `hf:DIR` or `encoder:DIR`; the directory must exist.
    pub fn parse(spec: &str) -> Result<ModelSpec, ModelError> {
        let dir = |d: &str| -> Result<PathBuf, ModelError> {
            let p = PathBuf::from(d);
            if d.is_empty() {
                Err(ModelError::Spec(format!(
                    "`{spec}`: no directory after the colon"
                )))
            } else if !p.join("config.json").is_file() {
                Err(ModelError::Spec(format!(
                    "`{spec}`: {} has no config.json",
                    p.display()
                )))
            } else {
                Ok(p)
            }
        };
        if spec == "builtin" {
            Ok(ModelSpec::Builtin)
        } else if let Some(d) = spec.strip_prefix("hf:") {
            dir(d).map(ModelSpec::Hf)
        } else if let Some(d) = spec.strip_prefix("encoder:") {
            dir(d).map(ModelSpec::Encoder)
        } else {
            Err(ModelError::Spec(format!(
                "`{spec}` is not a model spec (builtin, hf:DIR or encoder:DIR)"
            )))
        }
    }
}

/// A model spec with what it needs loaded: the built-in model needs nothing, an `hf:`
/// or `encoder:` model its cacheable feature source. Jobs carry this one value for "a
/// model" once it is loaded, so that no caller matches the spec and its features
/// separately (and checks again that they agree).
#[derive(Clone)]
pub enum LoadedModel {
    Builtin,
    /// A ready reward model: its features are the rewards.
    Hf(Arc<CachedFeatures>),
    /// A sentence encoder: its features are the embeddings a head is trained on.
    Encoder(Arc<CachedFeatures>),
}

impl LoadedModel {
    /// Loads what `spec` needs, its score cache under `cache_url` when one is given.
    pub fn load(
        spec: &ModelSpec,
        options: &ModelOptions,
        cache_url: Option<&str>,
    ) -> Result<LoadedModel, ModelError> {
        Ok(match spec {
            ModelSpec::Builtin => LoadedModel::Builtin,
            ModelSpec::Hf(dir) => LoadedModel::Hf(load_hf(dir, options, cache_url)?),
            ModelSpec::Encoder(dir) => LoadedModel::Encoder(load_encoder(dir, options, cache_url)?),
        })
    }

    /// The feature source (`None` for the built-in model).
    pub fn features(&self) -> Option<&Arc<CachedFeatures>> {
        match self {
            LoadedModel::Builtin => None,
            LoadedModel::Hf(f) | LoadedModel::Encoder(f) => Some(f),
        }
    }
}

/// Loads an `hf:` directory's reward model as a cacheable feature source.
pub fn load_hf(
    dir: &std::path::Path,
    options: &ModelOptions,
    cache_url: Option<&str>,
) -> Result<Arc<CachedFeatures>, ModelError> {
    cached(Arc::new(hf::HfRewardModel::load(dir, options)?), cache_url)
}

/// Loads an `encoder:` directory's sentence encoder as a cacheable feature source.
pub fn load_encoder(
    dir: &std::path::Path,
    options: &ModelOptions,
    cache_url: Option<&str>,
) -> Result<Arc<CachedFeatures>, ModelError> {
    cached(
        Arc::new(encoder::EncoderFeatures::load(dir, options)?),
        cache_url,
    )
}

/// `features` behind the score cache under `cache_url` when one is given.
fn cached(
    features: Arc<dyn PairFeatures>,
    cache_url: Option<&str>,
) -> Result<Arc<CachedFeatures>, ModelError> {
    let cache = match cache_url {
        Some(url) => Some(Arc::new(
            ScoreCache::open(url, features.fingerprint(), features.width())
                .map_err(|e| ModelError::Cache(e.to_string()))?,
        )),
        None => None,
    };
    Ok(Arc::new(CachedFeatures::new(features, cache)))
}

/// σ(x) in f64.
#[inline]
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl RewardModel for builtin::HashedBtModel {
    fn hashed_folds(&self) -> Option<(Vec<&builtin::HashedBtModel>, FoldAssignment)> {
        Some((vec![self], FoldAssignment::new(1)))
    }
    fn fingerprint(&self) -> String {
        builtin::HashedBtModel::fingerprint(self)
    }
    fn score(&self, pairs: &[&PreferencePair]) -> Result<Vec<(f32, f32)>, ModelError> {
        let mut c = features::SparseFeatures::default();
        let mut r = features::SparseFeatures::default();
        Ok(pairs
            .iter()
            .map(|p| {
                let cat = features::category_hash(p.attributes.task_category.as_deref());
                features::response_features(
                    &features::reply_text(&p.chosen, p.implicit_prompt),
                    cat,
                    self.feature_bits,
                    &mut c,
                );
                features::response_features(
                    &features::reply_text(&p.rejected, p.implicit_prompt),
                    cat,
                    self.feature_bits,
                    &mut r,
                );
                (self.reward(&c), self.reward(&r))
            })
            .collect::<Vec<_>>())
    }
}
