//! Causal attention over a packed batch on the CPU, in f32, without ever holding a
//! T × T score matrix: each query walks its visible keys in blocks of `KEY_BLOCK`
//! positions with an online softmax (a running maximum and sum, rescaling the partial
//! output when the maximum grows: Milakov & Gimelshein 2018, "Online normalizer
//! calculation for softmax"; the tiling of FlashAttention, Dao et al. 2022, alg. 1).
//! Memory is O(T · head_dim) per query instead of O(T²) per sequence and head.
//!
//! Grouped-query attention reads key/value head `h / rep` for query head `h` in place
//! (no repeated copies). A query sees the keys of its own sequence only (the group's
//! prefix, then its own branch: `packed`), up to its own position, and within the
//! layer's sliding window if it has one.
//!
//! Determinism: a query's result depends only on its own vector and on its sequence's
//! keys and values, visited in position order in blocks aligned to multiples of
//! `KEY_BLOCK` positions, with sums in a fixed order (explicit 16-wide partial sums,
//! which the compiler may not reorder). So it is bit-for-bit the same whatever batch,
//! batch size or prompt sharing the sequence is computed in, and whether the AVX2 or the
//! generic build of the kernel runs.

use rayon::prelude::*;

use super::packed::PackedBatch;

/// Keys per online-softmax block: 64 scores fit in a quarter of L1 with room for the
/// keys they come from (head_dim 64–128).
pub const KEY_BLOCK: usize = 64;

/// Largest head dimension the kernel's stack buffers hold (Qwen3 and Llama 3 use 128).
pub const MAX_HEAD_DIM: usize = 256;

/// Head counts and sizes of one attention layer.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Attention of every token of `batch` into `out`: `q` is [tokens, heads·head_dim], `k`
/// and `v` [tokens, kv_heads·head_dim], `out` [tokens, heads·head_dim]. `scale`
/// multiplies the dot products (1/√head_dim); `window` limits a query at position p to
/// keys at positions > p − window.
#[allow(clippy::too_many_arguments)]
pub fn packed_causal_attention(
    batch: &PackedBatch,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: Heads,
    scale: f32,
    window: Option<usize>,
    out: &mut [f32],
) {
    assert!(
        shape.head_dim <= MAX_HEAD_DIM,
        "head_dim {} > {MAX_HEAD_DIM}",
        shape.head_dim
    );
    let n = batch.tokens();
    let q_stride = shape.heads * shape.head_dim;
    assert_eq!(out.len(), n * q_stride, "attention output shape");
    // Which group and branch each packed token belongs to (branch None: the prefix).
    let mut owner: Vec<(u32, Option<u32>)> = vec![(0, None); n];
    for (g, group) in batch.groups.iter().enumerate() {
        for (branch, seg, _) in group.query_segments() {
            for o in &mut owner[seg.start..seg.start + seg.len] {
                *o = (g as u32, branch.map(|b| b as u32));
            }
        }
    }
    let ctx = Context {
        batch,
        q,
        k,
        v,
        shape,
        scale,
        window,
    };
    let avx2 = has_avx2();
    out.par_chunks_mut(q_stride)
        .with_min_len(4)
        .enumerate()
        .for_each(|(t, row)| {
            let (g, branch) = owner[t];
            let query = Query {
                token: t,
                group: g as usize,
                branch: branch.map(|b| b as usize),
                position: batch.positions[t] as usize,
            };
            if avx2 {
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    attend_avx2(&ctx, query, row)
                }
            } else {
                attend(&ctx, query, row)
            }
        });
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

struct Context<'a> {
    batch: &'a PackedBatch,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    shape: Heads,
    scale: f32,
    window: Option<usize>,
}

#[derive(Clone, Copy)]
struct Query {
    token: usize,
    group: usize,
    branch: Option<usize>,
    position: usize,
}

/// The generic kernel compiled for AVX2 (8-wide vectors); same arithmetic, same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(ctx: &Context, query: Query, out: &mut [f32]) {
    attend(ctx, query, out)
}

/// All heads of one query token into `out` ([heads·head_dim]).
#[inline(always)]
fn attend(ctx: &Context, query: Query, out: &mut [f32]) {
    let Heads {
        heads,
        kv_heads,
        head_dim: dh,
    } = ctx.shape;
    let rep = heads / kv_heads;
    let group = &ctx.batch.groups[query.group];
    let p = query.position;
    let lo = ctx.window.map_or(0, |w| (p + 1).saturating_sub(w));
    let q_row = &ctx.q[query.token * heads * dh..][..heads * dh];
    let kv_stride = kv_heads * dh;
    let mut scores = [0f32; KEY_BLOCK];
    let mut keys = [0usize; KEY_BLOCK];
    let mut acc = [0f32; MAX_HEAD_DIM];
    for h in 0..heads {
        let kvh = h / rep;
        let qh = &q_row[h * dh..(h + 1) * dh];
        let acc = &mut acc[..dh];
        acc.fill(0.0);
        let mut max = f32::NEG_INFINITY;
        let mut sum = 0f32;
        let mut block = lo / KEY_BLOCK * KEY_BLOCK;
        while block <= p {
            let from = block.max(lo);
            let to = (block + KEY_BLOCK).min(p + 1);
            let count = to - from;
            let mut block_max = f32::NEG_INFINITY;
            for (j, pos) in (from..to).enumerate() {
                let key = group.token_at(query.branch, pos);
                keys[j] = key;
                let s = dot(qh, &ctx.k[key * kv_stride + kvh * dh..][..dh]) * ctx.scale;
                scores[j] = s;
                block_max = block_max.max(s);
            }
            if block_max > max {
                // exp(−∞) = 0 on the first block: the empty partial sums stay zero.
                let correction = (max - block_max).exp();
                sum *= correction;
                for a in acc.iter_mut() {
                    *a *= correction;
                }
                max = block_max;
            }
            for j in 0..count {
                let weight = (scores[j] - max).exp();
                sum += weight;
                let value = &ctx.v[keys[j] * kv_stride + kvh * dh..][..dh];
                for (a, x) in acc.iter_mut().zip(value) {
                    *a += weight * x;
                }
            }
            block += KEY_BLOCK;
        }
        for (o, a) in out[h * dh..(h + 1) * dh].iter_mut().zip(acc.iter()) {
            *o = a / sum;
        }
    }
}

/// A dot product with 16 partial sums in a fixed order (vectorisable, deterministic).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    const W: usize = 16;
    let mut partial = [0f32; W];
    let (a16, a_tail) = a.split_at(a.len() / W * W);
    let (b16, b_tail) = b.split_at(a16.len());
    for (x, y) in a16.chunks_exact(W).zip(b16.chunks_exact(W)) {
        for i in 0..W {
            partial[i] += x[i] * y[i];
        }
    }
    let mut tail = 0f32;
    for (x, y) in a_tail.iter().zip(b_tail) {
        tail += x * y;
    }
    // Pairwise: 16 → 8 → 4 → 2 → 1.
    let mut width = W;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            partial[i] += partial[i + width];
        }
    }
    partial[0] + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain softmax attention of one sequence (no sharing), for comparison.
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        t: usize,
        shape: Heads,
        scale: f32,
        window: Option<usize>,
    ) -> Vec<f32> {
        let Heads {
            heads,
            kv_heads,
            head_dim: dh,
        } = shape;
        let mut out = vec![0f32; t * heads * dh];
        for i in 0..t {
            for h in 0..heads {
                let kvh = h / (heads / kv_heads);
                let qv = &q[(i * heads + h) * dh..][..dh];
                let visible: Vec<usize> = (0..=i)
                    .filter(|&j| window.is_none_or(|w| i - j < w))
                    .collect();
                let s: Vec<f64> = visible
                    .iter()
                    .map(|&j| {
                        let kv = &k[(j * kv_heads + kvh) * dh..][..dh];
                        qv.iter().zip(kv).map(|(a, b)| (a * b) as f64).sum::<f64>() * scale as f64
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..dh {
                    let y: f64 = visible
                        .iter()
                        .zip(&e)
                        .map(|(&j, w)| w * v[(j * kv_heads + kvh) * dh + d] as f64)
                        .sum();
                    out[(i * heads + h) * dh + d] = (y / z) as f32;
                }
            }
        }
        out
    }

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let x = (i.wrapping_mul(2654435761) ^ seed.wrapping_mul(40503)) % 10007;
                x as f32 / 5003.5 - 1.0
            })
            .collect()
    }

    fn run(
        batch: &PackedBatch,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        shape: Heads,
        scale: f32,
        window: Option<usize>,
    ) -> Vec<f32> {
        let mut out = vec![0f32; q.len()];
        packed_causal_attention(batch, q, k, v, shape, scale, window, &mut out);
        out
    }

    fn alone(t: usize) -> PackedBatch {
        let mut b = PackedBatch::default();
        let seq: Vec<u32> = (0..t as u32).collect();
        b.push_alone(&seq, 0, |s| s.len() - 1);
        b
    }

    #[test]
    fn matches_plain_softmax_attention_across_blocks_gqa_and_windows() {
        let shape = Heads {
            heads: 4,
            kv_heads: 2,
            head_dim: 24,
        };
        let t = 150; // three key blocks
        let q = noise(t * 4 * 24, 1);
        let k = noise(t * 2 * 24, 2);
        let v = noise(t * 2 * 24, 3);
        for window in [None, Some(70), Some(1)] {
            let got = run(&alone(t), &q, &k, &v, shape, 0.3, window);
            let want = reference(&q, &k, &v, t, shape, 0.3, window);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 1e-5, "{window:?} {i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn a_shared_prefix_gives_each_branch_the_bits_of_its_unshared_sequence() {
        let shape = Heads {
            heads: 2,
            kv_heads: 1,
            head_dim: 32,
        };
        let width = 2 * 32;
        let kv_width = 32;
        // Sequences: prefix 100 tokens + branch of 40, and + branch of 7.
        let (p, a, b) = (100, 40, 7);
        let (q, k, v) = (
            noise((p + a + b) * width, 4),
            noise((p + a + b) * kv_width, 5),
            noise((p + a + b) * kv_width, 6),
        );
        let ids_a: Vec<u32> = (0..(p + a) as u32).collect();
        let mut ids_b: Vec<u32> = (0..p as u32).collect();
        ids_b.extend(1000..1000 + b as u32);
        let mut shared = PackedBatch::default();
        shared.push_shared(&[&ids_a, &ids_b], 0, |s| s.len() - 1);
        let got = run(&shared, &q, &k, &v, shape, 0.2, None);
        // Unshared: sequence b laid out alone, prefix copied.
        let rows =
            |x: &[f32], w: usize, r: std::ops::Range<usize>| x[r.start * w..r.end * w].to_vec();
        let cat = |x: &[f32], w: usize| [rows(x, w, 0..p), rows(x, w, p + a..p + a + b)].concat();
        let alone_b = run(
            &alone(p + b),
            &cat(&q, width),
            &cat(&k, kv_width),
            &cat(&v, kv_width),
            shape,
            0.2,
            None,
        );
        assert_eq!(
            rows(&got, width, p + a..p + a + b),
            rows(&alone_b, width, p..p + b)
        );
        assert_eq!(rows(&got, width, 0..p), rows(&alone_b, width, 0..p));
    }
}
