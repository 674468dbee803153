//! Error-driven adaptive retrieval (DESIGN §1, Stage 1 step 2): for every gold pair,
//! the k nearest unverified pool pairs by cosine similarity of their (conversation,
//! attributes) embeddings, with k = 8 when the best RM gets the gold pair wrong or is
//! unsure (p ≤ 0.5) and ⌈8·(1 − p)⌉ otherwise, so the RM's mistakes pull in the most
//! similar data. Pairs retrieved by several gold pairs are labelled once.
//!
//! Embeddings come from a sentence encoder (all-MiniLM-L6-v2 by default, the paper's
//! choice is not stated; MiniLM is the usual sentence-transformers default) or, with no
//! model at hand, from hashed word n-grams; encoder embeddings are kept in the score
//! cache keyed by the text's hash and the encoder's fingerprint, so a rerun or the next
//! iteration never embeds a pair twice.
//!
//! The search is exact: every timely worker scans its partition of the pool for each
//! gold pair's k nearest, and the leader keeps the k best of those (ties by pair id), so
//! the result is the same on any worker count and has recall 1 by construction.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use synpref_engine::model::{Conversation, PreferencePair};
use synpref_engine::score_cache::ScoreCache;
use synpref_engine::{Error, Result};
use synpref_operators::models::batching::run_sequences_counted;
use synpref_operators::models::encoder::EncoderFeatures;
use synpref_operators::models::{ComputeStats, ModelError, ModelOptions, PairFeatures};

/// The paper's k for a gold pair the best RM gets wrong or is unsure of.
pub const K_MAX: usize = 8;

/// Width of the hashed embedding (a no-model fallback; 1024 buckets keep collisions
/// among a few hundred distinct words rare).
const HASHED_DIMS: usize = 1024;

/// The adaptive k rule: `k_max` if p ≤ 0.5, else ⌈k_max·(1 − p)⌉ (0 at p = 1).
pub fn k_for(p: f64, k_max: usize) -> usize {
    if p <= 0.5 {
        k_max
    } else {
        // 1 − p is computed exactly enough for p ∈ (0.5, 1]; a tiny epsilon keeps
        // 8·0.25 = 2.0000000000000004 from rounding up to 3.
        let k = (k_max as f64 * (1.0 - p) - 1e-9).ceil();
        (k.max(0.0) as usize).min(k_max)
    }
}

/// Which embedding to retrieve by.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EmbedderSpec {
    /// A BERT-family sentence encoder directory (mean pooling, L2 normalisation).
    Encoder(String),
    /// Hashed word unigrams and bigrams, L2-normalised: no model needed.
    Hashed,
}

impl EmbedderSpec {
    pub fn parse(spec: &str) -> std::result::Result<EmbedderSpec, ModelError> {
        if spec == "hashed" {
            Ok(EmbedderSpec::Hashed)
        } else if let Some(d) = spec.strip_prefix("encoder:") {
            if std::path::Path::new(d).join("config.json").is_file() {
                Ok(EmbedderSpec::Encoder(d.to_string()))
            } else {
                Err(ModelError::Spec(format!(
                    "`{d}` is not a model directory (no config.json)"
                )))
            }
        } else {
            Err(ModelError::Spec(format!(
                "`{spec}` is not an embedder (encoder:DIR, e.g. encoder:models/all-MiniLM-L6-v2, or hashed)"
            )))
        }
    }
}

impl std::fmt::Display for EmbedderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EmbedderSpec::Encoder(d) => write!(f, "encoder:{d}"),
            EmbedderSpec::Hashed => write!(f, "hashed"),
        }
    }
}

/// A loaded embedder.
pub enum Embedder {
    Encoder(Arc<EncoderFeatures>),
    Hashed,
}

impl Embedder {
    pub fn load(spec: &EmbedderSpec, options: &ModelOptions) -> Result<Embedder> {
        Ok(match spec {
            EmbedderSpec::Encoder(d) => Embedder::Encoder(Arc::new(
                EncoderFeatures::load(std::path::Path::new(d), options)
                    .map_err(|e| e.for_setting("--embedder"))?,
            )),
            EmbedderSpec::Hashed => Embedder::Hashed,
        })
    }

    pub fn dims(&self) -> usize {
        match self {
            Embedder::Encoder(e) => e.hidden(),
            Embedder::Hashed => HASHED_DIMS,
        }
    }

    /// Identifies the embedding function (the cache's fingerprint).
    pub fn fingerprint(&self) -> String {
        match self {
            Embedder::Encoder(e) => format!("retrieval-v1-{}", e.fingerprint()),
            Embedder::Hashed => format!("retrieval-v1-hashed-{HASHED_DIMS}"),
        }
    }

    /// Embeddings of `texts`; what the encoder's batches cost goes to `stats`.
    fn compute(&self, texts: &[String], stats: &Mutex<ComputeStats>) -> Result<Vec<f32>> {
        match self {
            Embedder::Encoder(e) => run_sequences_counted(
                &e.encoder,
                texts.len(),
                |i| e.encoder.tokenize(&texts[i]),
                1 << 16,
                stats,
            )
            .map_err(|e| Error::other("--embedder", e)),
            Embedder::Hashed => Ok(texts.iter().flat_map(|t| hashed_embedding(t)).collect()),
        }
    }
}

/// Hashed word unigrams and bigrams, lower-cased, L2-normalised.
fn hashed_embedding(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; HASHED_DIMS];
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect();
    let mut add = |s: &str| {
        let h = xxhash_rust::xxh3::xxh3_64(s.as_bytes());
        v[(h % HASHED_DIMS as u64) as usize] += 1.0;
    };
    for (i, w) in words.iter().enumerate() {
        add(w);
        if i + 1 < words.len() {
            add(&format!("{w} {}", words[i + 1]));
        }
    }
    normalise(&mut v);
    v
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

pub fn conversation_text(c: &Conversation) -> String {
    match c {
        Conversation::Text(t) => t.clone(),
        Conversation::Messages(ms) => ms
            .iter()
            .map(|m| format!("{}: {}", m.role, m.content))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// What a pair is retrieved by: its conversation so far and its attributes (DESIGN §1).
/// The replies are left out: retrieval looks for similar *tasks*, whose replies the
/// labellers then judge.
pub fn retrieval_text(p: &PreferencePair) -> String {
    // For the implicit-prompt form `prompt` holds the conversations' shared prefix.
    let mut t = conversation_text(&p.prompt);
    let a = &p.attributes;
    for (name, v) in [
        ("task category", &a.task_category),
        ("objectivity", &a.objectivity),
        ("controversiality", &a.controversiality),
        ("desired attributes", &a.desired_attributes),
        ("guideline", &a.guideline),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            t.push_str(&format!("\n{name}: {v}"));
        }
    }
    t
}

/// Unit-norm embeddings of pairs, row-major (`pairs.len() × dims`), through the cache;
/// what computing the missing ones cost goes to `stats`.
pub fn embed(
    embedder: &Embedder,
    cache: Option<&ScoreCache>,
    pairs: &[&PreferencePair],
    stats: &Mutex<ComputeStats>,
) -> Result<Vec<f32>> {
    let d = embedder.dims();
    let texts: Vec<String> = pairs.iter().map(|p| retrieval_text(p)).collect();
    let keys: Vec<u128> = texts
        .iter()
        .map(|t| xxhash_rust::xxh3::xxh3_128(t.as_bytes()))
        .collect();
    let hits = match cache {
        Some(c) => c.get_many(&keys),
        None => vec![None; keys.len()],
    };
    let missing: Vec<usize> = (0..texts.len()).filter(|&i| hits[i].is_none()).collect();
    let mut out = vec![0f32; texts.len() * d];
    for (i, h) in hits.iter().enumerate() {
        if let Some(v) = h {
            out[i * d..(i + 1) * d].copy_from_slice(v);
        }
    }
    for slice in missing.chunks(4096) {
        let todo: Vec<String> = slice.iter().map(|&i| texts[i].clone()).collect();
        let mut fresh = embedder.compute(&todo, stats)?;
        for row in fresh.chunks_mut(d) {
            normalise(row);
        }
        for (j, &i) in slice.iter().enumerate() {
            out[i * d..(i + 1) * d].copy_from_slice(&fresh[j * d..(j + 1) * d]);
        }
        if let Some(c) = cache {
            let k: Vec<u128> = slice.iter().map(|&i| keys[i]).collect();
            c.insert_many(&k, &fresh)?;
        }
        tracing::info!(
            embedded = slice.len(),
            of = missing.len(),
            "retrieval embeddings"
        );
    }
    if let Some(c) = cache {
        c.flush()?;
    }
    Ok(out)
}

/// The `k` rows of `candidates` most similar to `query` (cosine of unit vectors),
/// most similar first; ties by candidate index, so the result is deterministic.
pub fn nearest(query: &[f32], rows: &[f32], candidates: &[usize], k: usize) -> Vec<(usize, f32)> {
    let d = query.len();
    let mut scored: Vec<(usize, f32)> = candidates
        .iter()
        .map(|&i| {
            let r = &rows[i * d..(i + 1) * d];
            (i, r.iter().zip(query).map(|(a, b)| a * b).sum::<f32>())
        })
        .collect();
    let by_similarity =
        |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if scored.len() > k {
        scored.select_nth_unstable_by(k, by_similarity);
        scored.truncate(k);
    }
    scored.sort_by(by_similarity);
    scored
}

/// What retrieval found for one gold pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoldRetrieval {
    pub gold_pair_id: String,
    /// The best RM's probability that the gold label is right.
    pub p: f64,
    /// `k_for(p)`.
    pub k: usize,
    /// Retrieved pool pairs, most similar first: (pair id, cosine similarity).
    pub neighbours: Vec<(String, f32)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_rule_follows_the_paper() {
        assert_eq!(k_for(0.0, 8), 8);
        assert_eq!(k_for(0.5, 8), 8);
        assert_eq!(k_for(0.5000001, 8), 4);
        assert_eq!(k_for(0.75, 8), 2);
        assert_eq!(k_for(0.8, 8), 2);
        assert_eq!(k_for(0.875, 8), 1);
        assert_eq!(k_for(0.9, 8), 1);
        assert_eq!(k_for(0.999, 8), 1);
        assert_eq!(k_for(1.0, 8), 0);
    }

    #[test]
    fn nearest_is_exact_and_deterministic() {
        let rows = [1.0, 0.0, 0.0, 1.0, 0.6, 0.8, 0.8, 0.6];
        let q = [1.0, 0.0];
        assert_eq!(
            nearest(&q, &rows, &[0, 1, 2, 3], 2)
                .iter()
                .map(|x| x.0)
                .collect::<Vec<_>>(),
            vec![0, 3]
        );
        assert_eq!(nearest(&q, &rows, &[1, 2], 5).len(), 2);
    }
}
