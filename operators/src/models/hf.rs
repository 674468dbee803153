//! `hf:DIR`: a Hugging Face reward-model directory (Qwen3 or Llama sequence classifier)
//! scored end to end: chat template → tokenizer → decoder → score head, as the
//! Skywork-Reward-V2 model cards do it in transformers.
//!
//! Truncation policy (`max_tokens`): a conversation longer than the limit loses tokens
//! from its *start* (after the BOS the tokenizer adds, which is kept), so the end of the
//! reply, where the reward is read, always survives. A cut that stays inside the prompt
//! is counted as `prompt_truncated`; one that reaches into the reply is counted as
//! `response_truncated`, and both counts go to the job's report: nothing is cut
//! silently.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use candle_core::{DType, Device};
use synpref_engine::model::PreferencePair;

use super::batching::{run_pairs, run_sequences_counted, BatchModel, PackedModel, PaddedBatch};
use super::chat::{conversation, ChatTemplate};
use super::decoder::{weight_files, DecoderConfig, DecoderRm, ForwardPath};
use super::packed::PackedBatch;
use super::{
    load_tokenizer, AttentionChoice, ComputeStats, DTypeChoice, DeviceChoice, ModelError,
    ModelOptions, PairFeatures, TruncationStats,
};

/// A loaded `hf:DIR` reward model.
pub struct HfRewardModel {
    model: DecoderRm,
    tokenizer: tokenizers::Tokenizer,
    template: ChatTemplate,
    bos_id: Option<u32>,
    max_tokens: usize,
    token_budget: usize,
    fingerprint: String,
    prompt_truncated: AtomicU64,
    response_truncated: AtomicU64,
    compute: Mutex<ComputeStats>,
}

/// Feeds a file's bytes to a hasher in 8 MiB reads (weights can be many GB).
pub(crate) fn hash_file(h: &mut xxhash_rust::xxh3::Xxh3, path: &Path) -> Result<(), ModelError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| ModelError::load(path, e))?;
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| ModelError::load(path, e))?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

/// The device and dtype a model runs with: CUDA in bf16 when built with the `cuda`
/// feature and a GPU is present (or asked for), else the CPU in f32.
pub fn device_for(options: &ModelOptions) -> Result<(Device, DType), ModelError> {
    let want_cuda = match options.device {
        DeviceChoice::Cpu => false,
        DeviceChoice::Cuda => true,
        DeviceChoice::Auto => candle_core::utils::cuda_is_available(),
    };
    let device = if want_cuda {
        Device::new_cuda(0).map_err(|e| {
            ModelError::load(
                Path::new("--device cuda"),
                format!("no CUDA device (build with `--features cuda`): {e}"),
            )
        })?
    } else {
        Device::Cpu
    };
    let dtype = match options.dtype {
        DTypeChoice::F32 => DType::F32,
        DTypeChoice::Bf16 => DType::BF16,
        DTypeChoice::Auto if device.is_cuda() => DType::BF16,
        DTypeChoice::Auto => DType::F32,
    };
    Ok((device, dtype))
}

impl HfRewardModel {
    pub fn load(dir: &Path, options: &ModelOptions) -> Result<HfRewardModel, ModelError> {
        let cfg_path = dir.join("config.json");
        let cfg_text =
            std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::load(&cfg_path, e))?;
        let config = DecoderConfig::parse(&cfg_text).map_err(|e| ModelError::load(&cfg_path, e))?;
        let bos_id = serde_json::from_str::<serde_json::Value>(&cfg_text)
            .ok()
            .and_then(|v| v.get("bos_token_id").and_then(|x| x.as_u64()))
            .map(|x| x as u32);
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = load_tokenizer(dir)?;
        let template = ChatTemplate::from_dir(dir)?.ok_or_else(|| {
            ModelError::load(
                dir,
                "no chat template (neither chat_template.jinja nor `chat_template` in tokenizer_config.json)",
            )
        })?;
        let weights: Vec<PathBuf> = weight_files(dir)?;
        let (device, dtype) = device_for(options)?;
        let max_tokens = options
            .max_tokens
            .unwrap_or(DEFAULT_MAX_TOKENS)
            .min(config.max_position_embeddings);
        // The fingerprint covers everything that can change a reward.
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(b"synpref-hf-rm-v1\0");
        for w in &weights {
            hash_file(&mut h, w)?;
        }
        h.update(cfg_text.as_bytes());
        hash_file(&mut h, &tok_path)?;
        h.update(template.source.as_bytes());
        h.update(template.bos_token.as_deref().unwrap_or("").as_bytes());
        h.update(&(max_tokens as u64).to_le_bytes());
        h.update(format!("{dtype:?}").as_bytes());
        let mut model = DecoderRm::load(config, &weights, dtype, &device)?;
        if options.attention == AttentionChoice::Eager {
            model.use_eager();
        }
        // bf16 rewards of the flash path differ from the eager path's by rounding, so
        // they are cached apart; the CPU paths agree to ~1e-6 in f32 and share entries.
        if model.path() == ForwardPath::PackedFlash {
            h.update(b"packed-flash\0");
        }
        let fingerprint = format!("hf-{:032x}", h.digest128());
        Ok(HfRewardModel {
            model,
            tokenizer,
            template,
            bos_id,
            max_tokens,
            token_budget: options.token_budget,
            fingerprint,
            prompt_truncated: AtomicU64::new(0),
            response_truncated: AtomicU64::new(0),
            compute: Mutex::new(ComputeStats::default()),
        })
    }

    /// The chat-templated text of one reply of a pair, and the byte offset where the
    /// reply's part of it begins.
    pub fn render(
        &self,
        pair: &PreferencePair,
        reply: &synpref_engine::model::Conversation,
    ) -> Result<(String, usize), ModelError> {
        let (msgs, prompt_len) = conversation(pair, reply);
        let full = self.template.render(&msgs, false)?;
        let start = self.reply_start(&msgs[..prompt_len], &full)?;
        Ok((full, start))
    }

    /// Where the reply begins in `full`: the length of its common prefix with the prompt
    /// rendered with the generation prompt (templates may add more, e.g. Qwen3's empty
    /// think block, after the generation prompt).
    fn reply_start(&self, prompt: &[(&str, &str)], full: &str) -> Result<usize, ModelError> {
        let prefix = self.template.render(prompt, true)?;
        Ok(full
            .bytes()
            .zip(prefix.bytes())
            .take_while(|(a, b)| a == b)
            .count())
    }

    /// Token ids of one reply of a pair, truncated by the policy in the module docs.
    pub fn tokenize(
        &self,
        pair: &PreferencePair,
        reply: &synpref_engine::model::Conversation,
    ) -> Result<Vec<u32>, ModelError> {
        let (msgs, prompt_len) = conversation(pair, reply);
        let text = self.template.render(&msgs, false)?;
        let enc = self
            .tokenizer
            .encode(text.as_str(), true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        if ids.len() <= self.max_tokens {
            return Ok(ids);
        }
        // Only an over-long input needs to know where its reply begins.
        let reply_start = self.reply_start(&msgs[..prompt_len], &text)?;
        let keep_head = usize::from(self.bos_id.is_some() && ids.first() == self.bos_id.as_ref());
        let prompt_tokens = enc
            .get_offsets()
            .iter()
            .skip(keep_head)
            .take_while(|(_, end)| *end <= reply_start)
            .count();
        let cut = ids.len() - self.max_tokens;
        if cut <= prompt_tokens {
            self.prompt_truncated.fetch_add(1, Ordering::Relaxed);
        } else {
            self.response_truncated.fetch_add(1, Ordering::Relaxed);
        }
        ids.drain(keep_head..keep_head + cut);
        Ok(ids)
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }
}

/// Default longest input of an `hf:` model in tokens (a conversation plus reply; most
/// preference data fits, and it bounds the attention's T² memory on CPU).
pub const DEFAULT_MAX_TOKENS: usize = 4096;

impl BatchModel for HfRewardModel {
    fn pad_id(&self) -> u32 {
        self.model.config.pad_token_id.unwrap_or(0)
    }
    fn max_tokens(&self) -> usize {
        self.max_tokens
    }
    fn row_width(&self) -> usize {
        1
    }
    fn forward_rows(&self, batch: &PaddedBatch) -> Result<Vec<f32>, ModelError> {
        self.model.rewards(batch)
    }
    fn attention_heads(&self) -> usize {
        self.model.config.num_attention_heads
    }
}

impl PackedModel for HfRewardModel {
    fn pad_id(&self) -> u32 {
        BatchModel::pad_id(self)
    }
    fn pooled_at(&self, seq: &[u32]) -> usize {
        self.model.pooled_index(seq, seq.len())
    }
    fn forward_packed(&self, batch: &PackedBatch) -> Result<Vec<f32>, ModelError> {
        self.model.rewards_packed(batch)
    }
}

impl PairFeatures for HfRewardModel {
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    fn width(&self) -> usize {
        2
    }
    /// (r(x, y_w), r(x, y_l)) per pair, chosen and rejected scored in the same pass,
    /// their common prefix (the templated prompt) computed once.
    fn compute(&self, pairs: &[&PreferencePair]) -> Result<Vec<f32>, ModelError> {
        if !self.model.packs() {
            // CUDA and bf16: the eager path, padded per length bucket.
            return run_sequences_counted(
                self,
                pairs.len() * 2,
                |i| {
                    let p = pairs[i / 2];
                    self.tokenize(p, if i % 2 == 0 { &p.chosen } else { &p.rejected })
                },
                self.token_budget,
                &self.compute,
            );
        }
        run_pairs(
            self,
            pairs.len(),
            |i| {
                let p = pairs[i];
                Ok([self.tokenize(p, &p.chosen)?, self.tokenize(p, &p.rejected)?])
            },
            self.token_budget,
            &self.compute,
        )
    }
    fn compute_stats(&self) -> ComputeStats {
        self.compute.lock().expect("stats lock").clone()
    }
    fn truncations(&self) -> TruncationStats {
        TruncationStats {
            prompt_truncated: self.prompt_truncated.load(Ordering::Relaxed),
            response_truncated: self.response_truncated.load(Ordering::Relaxed),
            max_tokens: self.max_tokens,
        }
    }
}
