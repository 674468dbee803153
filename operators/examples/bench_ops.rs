//! Times the packed forward pass of an `hf:` decoder reward model operation by
//! operation (issue 26: measure before optimising), on synthetic pairs of the shape a
//! preference set has: a shared prompt and two replies.
//!
//!   cargo run --release -p synpref-operators --example bench_ops -- [--cuda] MODEL_DIR \
//!       [PAIRS=16] [PROMPT_TOKENS=200] [REPLY_TOKENS=250] [REPEATS=3]
//!
//! MODEL_DIR holds config.json and the safetensors weights (e.g. the model that
//! scripts/bench-score-cpu.sh or scripts/gpu_bench.py makes). Prints, per kind of
//! operation, the best of REPEATS passes' seconds, its share, and for the products their
//! GFLOP/s. The packed paths only: the CPU in f32, or with `--cuda` (a `cuda` build,
//! scripts/build-cuda.sh) GPU 0 in bf16 with flash attention, each step bracketed by
//! device synchronisations (which the scoring path does not add: the total here is
//! above a scoring pass's). The eager path is not covered.

use std::path::PathBuf;
use std::time::Instant;

use synpref_operators::models::decoder::{weight_files, DecoderConfig, DecoderRm, OpTimes};
use synpref_operators::models::packed::PackedBatch;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let cuda = args.first().is_some_and(|a| a == "--cuda");
    if cuda {
        args.remove(0);
    }
    let Some(dir) = args.first().map(PathBuf::from) else {
        eprintln!(
            "usage: bench_ops [--cuda] MODEL_DIR [PAIRS] [PROMPT_TOKENS] [REPLY_TOKENS] [REPEATS]"
        );
        std::process::exit(2);
    };
    let arg = |i: usize, default: usize| -> usize {
        args.get(i).map_or(default, |a| {
            a.parse().unwrap_or_else(|_| {
                eprintln!("argument {i} must be a number, not `{a}`");
                std::process::exit(2)
            })
        })
    };
    let (pairs, prompt, reply, repeats) = (arg(1, 16), arg(2, 200), arg(3, 250), arg(4, 3));
    let config = DecoderConfig::parse(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let (dtype, device) = if cuda {
        (candle_core::DType::BF16, candle_core::Device::new_cuda(0)?)
    } else {
        (candle_core::DType::F32, candle_core::Device::Cpu)
    };
    let model = DecoderRm::load(config.clone(), &weight_files(&dir)?, dtype, &device)?;
    println!(
        "{:?} in {dtype:?}, the {:?} path",
        device.location(),
        model.path()
    );
    // Token ids from a fixed recurrence inside the vocabulary; the compute per token
    // does not depend on which ids they are.
    let vocab = config.vocab_size as u64;
    let ids = |seed: u64, n: usize| -> Vec<u32> {
        (0..n as u64)
            .map(|i| ((seed * 7_919 + i * 104_729) % vocab.max(2)).max(1) as u32)
            .collect()
    };
    let mut batch = PackedBatch::default();
    for p in 0..pairs as u64 {
        let prompt_ids = ids(p, prompt);
        let chosen = [prompt_ids.clone(), ids(p + 10_000, reply)].concat();
        let rejected = [prompt_ids, ids(p + 20_000, reply)].concat();
        batch.push_shared(&[&chosen, &rejected], 0, |s| s.len() - 1);
    }
    let mut best: Option<(f64, OpTimes)> = None;
    for _ in 0..repeats.max(1) {
        let began = Instant::now();
        let (_, times) = model.rewards_packed_timed(&batch)?;
        let wall = began.elapsed().as_secs_f64();
        if best.as_ref().is_none_or(|(w, _)| wall < *w) {
            best = Some((wall, times));
        }
    }
    let (wall, t) = best.expect("at least one pass");
    let n = batch.tokens() as f64;
    let (h, layers) = (config.hidden_size as f64, config.num_hidden_layers as f64);
    let (q, kv) = (
        (config.num_attention_heads * config.head_dim) as f64,
        (config.num_key_value_heads * config.head_dim) as f64,
    );
    let f = config.intermediate_size as f64;
    // 2·m·n·k per product, over every layer.
    let gflops = |k: f64, out: f64, s: f64| 2.0 * n * k * out * layers / s / 1e9;
    println!(
        "{} pairs, {} packed tokens ({} in the sequences), {} layers; best of {} passes: {:.3} s, {:.0} tokens/s",
        pairs,
        batch.tokens(),
        batch.sequence_tokens,
        config.num_hidden_layers,
        repeats,
        wall,
        batch.sequence_tokens as f64 / wall
    );
    let rows: [(&str, f64, Option<f64>); 10] = [
        ("embed", t.embed_s, None),
        (
            "qkv product",
            t.qkv_s,
            Some(gflops(h, q + 2.0 * kv, t.qkv_s)),
        ),
        ("q/k norm + rope", t.qk_norm_rope_s, None),
        ("attention", t.attention_s, None),
        ("o product", t.o_proj_s, Some(gflops(q, h, t.o_proj_s))),
        ("residual + rmsnorm", t.add_norm_s, None),
        (
            "gate/up product",
            t.gate_up_s,
            Some(gflops(h, 2.0 * f, t.gate_up_s)),
        ),
        ("swiglu", t.swiglu_s, None),
        ("down product", t.down_s, Some(gflops(f, h, t.down_s))),
        ("score head", t.head_s, None),
    ];
    println!(
        "{:<20} {:>9} {:>7} {:>9}",
        "operation", "seconds", "share", "GFLOP/s"
    );
    for (name, s, g) in rows {
        let g = g.map_or(String::new(), |g| format!("{g:.0}"));
        println!("{name:<20} {s:>9.3} {:>6.1}% {g:>9}", 100.0 * s / wall);
    }
    Ok(())
}
