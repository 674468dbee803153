//! `encoder:DIR`: a frozen sentence encoder (BERT family, e.g. all-MiniLM-L6-v2) with a
//! Bradley–Terry head trained in-process on the relevant labels, like the built-in
//! model but on dense features.
//!
//! Features of a reply y to a prompt x: φ(x, y) = [e(y) ; e(x) ⊙ e(y)], with e the
//! encoder's mean-pooled, L2-normalised embedding, so r(x, y) = w·φ(x, y) can depend on
//! how the reply relates to the prompt, and in r(x, y_w) − r(x, y_l) everything that
//! depends on the prompt alone cancels. The head is trained on the differences
//! φ(x, y_w) − φ(x, y_l) by logistic regression with AdaGrad steps (as the built-in
//! model), the checkpoint chosen by held-out accuracy when there is a held-out slice.
//!
//! The expensive, label-free part, (e(x), e(y_w), e(y_l)) per pair, is what the score
//! cache keeps: a new label retrains the head in milliseconds and never re-runs the
//! encoder. Identical texts within one call are embedded once (AlpacaEval-like pools
//! share a few hundred prompts across tens of thousands of pairs).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use synpref_engine::model::PreferencePair;

use super::batching::{run_sequences_counted, BatchModel, PaddedBatch};
use super::bert::BertEncoder;
use super::builtin::TrainInfo;
use super::chat::conversation;
use super::hf::hash_file;
use super::{sigmoid, ComputeStats, ModelError, ModelOptions, PairFeatures, TruncationStats};

/// The frozen encoder as a per-pair feature source (width 3·H).
pub struct EncoderFeatures {
    pub encoder: BertEncoder,
    token_budget: usize,
    fingerprint: String,
    prompt_truncated: AtomicU64,
    response_truncated: AtomicU64,
    compute: Mutex<ComputeStats>,
}

impl EncoderFeatures {
    pub fn load(dir: &Path, options: &ModelOptions) -> Result<EncoderFeatures, ModelError> {
        // sentence-transformers keeps the model's input limit in sentence_bert_config.json
        // (256 for all-MiniLM-L6-v2); without one, BERT's usual 512.
        let st_limit = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("max_seq_length").and_then(|x| x.as_u64()))
            .map(|x| x as usize);
        let max_tokens = options.max_tokens.or(st_limit).unwrap_or(512);
        let encoder = BertEncoder::load(dir, max_tokens)?;
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(b"synpref-encoder-v1\0");
        for f in ["model.safetensors", "config.json", "tokenizer.json"] {
            hash_file(&mut h, &dir.join(f))?;
        }
        h.update(&(encoder.max_tokens as u64).to_le_bytes());
        h.update(b"F32");
        Ok(EncoderFeatures {
            encoder,
            token_budget: options.token_budget,
            fingerprint: format!("encoder-{:032x}", h.digest128()),
            prompt_truncated: AtomicU64::new(0),
            response_truncated: AtomicU64::new(0),
            compute: Mutex::new(ComputeStats::default()),
        })
    }

    pub fn hidden(&self) -> usize {
        self.encoder.hidden_size()
    }
}

impl BatchModel for BertEncoder {
    fn pad_id(&self) -> u32 {
        0
    }
    fn max_tokens(&self) -> usize {
        self.max_tokens
    }
    fn row_width(&self) -> usize {
        self.hidden_size()
    }
    fn forward_rows(&self, batch: &PaddedBatch) -> Result<Vec<f32>, ModelError> {
        self.embed_batch(batch)
    }
    fn attention_heads(&self) -> usize {
        self.attention_heads()
    }
}

/// The text of messages `[from, to)` of a conversation, one per line.
fn joined(msgs: &[(&str, &str)]) -> String {
    msgs.iter().map(|(_, c)| *c).collect::<Vec<_>>().join("\n")
}

impl PairFeatures for EncoderFeatures {
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    fn width(&self) -> usize {
        3 * self.hidden()
    }
    fn compute(&self, pairs: &[&PreferencePair]) -> Result<Vec<f32>, ModelError> {
        // Texts per pair: prompt, chosen reply, rejected reply; each distinct text once.
        let mut texts: Vec<(String, bool)> = Vec::new();
        let mut seen: FxHashMap<String, usize> = FxHashMap::default();
        let mut slots = Vec::with_capacity(pairs.len() * 3);
        for p in pairs {
            let (cm, cp) = conversation(p, &p.chosen);
            let (rm, rp) = conversation(p, &p.rejected);
            for (text, is_reply) in [
                (joined(&cm[..cp]), false),
                (joined(&cm[cp..]), true),
                (joined(&rm[rp..]), true),
            ] {
                let slot = match seen.get(&text) {
                    Some(&slot) => slot,
                    None => {
                        seen.insert(text.clone(), texts.len());
                        texts.push((text, is_reply));
                        texts.len() - 1
                    }
                };
                slots.push(slot);
            }
        }
        let max = self.encoder.max_tokens;
        let emb = run_sequences_counted(
            &self.encoder,
            texts.len(),
            |i| {
                let (text, is_reply) = &texts[i];
                let (ids, truncated) = self.encoder.tokenize_counted(text)?;
                if truncated {
                    let counter = if *is_reply {
                        &self.response_truncated
                    } else {
                        &self.prompt_truncated
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                debug_assert!(ids.len() <= max);
                Ok(ids)
            },
            self.token_budget,
            &self.compute,
        )?;
        let h = self.hidden();
        let mut out = Vec::with_capacity(slots.len() * h);
        for s in slots {
            out.extend_from_slice(&emb[s * h..(s + 1) * h]);
        }
        Ok(out)
    }
    fn compute_stats(&self) -> ComputeStats {
        self.compute.lock().expect("stats lock").clone()
    }
    fn truncations(&self) -> TruncationStats {
        TruncationStats {
            prompt_truncated: self.prompt_truncated.load(Ordering::Relaxed),
            response_truncated: self.response_truncated.load(Ordering::Relaxed),
            max_tokens: self.encoder.max_tokens,
        }
    }
}

/// Training settings of a dense BT head; every knob has its default here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadSettings {
    /// Passes over the examples; the best held-out checkpoint is kept.
    pub epochs: usize,
    /// AdaGrad base step (dense, unit-norm features: smaller than the sparse model's 0.5).
    pub learning_rate: f32,
    pub l2: f32,
    pub seed: u64,
}

impl Default for HeadSettings {
    fn default() -> Self {
        HeadSettings {
            epochs: 8,
            learning_rate: 0.1,
            l2: 1e-4,
            seed: 17,
        }
    }
}

/// One example: φ(x, y_w) − φ(x, y_l).
pub struct HeadExample {
    pub pair_id: String,
    pub delta: Vec<f32>,
}

/// φ(x, y) of an encoder's per-pair features `[e(x), e(y_w), e(y_l)]`; `side` 0 is the
/// chosen reply, 1 the rejected one.
fn phi(features: &[f32], side: usize, out: &mut [f32]) {
    let h = features.len() / 3;
    let ex = &features[..h];
    let ey = &features[h * (1 + side)..h * (2 + side)];
    for i in 0..h {
        out[i] = ey[i];
        out[h + i] = ex[i] * ey[i];
    }
}

/// The difference features of a pair, the winner's first (`swap`: the rejected reply won).
pub fn delta(features: &[f32], swap: bool) -> Vec<f32> {
    let h = features.len() / 3;
    let (mut a, mut b) = (vec![0f32; 2 * h], vec![0f32; 2 * h]);
    phi(features, 0, &mut a);
    phi(features, 1, &mut b);
    let (w, l) = if swap { (b, a) } else { (a, b) };
    w.iter().zip(&l).map(|(x, y)| x - y).collect()
}

/// A trained Bradley–Terry head over encoder features.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DenseHead {
    pub weights: Vec<f32>,
    pub info: TrainInfo,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn accuracy(w: &[f32], set: &[&HeadExample]) -> f64 {
    if set.is_empty() {
        return 0.0;
    }
    set.iter().filter(|e| dot(w, &e.delta) > 0.0).count() as f64 / set.len() as f64
}

impl DenseHead {
    /// Trains on `train` (sorted by pair id by the caller), picking the epoch with the
    /// best accuracy on `heldout` (the last epoch when it is empty). Deterministic.
    pub fn train(
        dims: usize,
        train: Vec<HeadExample>,
        heldout: Vec<HeadExample>,
        s: &HeadSettings,
    ) -> DenseHead {
        DenseHead::train_refs(dims, train.iter().collect(), heldout.iter().collect(), s)
    }

    /// `train` over borrowed examples (the folds of cross-fitting share one set).
    pub fn train_refs(
        dims: usize,
        mut train: Vec<&HeadExample>,
        heldout: Vec<&HeadExample>,
        s: &HeadSettings,
    ) -> DenseHead {
        let mut w = vec![0f32; dims];
        let mut g2 = vec![0f32; dims];
        let mut best = (f64::NEG_INFINITY, w.clone(), 0usize);
        let mut history = Vec::new();
        for epoch in 1..=s.epochs {
            // Each epoch visits the examples in the order of a seeded hash of their
            // pair ids, not a shuffle of positions: one more example then takes its
            // place without reordering the others, so a head retrained with one more
            // label follows nearly the same path, and serve's margin bound, which grows
            // with the weights' move, spares more pairs. Ties keep the caller's order.
            let salt = s.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            train.sort_by_cached_key(|e| {
                xxhash_rust::xxh3::xxh3_64_with_seed(e.pair_id.as_bytes(), salt)
            });
            for e in &train {
                let margin = dot(&w, &e.delta);
                // d/dw −log σ(w·Δ) = −(1 − σ(w·Δ)) Δ
                let coef = -(1.0 - sigmoid(margin as f64)) as f32;
                for i in 0..dims {
                    let g = coef * e.delta[i] + s.l2 * w[i];
                    g2[i] += g * g;
                    w[i] -= s.learning_rate * g / (g2[i].sqrt() + 1e-8);
                }
            }
            let acc = if heldout.is_empty() {
                epoch as f64
            } else {
                let a = accuracy(&w, &heldout);
                history.push(a);
                a
            };
            if acc > best.0 {
                best = (acc, w.clone(), epoch);
            }
        }
        let weights = best.1;
        DenseHead {
            info: TrainInfo {
                examples: train.len(),
                heldout_examples: heldout.len(),
                heldout_accuracy: history,
                chosen_epoch: best.2,
                train_accuracy: accuracy(&weights, &train),
            },
            weights,
        }
    }

    /// w·Δ of an example: its winner's reward minus its loser's.
    pub fn margin(&self, delta: &[f32]) -> f32 {
        dot(&self.weights, delta)
    }

    /// (r(x, y_w), r(x, y_l)) from per-pair encoder features.
    pub fn rewards(&self, features: &[f32]) -> (f32, f32) {
        let h = features.len() / 3;
        let mut buf = vec![0f32; 2 * h];
        phi(features, 0, &mut buf);
        let c = dot(&self.weights, &buf);
        phi(features, 1, &mut buf);
        (c, dot(&self.weights, &buf))
    }

    /// Identifies the head (weights included) for manifests.
    pub fn fingerprint(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for w in &self.weights {
            h.update(&w.to_le_bytes());
        }
        format!("{:016x}", h.digest())
    }
}
