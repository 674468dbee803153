//! The decoder's packed forward pass on CUDA in bf16: the same packed, unpadded batch
//! as the CPU path (`packed.rs`), attention by FlashAttention-2's `flash_attn_varlen`
//! (candle-flash-attn), as text-embeddings-inference runs its candle Qwen3.
//!
//! Every per-token layer (embedding, norms, products, SwiGLU) runs over exactly the
//! batch's real tokens in packed order. Attention sees a list of variable-length
//! sequences: per group, the shared prefix attending to itself, then each branch
//! attending to the prefix and to itself. The queries are the packed tokens in their
//! own order (a group's prefix and then its branches are contiguous), so neither q nor
//! the output is gathered; only the keys and values are, with the prefix's rows
//! repeated in front of each branch (a gather of rows, not a recomputation: every
//! projection and MLP runs once per prefix token). FlashAttention aligns a causal mask
//! to the bottom right when a sequence has more keys than queries, so branch query j
//! sees keys 0 ..= prefix + j, its unshared view. Grouped-query heads are read in place
//! by the kernel, and a sliding window maps to the kernel's left window (`w − 1`: a key
//! is visible when i − j < w, transformers' rule, as in the eager bias).
//!
//! Numerics: bf16 storage, f32 accumulation inside the products, the softmax and the
//! norms (candle's fused RMSNorm kernel rounds once, after the weight, where
//! transformers rounds before it: a difference within bf16 rounding, measured by
//! `scripts/gpu-check.sh` against the eager path). The build of candle-flash-attn that
//! `scripts/build-cuda.sh` makes holds the bf16 kernels of head size 128 only (smaller
//! head sizes run on them, masked), hence the checks of `flash_supports`.

use std::ops::Range;

use candle_core::{DType, Device};
#[cfg(feature = "cuda")]
use candle_core::{Module, Tensor, D};

#[cfg(feature = "cuda")]
use super::OpTimes;

use super::super::packed::PackedBatch;
#[cfg(feature = "cuda")]
use super::{Block, DecoderRm};

/// Whether the flash path can run a model of this device, dtype and head size with the
/// kernels `scripts/build-cuda.sh` builds (bf16, head size a multiple of 8, ≤ 128).
pub(super) fn flash_supports(device: &Device, dtype: DType, head_dim: usize) -> bool {
    device.is_cuda() && dtype == DType::BF16 && head_dim % 8 == 0 && head_dim <= 128
}

/// The varlen description of a packed batch's attention: cumulative query and key
/// lengths per attention sequence, the packed row of every key, the longest sequences.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct Varlen {
    cu_q: Vec<u32>,
    cu_k: Vec<u32>,
    key_rows: Vec<u32>,
    max_q: usize,
    max_k: usize,
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
impl Varlen {
    fn of(batch: &PackedBatch) -> Varlen {
        let mut v = Varlen {
            cu_q: vec![0],
            cu_k: vec![0],
            key_rows: Vec::with_capacity(batch.tokens() * 2),
            max_q: 0,
            max_k: 0,
        };
        for g in &batch.groups {
            let prefix = g.start as u32..(g.start + g.prefix) as u32;
            v.push(g.prefix, prefix.clone(), 0..0);
            for b in &g.branches {
                v.push(
                    b.len,
                    prefix.clone(),
                    b.start as u32..(b.start + b.len) as u32,
                );
            }
        }
        v
    }

    /// One attention sequence: `queries` rows (the next ones in packed order) over the
    /// keys `prefix` then `own`. A run with no queries has no rows and is left out.
    fn push(&mut self, queries: usize, prefix: Range<u32>, own: Range<u32>) {
        if queries == 0 {
            return;
        }
        let keys = prefix.len() + own.len();
        self.key_rows.extend(prefix.chain(own));
        self.cu_q
            .push(self.cu_q[self.cu_q.len() - 1] + queries as u32);
        self.cu_k.push(self.cu_k[self.cu_k.len() - 1] + keys as u32);
        self.max_q = self.max_q.max(queries);
        self.max_k = self.max_k.max(keys);
    }
}

#[cfg(feature = "cuda")]
impl DecoderRm {
    /// Rewards of a packed batch on CUDA (bf16, flash attention), one per pooled row.
    /// With `times`, each kind of operation is bracketed by device synchronisations and
    /// its seconds added there (the kernel table of `examples/bench_ops.rs`; the
    /// synchronisations cost time, so scoring passes `None` and adds none).
    pub(super) fn forward_packed_flash(
        &self,
        batch: &PackedBatch,
        times: Option<&mut OpTimes>,
    ) -> candle_core::Result<Vec<f32>> {
        let c = &self.config;
        let dev = &self.device;
        let mut clock = Stopwatch { times, device: dev };
        let n = batch.tokens();
        let mut x = clock.time(
            |t| &mut t.embed_s,
            || self.embed.forward(&Tensor::from_slice(&batch.ids, n, dev)?),
        )?;
        // cos/sin of every position up to the batch's largest, gathered per token (f32
        // angles, cast to bf16 as transformers casts them to the activations' dtype).
        let max_position = batch.positions.iter().copied().max().unwrap_or(0) as usize;
        let half = self.inv_freq.len();
        let angles: Vec<f32> = (0..=max_position)
            .flat_map(|p| self.inv_freq.iter().map(move |f| p as f32 * f))
            .collect();
        let table = |f: fn(f32) -> f32| -> candle_core::Result<Tensor> {
            Tensor::from_vec(
                angles.iter().map(|&a| f(a)).collect::<Vec<f32>>(),
                (max_position + 1, half),
                dev,
            )?
            .to_dtype(self.dtype)
        };
        let positions = Tensor::from_slice(&batch.positions, n, dev)?;
        let cos = table(f32::cos)?.index_select(&positions, 0)?;
        let sin = table(f32::sin)?.index_select(&positions, 0)?;
        let varlen = Varlen::of(batch);
        let cu_q = Tensor::from_slice(&varlen.cu_q, varlen.cu_q.len(), dev)?;
        let cu_k = Tensor::from_slice(&varlen.cu_k, varlen.cu_k.len(), dev)?;
        let key_rows = Tensor::from_slice(&varlen.key_rows, varlen.key_rows.len(), dev)?;
        let attention = Attention {
            cu_q: &cu_q,
            cu_k: &cu_k,
            key_rows: &key_rows,
            varlen: &varlen,
            cos: &cos,
            sin: &sin,
        };
        for block in &self.blocks {
            let h = clock.time(|t| &mut t.add_norm_s, || fused_norm(&x, &block.input_norm))?;
            let ctx = self.flash_attention(block, &h, &attention, &mut clock)?;
            let o = clock.time(|t| &mut t.o_proj_s, || block.o.forward(&ctx))?;
            x = clock.time(|t| &mut t.add_norm_s, || x.add(&o))?;
            let h = clock.time(|t| &mut t.add_norm_s, || fused_norm(&x, &block.post_norm))?;
            let gate_up = clock.time(|t| &mut t.gate_up_s, || block.gate_up.forward(&h))?;
            let i = c.intermediate_size;
            let act = clock.time(
                |t| &mut t.swiglu_s,
                || {
                    candle_nn::ops::silu(&gate_up.narrow(D::Minus1, 0, i)?)?
                        * gate_up.narrow(D::Minus1, i, i)?
                },
            )?;
            let down = clock.time(|t| &mut t.down_s, || block.down.forward(&act))?;
            x = clock.time(|t| &mut t.add_norm_s, || x.add(&down))?;
        }
        clock.time(
            |t| &mut t.head_s,
            || {
                let pooled: Vec<u32> = batch.pooled.iter().map(|&r| r as u32).collect();
                let pooled = Tensor::from_slice(&pooled, pooled.len(), dev)?;
                let h = fused_norm(&x.index_select(&pooled, 0)?, &self.norm)?;
                self.score
                    .forward(&h)?
                    .narrow(D::Minus1, 0, 1)?
                    .squeeze(D::Minus1)?
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()
            },
        )
    }

    /// One block's self-attention on the normed input `h` ([tokens, hidden]): the fused
    /// q/k/v product, q/k RMSNorm per head and RoPE, then flash attention over the
    /// varlen sequences; [tokens, heads · head_dim].
    fn flash_attention(
        &self,
        block: &Block,
        h: &Tensor,
        a: &Attention,
        clock: &mut Stopwatch,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let n = h.dim(0)?;
        let (heads, kv_heads, dh) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let qkv = clock.time(|t| &mut t.qkv_s, || block.qkv.forward(h))?;
        let part = |from: usize, count: usize, norm: &Option<super::RmsNorm>, rope: bool| {
            let y = qkv
                .narrow(D::Minus1, from * dh, count * dh)?
                .reshape((n, count, dh))?;
            let y = match norm {
                Some(nm) => fused_norm(&y, nm)?,
                None => y,
            };
            if rope {
                candle_nn::rotary_emb::rope_thd(&y.unsqueeze(0)?.contiguous()?, a.cos, a.sin)?
                    .squeeze(0)
            } else {
                y.contiguous()
            }
        };
        let (q, k, v) = clock.time(
            |t| &mut t.qk_norm_rope_s,
            || {
                Ok((
                    part(0, heads, &block.q_norm, true)?,
                    part(heads, kv_heads, &block.k_norm, true)?.index_select(a.key_rows, 0)?,
                    part(heads + kv_heads, kv_heads, &None, false)?.index_select(a.key_rows, 0)?,
                ))
            },
        )?;
        let scale = 1.0 / (dh as f32).sqrt();
        clock.time(
            |t| &mut t.attention_s,
            || {
                candle_flash_attn::flash_attn_varlen_windowed(
                    &q,
                    &k,
                    &v,
                    a.cu_q,
                    a.cu_k,
                    a.varlen.max_q,
                    a.varlen.max_k,
                    scale,
                    block.window.map(|w| w.saturating_sub(1)),
                    Some(0),
                )?
                .reshape((n, heads * dh))
            },
        )
    }
}

/// What every layer's attention of one batch shares, uploaded once.
#[cfg(feature = "cuda")]
struct Attention<'a> {
    cu_q: &'a Tensor,
    cu_k: &'a Tensor,
    key_rows: &'a Tensor,
    varlen: &'a Varlen,
    cos: &'a Tensor,
    sin: &'a Tensor,
}

/// Adds the seconds of each timed step to `times` when there is one, synchronising the
/// device before and after so that a step's kernels, not their launches, are timed.
#[cfg(feature = "cuda")]
struct Stopwatch<'a> {
    times: Option<&'a mut OpTimes>,
    device: &'a Device,
}

#[cfg(feature = "cuda")]
impl Stopwatch<'_> {
    fn time<T>(
        &mut self,
        slot: fn(&mut OpTimes) -> &mut f64,
        step: impl FnOnce() -> candle_core::Result<T>,
    ) -> candle_core::Result<T> {
        let Some(times) = self.times.as_deref_mut() else {
            return step();
        };
        self.device.synchronize()?;
        let began = std::time::Instant::now();
        let out = step()?;
        self.device.synchronize()?;
        *slot(times) += began.elapsed().as_secs_f64();
        Ok(out)
    }
}

/// RMSNorm over the last dimension in one kernel (f32 inside, one rounding).
#[cfg(feature = "cuda")]
fn fused_norm(x: &Tensor, norm: &super::RmsNorm) -> candle_core::Result<Tensor> {
    candle_nn::ops::rms_norm(&x.contiguous()?, &norm.weight, norm.eps as f32)
}

#[cfg(test)]
mod tests {
    use super::Varlen;
    use crate::models::packed::PackedBatch;

    /// The varlen lists of a shared pair, an unshared pair and a single sequence: the
    /// prefix attends to itself, each branch to the prefix's rows and its own.
    #[test]
    fn varlen_repeats_the_prefix_keys_in_front_of_each_branch() {
        let mut batch = PackedBatch::default();
        batch.push_shared(&[&[1, 2, 3, 4], &[1, 2, 5]], 0, |s| s.len() - 1);
        batch.push_shared(&[&[7], &[8, 9]], 0, |s| s.len() - 1);
        batch.push_alone(&[6, 6], 0, |s| s.len() - 1);
        let v = Varlen::of(&batch);
        // Packed: [1 2 | 3 4 | 5] [7 | 8 9] [6 6 | (empty)]
        assert_eq!(batch.ids, vec![1, 2, 3, 4, 5, 7, 8, 9, 6, 6]);
        assert_eq!(v.cu_q, vec![0, 2, 4, 5, 6, 8, 10]);
        assert_eq!(v.key_rows, vec![0, 1, 0, 1, 2, 3, 0, 1, 4, 5, 6, 7, 8, 9]);
        assert_eq!(v.cu_k, vec![0, 2, 6, 9, 10, 12, 14]);
        assert_eq!((v.max_q, v.max_k), (2, 4));
        // Every query row is covered once, in packed order.
        assert_eq!(*v.cu_q.last().unwrap() as usize, batch.tokens());
    }
}
