//! The decoder's packed forward pass on the CPU in f32: every per-token layer runs on
//! the real tokens only (no padding), attention is `attention::packed_causal_attention`
//! (online softmax, no T × T scores, grouped-query heads read in place, prompt
//! sharing), and what candle would do in several passes is done here in one:
//! residual add fused into the following RMSNorm, q/k RMSNorm and RoPE applied in one
//! pass over the fused q/k/v projection, SwiGLU on the fused gate/up projection. The
//! matrix products stay candle's (the `gemm` crate), so per-row results do not depend
//! on the batch either.
//!
//! Numerics as transformers' f32 eager path: RMSNorm normalises in f32 and then scales
//! by the weight, RoPE is rotate-half with cos/sin of `position · inv_freq` in f32,
//! softmax in f32, SiLU as x / (1 + e^−x). Sums use fixed orders (16 partial sums), so
//! a row's result is the same whatever rows surround it.

use candle_core::{Device, Module, Tensor};
use candle_nn::Linear;
use rayon::prelude::*;

use super::super::attention::{dot, packed_causal_attention, Heads};
use super::super::packed::PackedBatch;
use super::{Block, DecoderRm, RmsNorm};

impl DecoderRm {
    /// Rewards of a packed batch (CPU, f32), one per pooled row.
    pub(super) fn rewards_packed_cpu(&self, batch: &PackedBatch) -> candle_core::Result<Vec<f32>> {
        let c = &self.config;
        let n = batch.tokens();
        let hidden = c.hidden_size;
        let ids = Tensor::from_slice(&batch.ids, n, &Device::Cpu)?;
        let mut x: Vec<f32> = self.embed.forward(&ids)?.flatten_all()?.to_vec1()?;
        let max_position = batch.positions.iter().copied().max().unwrap_or(0) as usize;
        let rope = Rope::new(&self.inv_freq, max_position + 1);
        let mut h = vec![0f32; n * hidden];
        // Before the first block there is no residual to add.
        norm_rows(
            &x,
            &weights(&self.blocks[0].input_norm)?,
            self.blocks[0].input_norm.eps,
            &mut h,
        );
        for (i, block) in self.blocks.iter().enumerate() {
            let ctx = self.attention(block, batch, &h, &rope)?;
            let o = linear(&ctx, n, &block.o)?;
            add_then_norm(&mut x, &o, &block.post_norm, &mut h)?;
            let act = swiglu(&linear(&h, n, &block.gate_up)?, c.intermediate_size);
            let down = linear(&act, n, &block.down)?;
            // The next block's input norm, or (after the last) the final norm; only the
            // pooled rows of the final one are read, but norming all rows is cheap.
            let next = self.blocks.get(i + 1).map_or(&self.norm, |b| &b.input_norm);
            add_then_norm(&mut x, &down, next, &mut h)?;
        }
        let head: Vec<f32> = self.score.weight().get(0)?.to_vec1()?;
        Ok(batch
            .pooled
            .iter()
            .map(|&t| dot(&h[t * hidden..(t + 1) * hidden], &head))
            .collect())
    }

    /// Self-attention of one block on the normed input `h` ([tokens, hidden]): the
    /// fused q/k/v product, q/k RMSNorm per head and RoPE at each token's position,
    /// then the packed attention. Returns [tokens, heads·head_dim].
    fn attention(
        &self,
        block: &Block,
        batch: &PackedBatch,
        h: &[f32],
        rope: &Rope,
    ) -> candle_core::Result<Vec<f32>> {
        let c = &self.config;
        let n = batch.tokens();
        let dh = c.head_dim;
        let (q_width, kv_width) = (c.num_attention_heads * dh, c.num_key_value_heads * dh);
        let qkv = linear(h, n, &block.qkv)?;
        let q_norm = block.q_norm.as_ref().map(weights).transpose()?;
        let k_norm = block.k_norm.as_ref().map(weights).transpose()?;
        let eps = block.q_norm.as_ref().map_or(0.0, |nm| nm.eps as f32);
        let mut q = vec![0f32; n * q_width];
        let mut k = vec![0f32; n * kv_width];
        let mut v = vec![0f32; n * kv_width];
        q.par_chunks_mut(q_width)
            .zip(k.par_chunks_mut(kv_width))
            .zip(v.par_chunks_mut(kv_width))
            .enumerate()
            .with_min_len(16)
            .for_each(|(t, ((q, k), v))| {
                let row = &qkv[t * (q_width + 2 * kv_width)..][..q_width + 2 * kv_width];
                let position = batch.positions[t] as usize;
                for (dst, src, norm) in [
                    (&mut *q, &row[..q_width], &q_norm),
                    (&mut *k, &row[q_width..q_width + kv_width], &k_norm),
                ] {
                    for (d, s) in dst.chunks_exact_mut(dh).zip(src.chunks_exact(dh)) {
                        match norm {
                            Some(w) => norm_row(s, w, eps, d),
                            None => d.copy_from_slice(s),
                        }
                        rope.apply(d, position);
                    }
                }
                v.copy_from_slice(&row[q_width + kv_width..]);
            });
        let shape = Heads {
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: dh,
        };
        let scale = 1.0 / (dh as f32).sqrt();
        Ok(packed_causal_attention(
            batch,
            &q,
            &k,
            &v,
            shape,
            scale,
            block.window,
        ))
    }
}

/// cos and sin of `position · inv_freq` for every position up to a limit, in f32 as
/// transformers computes them.
struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl Rope {
    fn new(inv_freq: &[f32], positions: usize) -> Rope {
        let freqs: Vec<f32> = (0..positions)
            .flat_map(|p| inv_freq.iter().map(move |f| p as f32 * f))
            .collect();
        Rope {
            cos: freqs.iter().map(|f| f.cos()).collect(),
            sin: freqs.iter().map(|f| f.sin()).collect(),
            half: inv_freq.len(),
        }
    }

    /// Rotate-half RoPE of one head vector, in place.
    #[inline]
    fn apply(&self, x: &mut [f32], position: usize) {
        let half = self.half;
        let cos = &self.cos[position * half..][..half];
        let sin = &self.sin[position * half..][..half];
        let (a, b) = x.split_at_mut(half);
        for i in 0..half {
            let (x1, x2) = (a[i], b[i]);
            a[i] = x1 * cos[i] - x2 * sin[i];
            b[i] = x2 * cos[i] + x1 * sin[i];
        }
    }
}

/// A norm's weight as floats.
fn weights(norm: &RmsNorm) -> candle_core::Result<Vec<f32>> {
    norm.weight.to_vec1()
}

/// `input · Wᵀ (+ b)` for `rows` rows, through candle's matrix product.
fn linear(input: &[f32], rows: usize, layer: &Linear) -> candle_core::Result<Vec<f32>> {
    let x = Tensor::from_slice(input, (rows, input.len() / rows.max(1)), &Device::Cpu)?;
    layer.forward(&x)?.flatten_all()?.to_vec1()
}

/// `x += delta` row by row, and each updated row RMS-normed into `out`.
fn add_then_norm(
    x: &mut [f32],
    delta: &[f32],
    norm: &RmsNorm,
    out: &mut [f32],
) -> candle_core::Result<()> {
    let w = weights(norm)?;
    let width = w.len();
    x.par_chunks_mut(width)
        .zip(delta.par_chunks(width))
        .zip(out.par_chunks_mut(width))
        .with_min_len(16)
        .for_each(|((x, d), o)| {
            for (a, b) in x.iter_mut().zip(d) {
                *a += b;
            }
            norm_row(x, &w, norm.eps as f32, o);
        });
    Ok(())
}

/// Every row of `x` RMS-normed into `out`.
fn norm_rows(x: &[f32], w: &[f32], eps: f64, out: &mut [f32]) {
    x.par_chunks(w.len())
        .zip(out.par_chunks_mut(w.len()))
        .with_min_len(16)
        .for_each(|(x, o)| norm_row(x, w, eps as f32, o));
}

/// transformers' RMSNorm in f32: `w · (x · 1/√(mean(x²) + eps))`.
#[inline]
fn norm_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let inv = 1.0 / (dot(x, x) / x.len() as f32 + eps).sqrt();
    for ((o, a), g) in out.iter_mut().zip(x).zip(w) {
        *o = g * (a * inv);
    }
}

/// SiLU(gate) · up of the fused gate/up product ([rows, 2·width] → [rows, width]).
fn swiglu(gate_up: &[f32], width: usize) -> Vec<f32> {
    let rows = gate_up.len() / (2 * width);
    let mut out = vec![0f32; rows * width];
    out.par_chunks_mut(width)
        .zip(gate_up.par_chunks(2 * width))
        .with_min_len(16)
        .for_each(|(o, gu)| {
            let (g, u) = gu.split_at(width);
            for ((o, g), u) in o.iter_mut().zip(g).zip(u) {
                *o = g / (1.0 + (-g).exp()) * u;
            }
        });
    out
}
