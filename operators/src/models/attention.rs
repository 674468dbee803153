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
//! Work is cut into tiles of up to `QUERY_TILE` queries of one sequence under one
//! key/value head; a tile gathers each block of keys once, transposed, and computes the
//! block's scores for all its queries as sums over head_dim vectorised across keys.
//!
//! Determinism: a query's result depends only on its own vector and on its sequence's
//! keys and values, visited in position order in blocks aligned to multiples of
//! `KEY_BLOCK` positions, each score a sum over head_dim in order and each product
//! fused (`mul_add`, correctly rounded on every path). So it is bit-for-bit the same
//! whatever batch, batch size, tile or prompt sharing the sequence is computed in, and
//! whether the AVX2 or the generic build of the kernel runs.

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
    let tiles = tiles(batch, shape.kv_heads);
    let ctx = Context {
        batch,
        q,
        k,
        v,
        shape,
        scale,
        window,
    };
    let out = SharedOut(out.as_mut_ptr());
    let avx2 = has_avx2();
    tiles.par_iter().for_each(|tile| {
        if avx2 {
            // SAFETY: the CPU has AVX2 and FMA (checked above); tiles write disjoint
            // parts of `out` (see `SharedOut`).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                attend_tile_avx2(&ctx, tile, &out)
            }
        } else {
            // SAFETY: as above, disjoint writes.
            unsafe { attend_tile(&ctx, tile, &out) }
        }
    });
}

/// Queries per tile: the key block, gathered and transposed once, serves them all.
const QUERY_TILE: usize = 32;

/// A run of queries of one segment (a prefix or a branch) under one key/value head:
/// the unit of work. Its output is rows `first_token..first_token + len`, heads
/// `kv_head·rep..(kv_head + 1)·rep`: no two tiles share an output element.
struct Tile {
    group: usize,
    branch: Option<usize>,
    first_token: usize,
    first_position: usize,
    len: usize,
    kv_head: usize,
}

fn tiles(batch: &PackedBatch, kv_heads: usize) -> Vec<Tile> {
    let mut out = Vec::new();
    for (g, group) in batch.groups.iter().enumerate() {
        for (branch, seg, first_position) in group.query_segments() {
            for offset in (0..seg.len).step_by(QUERY_TILE) {
                for kv_head in 0..kv_heads {
                    out.push(Tile {
                        group: g,
                        branch,
                        first_token: seg.start + offset,
                        first_position: first_position + offset,
                        len: QUERY_TILE.min(seg.len - offset),
                        kv_head,
                    });
                }
            }
        }
    }
    out
}

/// The output buffer, written by tiles on several threads at once. Sound because
/// each element belongs to exactly one tile (`Tile`).
struct SharedOut(*mut f32);
// SAFETY: only disjoint elements are written through it, each by one thread.
unsafe impl Sync for SharedOut {}

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

/// The generic kernel compiled for AVX2 and FMA. `mul_add` is one correctly rounded
/// operation on every path (an instruction here, libm's `fmaf` in the generic build),
/// so both builds give the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_tile_avx2(ctx: &Context, tile: &Tile, out: &SharedOut) {
    attend_tile(ctx, tile, out)
}

/// One tile: for each key block (positions aligned to `KEY_BLOCK`), gather the keys
/// transposed ([head_dim, KEY_BLOCK]), then for every query and head of the tile
/// compute the block's scores (a sum over head_dim in order, vectorised across keys),
/// update the running maximum and sum, and add the weighted values.
///
/// # Safety
/// `out` must point at the [tokens, heads·head_dim] output of `ctx`, and no other tile
/// may write this tile's elements.
#[inline(always)]
unsafe fn attend_tile(ctx: &Context, tile: &Tile, out: &SharedOut) {
    let Heads {
        heads,
        kv_heads,
        head_dim: dh,
    } = ctx.shape;
    let rep = heads / kv_heads;
    let group = &ctx.batch.groups[tile.group];
    let kv_stride = kv_heads * dh;
    let q_stride = heads * dh;
    let last = tile.first_position + tile.len - 1;
    let lo_of = |p: usize| ctx.window.map_or(0, |w| (p + 1).saturating_sub(w));
    let states = tile.len * rep;
    let mut max = vec![f32::NEG_INFINITY; states];
    let mut sum = vec![0f32; states];
    let mut acc = vec![0f32; states * dh];
    let mut kt = vec![0f32; dh * KEY_BLOCK];
    let mut keys = [0usize; KEY_BLOCK];
    let mut block = lo_of(tile.first_position) / KEY_BLOCK * KEY_BLOCK;
    while block <= last {
        let end = (block + KEY_BLOCK).min(last + 1);
        for (j, pos) in (block..end).enumerate() {
            let key = group.token_at(tile.branch, pos);
            keys[j] = key;
            let row = &ctx.k[key * kv_stride + tile.kv_head * dh..][..dh];
            for (d, x) in row.iter().enumerate() {
                kt[d * KEY_BLOCK + j] = *x;
            }
        }
        for i in 0..tile.len {
            let p = tile.first_position + i;
            let lo = lo_of(p);
            if p < block || lo >= end {
                continue;
            }
            let from = lo.saturating_sub(block);
            let to = (p + 1).min(end) - block;
            let token = tile.first_token + i;
            for r in 0..rep {
                let h = tile.kv_head * rep + r;
                let q = &ctx.q[token * q_stride + h * dh..][..dh];
                let mut scores = block_scores(q, &kt);
                let state = i * rep + r;
                // Scale every score and take the maximum over the visible ones in 16
                // lanes (max is exact, so any order gives the same value; a running
                // scalar max was a quarter of the kernel's time).
                let mut lanes = [f32::NEG_INFINITY; 16];
                for (c, chunk) in scores.chunks_exact_mut(16).enumerate() {
                    for (l, s) in chunk.iter_mut().enumerate() {
                        *s *= ctx.scale;
                        let j = c * 16 + l;
                        let v = if j >= from && j < to {
                            *s
                        } else {
                            f32::NEG_INFINITY
                        };
                        lanes[l] = if v > lanes[l] { v } else { lanes[l] };
                    }
                }
                let block_max = lanes
                    .iter()
                    .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
                let acc = &mut acc[state * dh..(state + 1) * dh];
                if block_max > max[state] {
                    // exp(−∞) = 0 on the first block: the empty partial sums stay zero.
                    let correction = (max[state] - block_max).exp();
                    sum[state] *= correction;
                    for a in acc.iter_mut() {
                        *a *= correction;
                    }
                    max[state] = block_max;
                }
                let m = max[state];
                // Weights, zero outside the visible keys, summed in 16 lanes fixed by
                // position within the block (deterministic), then pairwise.
                let mut lanes = [0f32; 16];
                for (c, chunk) in scores.chunks_exact_mut(16).enumerate() {
                    for (l, s) in chunk.iter_mut().enumerate() {
                        let j = c * 16 + l;
                        let w = exp_nonpositive(*s - m);
                        *s = if j >= from && j < to { w } else { 0.0 };
                        lanes[l] += *s;
                    }
                }
                sum[state] += pairwise(lanes);
                // acc += Σ_j w_j · v_j, 32 columns at a time held in registers across
                // the block's keys.
                let value_base = tile.kv_head * dh;
                for (c, part) in acc.chunks_mut(32).enumerate() {
                    let mut a = [0f32; 32];
                    a[..part.len()].copy_from_slice(part);
                    for j in from..to {
                        let w = scores[j];
                        let value =
                            &ctx.v[keys[j] * kv_stride + value_base + c * 32..][..part.len()];
                        for (x, y) in a.iter_mut().zip(value) {
                            *x = w.mul_add(*y, *x);
                        }
                    }
                    part.copy_from_slice(&a[..part.len()]);
                }
            }
        }
        block += KEY_BLOCK;
    }
    for i in 0..tile.len {
        let token = tile.first_token + i;
        for r in 0..rep {
            let state = i * rep + r;
            let h = tile.kv_head * rep + r;
            // SAFETY: this tile's own elements (`Tile`), in bounds of the output.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(out.0.add(token * q_stride + h * dh), dh) };
            for (o, a) in dst.iter_mut().zip(&acc[state * dh..(state + 1) * dh]) {
                *o = a / sum[state];
            }
        }
    }
}

/// q · k_j for the KEY_BLOCK keys of a transposed block (`kt`: [head_dim, KEY_BLOCK]),
/// each a sum over head_dim in order. A value-returning function over a fixed-size
/// array, so that the 64 partial scores stay in vector registers across head_dim
/// instead of going through memory at every step.
#[inline(always)]
fn block_scores(q: &[f32], kt: &[f32]) -> [f32; KEY_BLOCK] {
    let mut scores = [0f32; KEY_BLOCK];
    for (&qd, row) in q.iter().zip(kt.chunks_exact(KEY_BLOCK)) {
        let row: &[f32; KEY_BLOCK] = row.try_into().expect("a block row");
        for j in 0..KEY_BLOCK {
            scores[j] = qd.mul_add(row[j], scores[j]);
        }
    }
    scores
}

/// e^x for x ≤ 0, branch-free so that it vectorises (Cephes' `expf`: x = n·ln 2 + r with
/// |r| ≤ ln 2 / 2, a degree-6 polynomial for e^r, 2^n from the exponent bits; within 2
/// ulp of libm's). Inputs below −87 (where e^x leaves the normal floats) give e^−87
/// ≈ 1.6·10⁻³⁸, which adds nothing beside the block's maximum (e^0 = 1).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 0.0);
    let n = x.mul_add(LOG2E, 0.5).floor();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut y = 1.987_569_1e-4_f32;
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        // Cephes' 5.0000001201e-1, which is 0.5 in f32.
        0.5,
    ] {
        y = y.mul_add(r, c);
    }
    let y = y.mul_add(r * r, r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The sum of 16 partial sums, pairwise (16 → 8 → 4 → 2 → 1).
#[inline(always)]
fn pairwise(mut partial: [f32; 16]) -> f32 {
    let mut width = 16;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            partial[i] += partial[i + width];
        }
    }
    partial[0]
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
    pairwise(partial) + tail
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
    fn the_vectorisable_exp_is_within_two_ulp_of_libm() {
        for i in 0..=200_000 {
            let x = -(i as f32) * 87.0 / 200_000.0;
            let (got, want) = (exp_nonpositive(x), x.exp());
            let ulp = (got.to_bits() as i64 - want.to_bits() as i64).abs();
            assert!(ulp <= 2, "exp({x}): {got} vs {want} ({ulp} ulp)");
        }
        assert!(exp_nonpositive(-1000.0) < 1e-37);
        assert_eq!(exp_nonpositive(0.0), 1.0);
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
