//! Packed, unpadded batches with prompt sharing (issue 26): the packed forward pass
//! gives transformers' rewards on the decoder fixtures (unpadded sequences, the pad id
//! inside content and as the last token, a one-token sequence); a pair whose replies
//! share their prompt gets, bit for bit, the rewards of its sequences computed apart,
//! also with nothing shared, identical or nested replies, and an empty sequence; and a
//! pair's rewards do not depend on the token budget that batches it.

use super::*;
use synpref_operators::models::batching::PaddedBatch;
use synpref_operators::models::decoder::{DecoderConfig, DecoderRm};
use synpref_operators::models::packed::PackedBatch;

fn load_decoder(name: &str) -> DecoderRm {
    let dir = fixture(name);
    let config =
        DecoderConfig::parse(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    DecoderRm::load(
        config,
        &[dir.join("model.safetensors")],
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap()
}

/// Each sequence of a right-padded section, without its padding.
fn real_rows(section: &Value) -> Vec<Vec<u32>> {
    u32_rows(&section["input_ids"])
        .into_iter()
        .zip(u32_rows(&section["attention_mask"]))
        .map(|(ids, mask)| ids[..mask.iter().filter(|&&m| m == 1).count()].to_vec())
        .collect()
}

fn packed_alone(model: &DecoderRm, seqs: &[Vec<u32>]) -> Vec<f32> {
    let pad = model.config.pad_token_id.unwrap_or(0);
    let mut batch = PackedBatch::default();
    for s in seqs {
        batch.push_alone(s, pad, |s| model.pooled_index(s, s.len()));
    }
    model.rewards_packed(&batch).unwrap()
}

fn packed_matches_transformers(name: &str, tol: f32) {
    let model = load_decoder(name);
    assert!(model.packs(), "the CPU in f32 takes the packed path");
    let expected = json_file(&fixture(name).join("expected.json"));
    // All sequences of different lengths in one packed batch.
    let right = real_rows(&expected["right_padded"]);
    let got = packed_alone(&model, &right);
    let want = f32s(&expected["unpadded_single"]["rewards_f32"]);
    assert_close(&got, &want, tol, &format!("{name} packed"));
    // The pad id inside content and as the last real token, and a one-token sequence.
    let edge = real_rows(&expected["edge_cases"]);
    let got = packed_alone(&model, &edge);
    assert_close(
        &got,
        &f32s(&expected["edge_cases"]["rewards_f32"]),
        tol,
        &format!("{name} packed edge cases"),
    );
}

#[test]
fn packed_batches_give_transformers_rewards_on_the_qwen3_fixture() {
    packed_matches_transformers("qwen3_rm", 1.3e-5);
}

#[test]
fn packed_batches_give_transformers_rewards_on_the_llama_fixture() {
    packed_matches_transformers("llama_rm", 3.5e-5);
}

/// Pairs of the fixture's sequences that share a prompt, nothing, everything or all of
/// one reply, and an empty sequence beside a real one.
fn sharing_cases(rows: &[Vec<u32>]) -> Vec<[Vec<u32>; 2]> {
    let long = &rows[1]; // 16 tokens
    let extend = |base: &[u32], tail: &[u32]| [base, tail].concat();
    vec![
        // A 6-token prompt, replies of 10 and 3 tokens.
        [long.clone(), extend(&long[..6], &[17, 18, 19])],
        // Nothing in common (an empty prompt under a template-free tokenisation).
        [vec![40, 41, 42], vec![50, 51]],
        // Identical replies, and one reply the prefix of the other.
        [rows[0].clone(), rows[0].clone()],
        [rows[2].clone(), extend(&rows[2], &[60, 61])],
        // An empty sequence beside a real one.
        [vec![], rows[3].clone()],
    ]
}

#[test]
fn prompt_sharing_gives_each_reply_the_bits_of_its_sequence_computed_alone() {
    for name in ["qwen3_rm", "llama_rm"] {
        let model = load_decoder(name);
        let expected = json_file(&fixture(name).join("expected.json"));
        let rows = real_rows(&expected["right_padded"]);
        let pairs = sharing_cases(&rows);
        let pad = model.config.pad_token_id.unwrap_or(0);
        let mut shared = PackedBatch::default();
        for [a, b] in &pairs {
            shared.push_shared(&[a, b], pad, |s| model.pooled_index(s, s.len()));
        }
        let unshared: usize = pairs
            .iter()
            .map(|[a, b]| a.len().max(1) + b.len().max(1))
            .sum();
        assert!(shared.tokens() < unshared, "{name}: sharing saves tokens");
        let got = model.rewards_packed(&shared).unwrap();
        let singles: Vec<Vec<u32>> = pairs.iter().flat_map(|p| p.clone()).collect();
        let alone = packed_alone(&model, &singles);
        for (i, (a, b)) in got.iter().zip(&alone).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{name} sequence {i}: {a} vs {b}");
        }
        // And within tolerance of the eager (transformers-order) computation.
        let eager: Vec<f32> = singles
            .iter()
            .map(|s| {
                model
                    .rewards(&PaddedBatch::right(&[s.as_slice()], 0, pad))
                    .unwrap()[0]
            })
            .collect();
        assert_close(&got, &eager, 3.5e-5, &format!("{name} shared vs eager"));
    }
}

/// The packed CUDA path (flash attention, bf16) against transformers' bf16 rewards and
/// the eager path, shared and unshared, on the GPU (`SYNPREF_TEST_DEVICE=cuda` in a cuda
/// build: scripts/gpu-check.sh). Elsewhere bf16 has no packed path, and the model says
/// so rather than taking packed batches.
#[test]
fn packed_flash_path_matches_transformers_and_eager_in_bf16_on_the_gpu() {
    use synpref_operators::models::decoder::ForwardPath;
    let device = parity_device();
    // The bf16 tolerances of the eager parity tests (decoder_fixture_parity).
    for (name, tol) in [("qwen3_rm", 0.084), ("llama_rm", 0.18)] {
        let dir = fixture(name);
        let config =
            DecoderConfig::parse(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let model = DecoderRm::load(
            config,
            &[dir.join("model.safetensors")],
            candle_core::DType::BF16,
            &device,
        )
        .unwrap();
        if device.is_cpu() || !cfg!(feature = "cuda") {
            assert_eq!(
                model.path(),
                ForwardPath::Eager,
                "{name}: bf16 off CUDA is eager"
            );
            assert!(model.rewards_packed(&PackedBatch::default()).is_err());
            continue;
        }
        assert_eq!(
            model.path(),
            ForwardPath::PackedFlash,
            "{name}: CUDA bf16 packs"
        );
        let expected = json_file(&dir.join("expected.json"));
        let rows = real_rows(&expected["right_padded"]);
        let got = packed_alone(&model, &rows);
        let want = f32s(&expected["right_padded"]["rewards_bf16"]);
        assert_close(
            &got,
            &want,
            tol,
            &format!("{name} flash vs transformers bf16"),
        );
        let pad = model.config.pad_token_id.unwrap_or(0);
        let pairs = sharing_cases(&rows);
        let mut shared = PackedBatch::default();
        for [a, b] in &pairs {
            shared.push_shared(&[a, b], pad, |s| model.pooled_index(s, s.len()));
        }
        let got = model.rewards_packed(&shared).unwrap();
        let singles: Vec<Vec<u32>> = pairs.iter().flat_map(|p| p.clone()).collect();
        let alone = packed_alone(&model, &singles);
        assert_close(&got, &alone, tol, &format!("{name} flash shared vs alone"));
        let eager: Vec<f32> = singles
            .iter()
            .map(|s| {
                model
                    .rewards(&PaddedBatch::right(&[s.as_slice()], 0, pad))
                    .unwrap()[0]
            })
            .collect();
        assert_close(&got, &eager, tol, &format!("{name} flash shared vs eager"));
        let worst = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        eprintln!(
            "{name} flash bf16: max |shared - alone| {:.3e}, max |shared - eager| {:.3e}",
            worst(&got, &alone),
            worst(&got, &eager)
        );
    }
}

#[test]
fn packed_pair_rewards_do_not_depend_on_the_token_budget() {
    use synpref_operators::models::hf::HfRewardModel;
    use synpref_operators::models::{ModelOptions, PairFeatures};
    let dir = fixture("qwen3_rm_chat");
    let pairs: Vec<synpref_engine::model::PreferencePair> = (0..30)
        .map(|i| {
            let words = |n: usize, salt: usize| {
                (0..n)
                    .map(|j| ["data", "reward", "pair", "model", "label"][(j * 7 + salt) % 5])
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            use synpref_engine::model::{Conversation, PreferencePair, RowKey};
            PreferencePair {
                key: RowKey(i as u64),
                row: i as u64,
                ..PreferencePair::outside_pool(
                    format!("p{i}"),
                    Conversation::Text(words(i % 7 * 9, i)),
                    Conversation::Text(words(3 + i * 5 % 40, i + 1)),
                    Conversation::Text(words(1 + i * 3 % 30, i + 2)),
                )
            }
        })
        .collect();
    let refs: Vec<&synpref_engine::model::PreferencePair> = pairs.iter().collect();
    let score = |budget: usize| {
        let options = ModelOptions {
            token_budget: budget,
            ..ModelOptions::default()
        };
        let model = HfRewardModel::load(&dir, &options).unwrap();
        let got = model.compute(&refs).unwrap();
        (got, model.compute_stats())
    };
    let (want, stats) = score(1);
    assert_eq!(stats.batches, 30, "budget 1: one pair per batch");
    assert!(stats.computed_tokens < stats.sequence_tokens, "{stats:?}");
    for budget in [50, 300, 100_000] {
        let (got, stats) = score(budget);
        assert!(stats.batches < 30 || budget == 50, "{budget}: {stats:?}");
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "reward {i}, token budget {budget}"
            );
        }
    }
}
