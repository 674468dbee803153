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

use candle_core::{CpuStorage, Device, Module, Storage, Tensor};
use candle_nn::Linear;
use std::time::Instant;

use rayon::prelude::*;

use super::super::attention::{dot, packed_causal_attention, Heads};
use super::super::packed::PackedBatch;
use super::{Block, DecoderRm, RmsNorm};

/// Seconds per kind of operation in one packed forward pass (the CPU path, or the
/// CUDA flash path with a synchronisation around each step), summed over the layers (`DecoderRm::rewards_packed_timed`; `examples/bench_ops.rs` prints them).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct OpTimes {
    /// Token embedding lookup.
    pub embed_s: f64,
    /// The fused q/k/v product.
    pub qkv_s: f64,
    /// q/k RMSNorm, RoPE and the split into q, k, v.
    pub qk_norm_rope_s: f64,
    /// Packed causal attention.
    pub attention_s: f64,
    /// The output projection.
    pub o_proj_s: f64,
    /// Residual adds fused with the following RMSNorm (both per layer).
    pub add_norm_s: f64,
    /// The fused gate/up product.
    pub gate_up_s: f64,
    /// SiLU(gate) · up.
    pub swiglu_s: f64,
    /// The down projection.
    pub down_s: f64,
    /// The score head on the pooled rows.
    pub head_s: f64,
}

/// Runs `f`, adding its wall time to `slot`.
fn timed<T>(slot: &mut f64, f: impl FnOnce() -> T) -> T {
    let began = Instant::now();
    let out = f();
    *slot += began.elapsed().as_secs_f64();
    out
}

impl DecoderRm {
    pub(super) fn forward_packed_cpu(
        &self,
        batch: &PackedBatch,
    ) -> candle_core::Result<(Vec<f32>, OpTimes)> {
        let c = &self.config;
        let n = batch.tokens();
        let hidden = c.hidden_size;
        let mut t = OpTimes::default();
        let mut x: Vec<f32> = timed(&mut t.embed_s, || {
            let ids = Tensor::from_slice(&batch.ids, n, &Device::Cpu)?;
            self.embed.forward(&ids)?.flatten_all()?.to_vec1()
        })?;
        let max_position = batch.positions.iter().copied().max().unwrap_or(0) as usize;
        let rope = Rope::new(&self.inv_freq, max_position + 1);
        // Every activation buffer once per batch, reused by every layer: fresh large
        // allocations per product cost the kernel's page zeroing (a quarter of the CPU
        // time when each product allocated its output).
        let mut b = Buffers::new(c, n);
        let first = &self.blocks[0].input_norm;
        let w = weights(first)?;
        timed(&mut t.add_norm_s, || {
            norm_rows(&x, &w, first.eps as f32, &mut b.h)
        });
        for (i, block) in self.blocks.iter().enumerate() {
            self.attention(block, batch, &rope, &mut b, &mut t)?;
            timed(&mut t.o_proj_s, || {
                linear_into(&b.ctx, n, &block.o, &mut b.delta)
            })?;
            timed(&mut t.add_norm_s, || {
                add_then_norm(&mut x, &b.delta, &block.post_norm, &mut b.h)
            })?;
            timed(&mut t.gate_up_s, || {
                linear_into(&b.h, n, &block.gate_up, &mut b.gate_up)
            })?;
            timed(&mut t.swiglu_s, || {
                swiglu(&b.gate_up, c.intermediate_size, &mut b.act)
            });
            timed(&mut t.down_s, || {
                linear_into(&b.act, n, &block.down, &mut b.delta)
            })?;
            // The next block's input norm, or (after the last) the final norm; only the
            // pooled rows of the final one are read, but norming all rows is cheap.
            let next = self.blocks.get(i + 1).map_or(&self.norm, |b| &b.input_norm);
            timed(&mut t.add_norm_s, || {
                add_then_norm(&mut x, &b.delta, next, &mut b.h)
            })?;
        }
        let rewards = timed(&mut t.head_s, || -> candle_core::Result<Vec<f32>> {
            let head: Vec<f32> = self.score.weight().get(0)?.to_vec1()?;
            Ok(batch
                .pooled
                .iter()
                .map(|&r| dot(&b.h[r * hidden..(r + 1) * hidden], &head))
                .collect())
        })?;
        Ok((rewards, t))
    }

    /// Self-attention of one block on the normed input `buffers.h`: the fused q/k/v
    /// product, q/k RMSNorm per head and RoPE at each token's position, then the packed
    /// attention into `buffers.ctx` ([tokens, heads·head_dim]).
    fn attention(
        &self,
        block: &Block,
        batch: &PackedBatch,
        rope: &Rope,
        buffers: &mut Buffers,
        times: &mut OpTimes,
    ) -> candle_core::Result<()> {
        let c = &self.config;
        let n = batch.tokens();
        let dh = c.head_dim;
        let (q_width, kv_width) = (c.num_attention_heads * dh, c.num_key_value_heads * dh);
        let Buffers {
            h,
            qkv,
            q,
            k,
            v,
            ctx,
            ..
        } = buffers;
        timed(&mut times.qkv_s, || linear_into(h, n, &block.qkv, qkv))?;
        let q_norm = block.q_norm.as_ref().map(weights).transpose()?;
        let k_norm = block.k_norm.as_ref().map(weights).transpose()?;
        let eps = block.q_norm.as_ref().map_or(0.0, |nm| nm.eps as f32);
        let qkv: &[f32] = qkv;
        let began = Instant::now();
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
        times.qk_norm_rope_s += began.elapsed().as_secs_f64();
        let shape = Heads {
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: dh,
        };
        let scale = 1.0 / (dh as f32).sqrt();
        timed(&mut times.attention_s, || {
            packed_causal_attention(batch, q, k, v, shape, scale, block.window, ctx)
        });
        Ok(())
    }
}

/// The activations of one packed batch, [tokens, width] each.
struct Buffers {
    /// The normed input of the next product.
    h: Vec<f32>,
    qkv: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention output.
    ctx: Vec<f32>,
    /// What a block adds to the residual stream (attention's, then the MLP's).
    delta: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
}

impl Buffers {
    fn new(c: &super::DecoderConfig, n: usize) -> Buffers {
        let q = c.num_attention_heads * c.head_dim;
        let kv = c.num_key_value_heads * c.head_dim;
        let f = c.intermediate_size;
        let zeros = |width: usize| vec![0f32; n * width];
        Buffers {
            h: zeros(c.hidden_size),
            qkv: zeros(q + 2 * kv),
            q: zeros(q),
            k: zeros(kv),
            v: zeros(kv),
            ctx: zeros(q),
            delta: zeros(c.hidden_size),
            gate_up: zeros(2 * f),
            act: zeros(f),
        }
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

/// `out = input · Wᵀ (+ b)` for `rows` rows, written straight into `out` by the `gemm`
/// crate with the arguments candle's CPU matmul gives it for `input.matmul(&w.t())`
/// (so the same products, bit for bit), without allocating an output.
fn linear_into(
    input: &[f32],
    rows: usize,
    layer: &Linear,
    out: &mut [f32],
) -> candle_core::Result<()> {
    let w = layer.weight();
    let (outputs, inputs) = w.dims2()?;
    assert_eq!(input.len(), rows * inputs, "linear input shape");
    assert_eq!(out.len(), rows * outputs, "linear output shape");
    let (storage, layout) = w.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
        candle_core::bail!("the packed CPU path needs f32 weights on the CPU")
    };
    let Some((from, to)) = layout.contiguous_offsets() else {
        candle_core::bail!("the packed CPU path needs contiguous weights")
    };
    let weight = &data[from..to];
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the pointers and strides describe `input` (rows × inputs, row-major),
    // `weight` read as its transpose (inputs × outputs) and `out` (rows × outputs),
    // all in bounds (asserted above); `out` is not read (`read_dst` false).
    unsafe {
        gemm::gemm(
            rows,
            outputs,
            inputs,
            out.as_mut_ptr(),
            1,
            outputs as isize,
            false,
            input.as_ptr(),
            1,
            inputs as isize,
            weight.as_ptr(),
            inputs as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    drop(storage);
    if let Some(b) = layer.bias() {
        let b: Vec<f32> = b.to_vec1()?;
        out.par_chunks_mut(outputs).for_each(|row| {
            for (o, x) in row.iter_mut().zip(&b) {
                *o += x;
            }
        });
    }
    Ok(())
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
fn norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    x.par_chunks(w.len())
        .zip(out.par_chunks_mut(w.len()))
        .with_min_len(16)
        .for_each(|(x, o)| norm_row(x, w, eps, o));
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
fn swiglu(gate_up: &[f32], width: usize, out: &mut [f32]) {
    out.par_chunks_mut(width)
        .zip(gate_up.par_chunks(2 * width))
        .with_min_len(16)
        .for_each(|(o, gu)| {
            let (g, u) = gu.split_at(width);
            for ((o, g), u) in o.iter_mut().zip(g).zip(u) {
                *o = g / (1.0 + (-g).exp()) * u;
            }
        });
}
