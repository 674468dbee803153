//! Batching for transformer models: sequences are tokenised on CPU threads apart from
//! the model's thread, grouped by length into padded batches whose size is set by a
//! token budget (rows × padded width), and run largest-first-in, results-by-index-out.
//!
//! Each sequence is padded to a width that depends only on its own length (its
//! *bucket*), never on its batch-mates: then every matrix product a sequence takes
//! part in has the same inner dimensions whatever batch it lands in, so its output is
//! bit-for-bit the same whichever worker, process or batch scores it. Same answer
//! everywhere, and a score cache that holds exactly what a fresh run would compute.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Mutex;
use std::time::Instant;

use rayon::prelude::*;

use super::packed::PackedBatch;
use super::{ComputeStats, ModelError};

/// Right-padded token ids of one batch.
pub struct PaddedBatch {
    pub ids: Vec<u32>,
    /// 1 on real tokens, 0 on padding.
    pub mask: Vec<u8>,
    pub rows: usize,
    pub width: usize,
}

impl PaddedBatch {
    /// Pads `seqs` on the right to `width` (at least the longest) with `pad`.
    pub fn right(seqs: &[&[u32]], width: usize, pad: u32) -> PaddedBatch {
        let width = seqs
            .iter()
            .map(|s| s.len())
            .max()
            .unwrap_or(0)
            .max(width)
            .max(1);
        let mut ids = Vec::with_capacity(seqs.len() * width);
        let mut mask = Vec::with_capacity(seqs.len() * width);
        for s in seqs {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(pad, width - s.len()));
            mask.extend(std::iter::repeat_n(1u8, s.len()));
            mask.extend(std::iter::repeat_n(0u8, width - s.len()));
        }
        PaddedBatch {
            ids,
            mask,
            rows: seqs.len(),
            width,
        }
    }
}

/// The padded width of a sequence of `len` tokens: rounded up to a multiple of an
/// eighth of the next power of two (at least 16): padding adds fewer than 16 tokens or
/// less than a quarter of the length (an eighth or less from the middle of each octave
/// up), and never goes past `max_tokens` (the longest input allowed).
pub fn bucket_width(len: usize, max_tokens: usize) -> usize {
    let step = (len.max(1).next_power_of_two() / 8).max(16);
    len.div_ceil(step)
        .max(1)
        .saturating_mul(step)
        .min(max_tokens.max(len))
}

/// A model that maps a padded batch to a fixed number of floats per row.
pub trait BatchModel: Sync {
    /// The id used for padding.
    fn pad_id(&self) -> u32;
    /// The longest sequence the model accepts (bucket widths never exceed it).
    fn max_tokens(&self) -> usize;
    /// Floats per row of output.
    fn row_width(&self) -> usize;
    /// `rows × row_width` floats for the batch.
    fn forward_rows(&self, batch: &PaddedBatch) -> Result<Vec<f32>, ModelError>;
    /// Attention heads of the model's eager attention, which holds a rows × heads ×
    /// width × width tensor of scores (`max_rows` bounds it).
    fn attention_heads(&self) -> usize;
}

/// Most elements one attention-score tensor may hold. candle's CUDA path fails past
/// 2³¹ (32-bit indexing): on an H200, a Qwen3-0.6B-shaped model (16 heads) at a budget of
/// 131,072 tokens of ~1,100-token sequences (≈ 2.3·10⁹ scores) stopped with
/// `CublasError(CUBLAS_STATUS_EXECUTION_FAILED)`, and ran at 32,768 (docs/gpu.md). Half
/// that limit keeps a margin; on the CPU's default budget it never binds.
pub const MAX_ATTENTION_SCORES: usize = 1 << 30;

/// Rows per batch of sequences padded to `width`: as many as `token_budget` allows,
/// no more than keep the attention scores within `MAX_ATTENTION_SCORES`, at least one.
pub fn max_rows(token_budget: usize, width: usize, heads: usize) -> usize {
    let width = width.max(1);
    let by_scores = MAX_ATTENTION_SCORES / (heads.max(1) * width * width);
    (token_budget / width).min(by_scores).max(1)
}

/// Sequences handed from the tokenising threads to the model thread at a time.
const TOKENIZE_CHUNK: usize = 512;

/// Tokenised inputs in chunks, with the seconds each chunk took, or the first failure.
type Tokenized<T> = Result<(Vec<(usize, T)>, f64), ModelError>;

/// Tokenises items `0..count` on the rayon pool, `TOKENIZE_CHUNK` at a time, a chunk or
/// two ahead of the model thread that reads the returned channel; stops at the first
/// failure (sent as the last message).
fn tokenize_ahead<'scope, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    count: usize,
    tokenize: &'scope (impl Fn(usize) -> Result<T, ModelError> + Sync),
) -> Receiver<Tokenized<T>> {
    let (tx, rx) = sync_channel::<Tokenized<T>>(2);
    scope.spawn(move || {
        for start in (0..count).step_by(TOKENIZE_CHUNK) {
            let end = (start + TOKENIZE_CHUNK).min(count);
            let began = Instant::now();
            let chunk: Result<Vec<(usize, T)>, ModelError> = (start..end)
                .into_par_iter()
                .map(|i| tokenize(i).map(|ids| (i, ids)))
                .collect();
            let chunk = chunk.map(|c| (c, began.elapsed().as_secs_f64()));
            let failed = chunk.is_err();
            if tx.send(chunk).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// The next tokenised chunk (`None`: all done), counting the wait and the chunk's
/// tokenising time in `stats`.
fn next_chunk<T>(
    rx: &Receiver<Tokenized<T>>,
    stats: &mut ComputeStats,
) -> Result<Option<Vec<(usize, T)>>, ModelError> {
    let waited = Instant::now();
    let Ok(chunk) = rx.recv() else {
        return Ok(None);
    };
    stats.wait_s += waited.elapsed().as_secs_f64();
    let (chunk, tokenize_s) = chunk?;
    stats.tokenize_s += tokenize_s;
    Ok(Some(chunk))
}

/// Runs `model` on `count` sequences, the i-th given by `tokenize(i)`, in batches of at
/// most `token_budget` padded tokens (and at least one row; `max_rows`). Tokenisation runs on the
/// rayon pool, a chunk ahead of the model. Returns `count × row_width` floats, in order.
pub fn run_sequences<M: BatchModel>(
    model: &M,
    count: usize,
    tokenize: impl Fn(usize) -> Result<Vec<u32>, ModelError> + Sync,
    token_budget: usize,
) -> Result<Vec<f32>, ModelError> {
    run_sequences_counted(model, count, tokenize, token_budget, &Mutex::default())
}

/// `run_sequences`, adding what the batches cost to `stats`.
pub fn run_sequences_counted<M: BatchModel>(
    model: &M,
    count: usize,
    tokenize: impl Fn(usize) -> Result<Vec<u32>, ModelError> + Sync,
    token_budget: usize,
    stats: &Mutex<ComputeStats>,
) -> Result<Vec<f32>, ModelError> {
    let mut local = ComputeStats::default();
    let width = model.row_width();
    let mut out = vec![0f32; count * width];
    let max = model.max_tokens();
    std::thread::scope(|scope| -> Result<(), ModelError> {
        let rx = tokenize_ahead(scope, count, &tokenize);
        // Per bucket width, the sequences waiting for a full batch.
        let mut queues: BTreeMap<usize, Vec<(usize, Vec<u32>)>> = BTreeMap::new();
        let heads = model.attention_heads();
        let rows_for = |w: usize| max_rows(token_budget, w, heads);
        let mut run = |w: usize,
                       seqs: &[(usize, Vec<u32>)],
                       local: &mut ComputeStats|
         -> Result<(), ModelError> {
            let began = Instant::now();
            let refs: Vec<&[u32]> = seqs.iter().map(|(_, s)| s.as_slice()).collect();
            let batch = PaddedBatch::right(&refs, w, model.pad_id());
            local.pack_s += began.elapsed().as_secs_f64();
            let began = Instant::now();
            let rows = model.forward_rows(&batch)?;
            local.forward_s += began.elapsed().as_secs_f64();
            local.batches += 1;
            local.sequences += seqs.len() as u64;
            local.sequence_tokens += refs.iter().map(|s| s.len() as u64).sum::<u64>();
            local.computed_tokens += (batch.rows * batch.width) as u64;
            for ((i, _), r) in seqs.iter().zip(rows.chunks_exact(width)) {
                out[i * width..(i + 1) * width].copy_from_slice(r);
            }
            Ok(())
        };
        loop {
            let Some(chunk) = next_chunk(&rx, &mut local)? else {
                break;
            };
            for (i, ids) in chunk {
                let w = bucket_width(ids.len(), max);
                let q = queues.entry(w).or_default();
                q.push((i, ids));
                if q.len() >= rows_for(w) {
                    let full = std::mem::take(q);
                    run(w, &full, &mut local)?;
                }
            }
        }
        for (w, q) in std::mem::take(&mut queues) {
            for part in q.chunks(rows_for(w)) {
                run(w, part, &mut local)?;
            }
        }
        Ok(())
    })?;
    stats.lock().expect("stats lock").merge(&local);
    Ok(out)
}

/// A model that maps a packed batch (`packed`) to one float per sequence.
pub trait PackedModel: Sync {
    /// The id an empty sequence is given (it is scored as one such token).
    fn pad_id(&self) -> u32;
    /// The index within a sequence whose hidden state gives its output.
    fn pooled_at(&self, seq: &[u32]) -> usize;
    /// One float per row of the batch, in row order.
    fn forward_packed(&self, batch: &PackedBatch) -> Result<Vec<f32>, ModelError>;
}

/// Runs `model` on `count` pairs of sequences, the i-th given by `tokenize(i)`, the two
/// sequences of a pair sharing their common prefix, packed into batches of at most
/// `token_budget` computed tokens (and at least one pair). Tokenisation runs on the
/// rayon pool a chunk ahead of the model. Returns 2 × `count` floats, in order; what
/// each costs goes to `stats`.
///
/// A pair's floats do not depend on the pairs it is batched with (the packed forward
/// pass acts per row, attention per sequence), so the budget changes speed, not bits.
pub fn run_pairs<M: PackedModel>(
    model: &M,
    count: usize,
    tokenize: impl Fn(usize) -> Result<[Vec<u32>; 2], ModelError> + Sync,
    token_budget: usize,
    stats: &Mutex<ComputeStats>,
) -> Result<Vec<f32>, ModelError> {
    let mut out = vec![0f32; count * 2];
    let mut local = ComputeStats::default();
    std::thread::scope(|scope| -> Result<(), ModelError> {
        let rx = tokenize_ahead(scope, count, &tokenize);
        let pad = model.pad_id();
        let mut batch = PackedBatch::default();
        let mut members: Vec<usize> = Vec::new();
        let mut run = |batch: &mut PackedBatch,
                       members: &mut Vec<usize>,
                       local: &mut ComputeStats|
         -> Result<(), ModelError> {
            if members.is_empty() {
                return Ok(());
            }
            let began = Instant::now();
            let rewards = model.forward_packed(batch)?;
            local.forward_s += began.elapsed().as_secs_f64();
            local.batches += 1;
            local.sequences += batch.rows() as u64;
            local.sequence_tokens += batch.sequence_tokens as u64;
            local.computed_tokens += batch.tokens() as u64;
            for (&i, r) in members.iter().zip(rewards.chunks_exact(2)) {
                out[2 * i..2 * i + 2].copy_from_slice(r);
            }
            *batch = PackedBatch::default();
            members.clear();
            Ok(())
        };
        loop {
            let Some(chunk) = next_chunk(&rx, &mut local)? else {
                break;
            };
            for (i, [chosen, rejected]) in chunk {
                let began = Instant::now();
                let seqs = [chosen.as_slice(), rejected.as_slice()];
                let cost = PackedBatch::shared_cost(&seqs);
                local.pack_s += began.elapsed().as_secs_f64();
                if !members.is_empty() && batch.tokens() + cost > token_budget {
                    run(&mut batch, &mut members, &mut local)?;
                }
                let began = Instant::now();
                batch.push_shared(&seqs, pad, |s| model.pooled_at(s));
                members.push(i);
                local.pack_s += began.elapsed().as_secs_f64();
            }
        }
        run(&mut batch, &mut members, &mut local)
    })?;
    stats.lock().expect("stats lock").merge(&local);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{bucket_width, max_rows, MAX_ATTENTION_SCORES};

    #[test]
    fn bucket_widths_waste_little_and_respect_the_maximum() {
        for len in 1..5000 {
            let w = bucket_width(len, 100_000);
            assert!(w >= len);
            assert!(w - len < 16 || (w - len) * 4 < len, "{len} -> {w}");
        }
        assert_eq!(bucket_width(1000, 1000), 1000);
        assert_eq!(bucket_width(5, 8), 8);
        assert_eq!(bucket_width(17, 512), 32);
    }

    /// The H200 failure of docs/gpu.md: 16 heads, ~1,100-token rows, a 131,072-token
    /// budget gave ≈ 2.3·10⁹ attention scores; the cap keeps a batch within the limit.
    #[test]
    fn batches_keep_attention_scores_under_the_limit() {
        let rows = max_rows(131_072, 1_120, 16);
        assert!(
            rows * 16 * 1_120 * 1_120 <= MAX_ATTENTION_SCORES,
            "{rows} rows"
        );
        assert!(rows < 131_072 / 1_120);
        // The CPU default budget is never cut; one row always runs.
        assert_eq!(max_rows(16_384, 512, 12), 32);
        assert_eq!(max_rows(16_384, 40_000, 64), 1);
    }
}
