//! Decoder-only sequence classifiers in candle: the Qwen3 and Llama backbones of the
//! released Skywork-Reward-V2 reward models, with transformers' `score` head
//! (`Linear(hidden, num_labels, bias=False)` on the final-norm output) and its pooling
//! rule (the rightmost token whose id is not `config.pad_token_id`,
//! transformers 5.x `GenericForSequenceClassification`).
//!
//! Written from candle_nn layers: candle-transformers has no sequence-classification
//! head for these models, its Llama returns only last-position logits, and its Qwen3
//! keeps a KV cache between calls, none of which fits scoring many independent
//! sequences. The numerics follow transformers' eager attention (see
//! ../shared/fixtures/README.md, "Things a candle implementation must get right"):
//! RMSNorm in f32 cast back before the weight, q/k RMSNorm per head before RoPE (Qwen3),
//! rotate-half RoPE with optional llama3 frequency scaling, GQA by repeat-interleave,
//! additive masks of the most negative finite value, softmax in f32.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{embedding, linear_b, linear_no_bias, Embedding, Linear, VarBuilder};
use serde_json::Value;

use super::batching::PaddedBatch;
use super::packed::PackedBatch;
use super::ModelError;

mod cpu;
mod flash;
pub use cpu::OpTimes;

/// How a decoder's forward pass runs, chosen once when it loads (`DecoderRm::path`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardPath {
    /// Padded batches per length bucket, transformers' eager attention (`pooled_hidden`):
    /// every device and dtype, and the reference of the other two.
    Eager,
    /// Packed, unpadded batches with prompt sharing on the CPU in f32 (`cpu.rs`).
    PackedCpu,
    /// Packed, unpadded batches with prompt sharing on CUDA in bf16, attention by
    /// `flash_attn_varlen` (`flash.rs`; builds with `--features cuda`).
    PackedFlash,
}

impl ForwardPath {
    /// The fastest path this build has for `device`, `dtype` and `head_dim`.
    fn best(device: &Device, dtype: DType, head_dim: usize) -> ForwardPath {
        if device.is_cpu() && dtype == DType::F32 {
            ForwardPath::PackedCpu
        } else if cfg!(feature = "cuda") && flash::flash_supports(device, dtype, head_dim) {
            ForwardPath::PackedFlash
        } else {
            ForwardPath::Eager
        }
    }
}

/// The two supported backbones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Qwen3,
    Llama,
}

/// Llama-3.1 RoPE frequency scaling (`rope_type: "llama3"`).
#[derive(Clone, Debug, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: f32,
}

/// A decoder config, from either the hub form of config.json (top-level `rope_theta`
/// and `rope_scaling`, as transformers 4.x wrote the released checkpoints) or the
/// transformers-5 form (both nested in `rope_parameters`). Read with serde as
/// candle-transformers reads its configs: the file's keys in `ConfigJson` (serde
/// defaults for the optional ones), then checked and resolved here (`TryFrom`).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(try_from = "ConfigJson")]
pub struct DecoderConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub rope_scaling: Option<Llama3Scaling>,
    /// The pooling rule's pad id; `None` pools at each sequence's last token.
    pub pad_token_id: Option<u32>,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    /// Per layer: the sliding-window width, or `None` for full attention.
    pub layer_windows: Vec<Option<usize>>,
    pub max_position_embeddings: usize,
    pub num_labels: usize,
}

/// The keys of a Qwen3 or Llama config.json that the decoder reads, as the file has
/// them. A null counts as absent (`Option` with `serde(default)`).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct ConfigJson {
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub hidden_act: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Absent: `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Absent: `num_attention_heads` (no grouped-query attention).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    pub rms_norm_eps: f64,
    /// transformers 4.x: top level.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// transformers 4.x: the frequency scaling, if any.
    #[serde(default)]
    pub rope_scaling: Option<RopeJson>,
    /// transformers 5: `rope_theta` and the scaling together.
    #[serde(default)]
    pub rope_parameters: Option<RopeJson>,
    /// An integer, a list of integers (the first counts) or null.
    #[serde(default)]
    pub pad_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub mlp_bias: Option<bool>,
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub max_window_layers: Option<usize>,
    pub max_position_embeddings: usize,
    /// Its size is the number of labels when present.
    #[serde(default)]
    pub id2label: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub num_labels: Option<usize>,
}

/// `rope_scaling` (4.x) or `rope_parameters` (5).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct RopeJson {
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_type: Option<String>,
    /// The older spelling of `rope_type`. Not a serde alias: transformers 4.x copies
    /// `type` into `rope_type` and saves both, which an alias would refuse as a
    /// duplicate field.
    #[serde(default, rename = "type")]
    pub legacy_type: Option<String>,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<f64>,
}

/// Why a config.json cannot be used; the message names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON, or a key missing or of the wrong type.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A value the decoder does not support, or keys that disagree.
    #[error("{0}")]
    Unsupported(String),
}

impl TryFrom<ConfigJson> for DecoderConfig {
    type Error = ConfigError;

    fn try_from(c: ConfigJson) -> Result<DecoderConfig, ConfigError> {
        let bad = |m: String| Err(ConfigError::Unsupported(m));
        let arch = match c.model_type.as_deref() {
            Some("qwen3") => Arch::Qwen3,
            Some("llama") => Arch::Llama,
            Some(other) => {
                return bad(format!(
                    "model_type `{other}` is not supported (qwen3 and llama are)"
                ))
            }
            None => return bad("missing `model_type`".into()),
        };
        let act = c.hidden_act.as_deref().unwrap_or("silu");
        if act != "silu" {
            return bad(format!("hidden_act `{act}` is not supported (only silu)"));
        }
        let num_attention_heads = c.num_attention_heads;
        let head_dim = c.head_dim.unwrap_or(c.hidden_size / num_attention_heads);
        let num_key_value_heads = c.num_key_value_heads.unwrap_or(num_attention_heads);
        if num_attention_heads % num_key_value_heads != 0 {
            return bad(format!(
                "num_attention_heads {num_attention_heads} is not a multiple of num_key_value_heads {num_key_value_heads}"
            ));
        }
        // RoPE: transformers 5 nests everything in `rope_parameters`; 4.x has a top-level
        // `rope_theta` and an optional `rope_scaling` dict.
        let (rope, theta) = match &c.rope_parameters {
            Some(p) => (Some(p), p.rope_theta),
            None => (c.rope_scaling.as_ref(), c.rope_theta),
        };
        let Some(theta) = theta else {
            return bad(
                "missing `rope_theta` (neither top-level nor in `rope_parameters`); refusing to guess"
                    .into(),
            );
        };
        let rope_type = rope
            .and_then(|r| r.rope_type.as_deref().or(r.legacy_type.as_deref()))
            .unwrap_or("default");
        let rope_scaling = match rope_type {
            "default" => None,
            "llama3" => {
                let r = rope.expect("rope_type came from it");
                let get = |k: &str, v: Option<f64>| {
                    v.map(|x| x as f32).ok_or_else(|| {
                        ConfigError::Unsupported(format!("llama3 rope scaling without `{k}`"))
                    })
                };
                Some(Llama3Scaling {
                    factor: get("factor", r.factor)?,
                    low_freq_factor: get("low_freq_factor", r.low_freq_factor)?,
                    high_freq_factor: get("high_freq_factor", r.high_freq_factor)?,
                    original_max_position_embeddings: get(
                        "original_max_position_embeddings",
                        r.original_max_position_embeddings,
                    )?,
                })
            }
            other => {
                return bad(format!(
                    "rope_type `{other}` is not supported (default and llama3 are)"
                ))
            }
        };
        let num_hidden_layers = c.num_hidden_layers;
        // Qwen3 slides only when `use_sliding_window` is true, and then only from layer
        // `max_window_layers` on; a non-null `sliding_window` alone means nothing.
        let sliding = arch == Arch::Qwen3 && c.use_sliding_window.unwrap_or(false);
        let layer_windows = if sliding {
            let Some(window) = c.sliding_window else {
                return bad("missing or non-integer `sliding_window`".into());
            };
            let from = c.max_window_layers.unwrap_or(num_hidden_layers);
            (0..num_hidden_layers)
                .map(|i| (i >= from).then_some(window))
                .collect()
        } else {
            vec![None; num_hidden_layers]
        };
        // `tie_word_embeddings` is harmless for a classifier (no LM head): not read.
        let num_labels = c
            .id2label
            .as_ref()
            .map(|m| m.len())
            .or(c.num_labels)
            .unwrap_or(1);
        let pad_token_id = match &c.pad_token_id {
            Some(Value::Number(n)) => n.as_u64().map(|x| x as u32),
            Some(Value::Array(xs)) => xs.first().and_then(Value::as_u64).map(|x| x as u32),
            _ => None,
        };
        Ok(DecoderConfig {
            arch,
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: c.rms_norm_eps,
            rope_theta: theta as f32,
            rope_scaling,
            pad_token_id,
            attention_bias: c.attention_bias.unwrap_or(false),
            mlp_bias: c.mlp_bias.unwrap_or(false),
            layer_windows,
            max_position_embeddings: c.max_position_embeddings,
            num_labels,
        })
    }
}

impl DecoderConfig {
    /// Parses config.json text. Errors name the offending key.
    pub fn parse(text: &str) -> Result<DecoderConfig, ConfigError> {
        DecoderConfig::try_from(serde_json::from_str::<ConfigJson>(text)?)
    }

    /// RoPE inverse frequencies, in f32 as transformers computes them, with llama3
    /// scaling applied (fixtures/README.md item 4).
    pub fn inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base: Vec<f32> = (0..d)
            .step_by(2)
            .map(|i| 1.0 / self.rope_theta.powf(i as f32 / d as f32))
            .collect();
        let Some(s) = &self.rope_scaling else {
            return base;
        };
        let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
        let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
        base.into_iter()
            .map(|f| {
                let wavelen = 2.0 * std::f32::consts::PI / f;
                if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / s.factor
                } else {
                    let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                }
            })
            .collect()
    }
}

struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn load(size: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(RmsNorm {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }

    /// transformers: normalise in f32, cast back to the input dtype, then scale.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if x.dtype() == DType::F32 {
            candle_nn::ops::rms_norm(x, &self.weight, self.eps as f32)
        } else {
            candle_nn::ops::rms_norm_slow(x, &self.weight, self.eps as f32)
        }
    }
}

struct Block {
    input_norm: RmsNorm,
    /// q, k and v projections in one product (the packed path); `q`, `k`, `v` are views
    /// of its rows for the eager path.
    qkv: Linear,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    post_norm: RmsNorm,
    /// gate and up projections in one product; `gate` and `up` are views of its rows.
    gate_up: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
    window: Option<usize>,
}

/// A loaded decoder sequence classifier on one device.
pub struct DecoderRm {
    pub config: DecoderConfig,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    score: Linear,
    inv_freq: Vec<f32>,
    pub device: Device,
    pub dtype: DType,
    path: ForwardPath,
}

impl DecoderRm {
    /// Loads a model from its config and safetensors files (one, or the shards named
    /// by model.safetensors.index.json), cast to `dtype` on `device`.
    pub fn load(
        config: DecoderConfig,
        weights: &[std::path::PathBuf],
        dtype: DType,
        device: &Device,
    ) -> Result<DecoderRm, ModelError> {
        let err = |e: candle_core::Error| ModelError::Load {
            path: weights
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            message: e.to_string(),
        };
        // SAFETY: the files are mapped read-only and must not change while the model lives.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(weights, dtype, device) }.map_err(err)?;
        Self::from_varbuilder(config, vb, dtype, device).map_err(err)
    }

    fn from_varbuilder(
        config: DecoderConfig,
        vb: VarBuilder,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<DecoderRm> {
        let c = &config;
        let m = vb.pp("model");
        let embed = embedding(c.vocab_size, c.hidden_size, m.pp("embed_tokens"))?;
        let q_out = c.num_attention_heads * c.head_dim;
        let kv_out = c.num_key_value_heads * c.head_dim;
        let mut blocks = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = m.pp(format!("layers.{i}"));
            let a = l.pp("self_attn");
            let mlp = l.pp("mlp");
            let qk_norm = |name: &str| -> candle_core::Result<Option<RmsNorm>> {
                match c.arch {
                    Arch::Qwen3 => Ok(Some(RmsNorm::load(c.head_dim, c.rms_norm_eps, a.pp(name))?)),
                    Arch::Llama => Ok(None),
                }
            };
            let (qkv, views) = fused(
                &a,
                &["q_proj", "k_proj", "v_proj"],
                &[q_out, kv_out, kv_out],
                c.hidden_size,
                c.attention_bias,
            )?;
            let [q, k, v]: [Linear; 3] = views.try_into().expect("three views");
            let (gate_up, views) = fused(
                &mlp,
                &["gate_proj", "up_proj"],
                &[c.intermediate_size, c.intermediate_size],
                c.hidden_size,
                c.mlp_bias,
            )?;
            let [gate, up]: [Linear; 2] = views.try_into().expect("two views");
            blocks.push(Block {
                input_norm: RmsNorm::load(c.hidden_size, c.rms_norm_eps, l.pp("input_layernorm"))?,
                qkv,
                q,
                k,
                v,
                o: linear_b(q_out, c.hidden_size, c.attention_bias, a.pp("o_proj"))?,
                q_norm: qk_norm("q_norm")?,
                k_norm: qk_norm("k_norm")?,
                post_norm: RmsNorm::load(
                    c.hidden_size,
                    c.rms_norm_eps,
                    l.pp("post_attention_layernorm"),
                )?,
                gate_up,
                gate,
                up,
                down: linear_b(
                    c.intermediate_size,
                    c.hidden_size,
                    c.mlp_bias,
                    mlp.pp("down_proj"),
                )?,
                window: c.layer_windows[i],
            });
        }
        let norm = RmsNorm::load(c.hidden_size, c.rms_norm_eps, m.pp("norm"))?;
        let score = linear_no_bias(c.hidden_size, c.num_labels, vb.pp("score"))?;
        let inv_freq = c.inv_freq();
        let path = ForwardPath::best(device, dtype, c.head_dim);
        Ok(DecoderRm {
            config,
            embed,
            blocks,
            norm,
            score,
            inv_freq,
            device: device.clone(),
            dtype,
            path,
        })
    }

    /// The forward pass this model takes.
    pub fn path(&self) -> ForwardPath {
        self.path
    }

    /// Takes the eager path whatever the device (`--attention eager`).
    pub fn use_eager(&mut self) {
        self.path = ForwardPath::Eager;
    }

    /// The pooling rule of transformers 5.x: the rightmost position whose id is not the
    /// pad id (0 when there is none); with no pad id, the row's last real token.
    pub fn pooled_index(&self, ids: &[u32], real_len: usize) -> usize {
        match self.config.pad_token_id {
            Some(pad) => ids.iter().rposition(|&t| t != pad).unwrap_or(0),
            None => real_len.saturating_sub(1),
        }
    }

    /// Additive attention biases: the causal part, with a sliding window for layers that
    /// have one, as [1, 1, T, T] (−∞ above the diagonal), and the key padding as
    /// [B, 1, 1, T] (the most negative finite f32, as transformers' `finfo.min`). They
    /// are added to the scores one after the other, so no [B, T, T] mask is built.
    /// The diagonal is never causally masked, so even a fully padded query row (left
    /// padding) keeps a finite maximum and softmax never yields NaN; and −∞ rather than
    /// `finfo.min` for the causal part gives exactly the same zeros from exp, without
    /// libm's slow underflow path (28% of CPU time on the fixture model before).
    fn causal_bias(&self, t: usize, window: Option<usize>) -> candle_core::Result<Tensor> {
        let bias: Vec<f32> = (0..t)
            .flat_map(|i| {
                (0..t).map(move |j| {
                    let visible = j <= i && window.is_none_or(|w| i - j < w);
                    if visible {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        Tensor::from_vec(bias, (1, 1, t, t), &self.device)
    }

    fn padding_bias(&self, batch: &PaddedBatch) -> candle_core::Result<Tensor> {
        let bias: Vec<f32> = batch
            .mask
            .iter()
            .map(|&m| if m == 1 { 0.0 } else { f32::MIN })
            .collect();
        Tensor::from_vec(bias, (batch.rows, 1, 1, batch.width), &self.device)
    }

    /// The final-norm hidden state at each row's pooled position: [B, H].
    fn pooled_hidden(&self, batch: &PaddedBatch) -> candle_core::Result<Tensor> {
        let (b, t) = (batch.rows, batch.width);
        let c = &self.config;
        let ids = Tensor::from_slice(&batch.ids, (b, t), &self.device)?;
        let mut x = self.embed.forward(&ids)?;
        // Positions are arange(T) on every row, left padding included (transformers).
        let freqs: Vec<f32> = (0..t)
            .flat_map(|p| self.inv_freq.iter().map(move |f| p as f32 * f))
            .collect();
        let half = self.inv_freq.len();
        let cos = Tensor::from_vec(
            freqs.iter().map(|f| f.cos()).collect(),
            (t, half),
            &self.device,
        )?
        .to_dtype(self.dtype)?;
        let sin = Tensor::from_vec(
            freqs.iter().map(|f| f.sin()).collect(),
            (t, half),
            &self.device,
        )?
        .to_dtype(self.dtype)?;
        let causal = self.causal_bias(t, None)?;
        let padding = self.padding_bias(batch)?;
        let (heads, kv_heads, dh) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let rep = heads / kv_heads;
        let scale = 1.0 / (dh as f64).sqrt();
        for block in &self.blocks {
            let windowed;
            let causal = match block.window {
                None => &causal,
                Some(w) => {
                    windowed = self.causal_bias(t, Some(w))?;
                    &windowed
                }
            };
            let h = block.input_norm.forward(&x)?;
            let split =
                |y: Tensor, n: usize, norm: &Option<RmsNorm>| -> candle_core::Result<Tensor> {
                    let y = y.reshape((b, t, n, dh))?;
                    let y = match norm {
                        Some(nm) => nm.forward(&y)?,
                        None => y,
                    };
                    y.transpose(1, 2)?.contiguous()
                };
            let q = split(block.q.forward(&h)?, heads, &block.q_norm)?;
            let k = split(block.k.forward(&h)?, kv_heads, &block.k_norm)?;
            let v = split(block.v.forward(&h)?, kv_heads, &None)?;
            let q = candle_nn::rotary_emb::rope(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope(&k, &cos, &sin)?;
            // GQA: kv head j serves query heads j·rep … j·rep+rep−1 (repeat_interleave).
            let expand = |y: Tensor| -> candle_core::Result<Tensor> {
                if rep == 1 {
                    return Ok(y);
                }
                y.unsqueeze(2)?
                    .broadcast_as((b, kv_heads, rep, t, dh))?
                    .reshape((b, heads, t, dh))
            };
            let k = expand(k)?;
            let v = expand(v)?.contiguous()?;
            let scores = (q.matmul(&k.t()?)? * scale)?
                .to_dtype(DType::F32)?
                .broadcast_add(causal)?
                .broadcast_add(&padding)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(self.dtype)?;
            let ctx = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, t, heads * dh))?;
            x = (x + block.o.forward(&ctx)?)?;
            let h = block.post_norm.forward(&x)?;
            let act = (candle_nn::ops::silu(&block.gate.forward(&h)?)? * block.up.forward(&h)?)?;
            x = (x + block.down.forward(&act)?)?;
        }
        // Only the pooled position of each row is read: gather it before the final
        // norm and the head (both act per position, so this changes nothing but work).
        let picks: Vec<u32> = (0..b)
            .map(|r| {
                let row = &batch.ids[r * t..(r + 1) * t];
                let len = batch.mask[r * t..(r + 1) * t]
                    .iter()
                    .filter(|&&m| m == 1)
                    .count();
                (r * t + self.pooled_index(row, len)) as u32
            })
            .collect();
        let picks = Tensor::from_vec(picks, b, &self.device)?;
        let flat = x.reshape((b * t, c.hidden_size))?;
        self.norm.forward(&flat.index_select(&picks, 0)?)
    }

    /// Whether a packed forward pass serves this model (`path` is not eager).
    pub fn packs(&self) -> bool {
        self.path != ForwardPath::Eager
    }

    /// Rewards of a packed batch and the seconds each kind of operation took, by the
    /// packed path of `path` (on CUDA each step is bracketed by synchronisations, which
    /// cost time: a benchmark's kernel table, not the scoring path).
    pub fn rewards_packed_timed(
        &self,
        batch: &PackedBatch,
    ) -> Result<(Vec<f32>, OpTimes), ModelError> {
        match self.path {
            ForwardPath::PackedCpu => Ok(self.forward_packed_cpu(batch)?),
            #[cfg(feature = "cuda")]
            ForwardPath::PackedFlash => {
                let mut times = OpTimes::default();
                let rewards = self.forward_packed_flash(batch, Some(&mut times))?;
                Ok((rewards, times))
            }
            _ => Err(ModelError::Spec(format!(
                "per-operation timings cover the packed paths (CPU f32, CUDA bf16 with \
                 flash attention), not the {:?} path",
                self.path
            ))),
        }
    }

    /// Rewards of a packed batch, one per pooled row, by the packed path of `path`;
    /// `hf:` scores eager models through `batching::run_sequences`, so there is no
    /// second, unpacking route here.
    pub fn rewards_packed(&self, batch: &PackedBatch) -> Result<Vec<f32>, ModelError> {
        match self.path {
            ForwardPath::PackedCpu => Ok(self.forward_packed_cpu(batch)?.0),
            #[cfg(feature = "cuda")]
            ForwardPath::PackedFlash => Ok(self.forward_packed_flash(batch, None)?),
            _ => Err(ModelError::Spec(format!(
                "the {:?} path does not take packed batches",
                self.path
            ))),
        }
    }

    /// Rewards (the first label's logit at the pooled position) of a padded batch.
    pub fn rewards(&self, batch: &PaddedBatch) -> Result<Vec<f32>, ModelError> {
        let pooled = self.pooled_hidden(batch)?;
        let logits = self.score.forward(&pooled)?;
        Ok(logits
            .narrow(D::Minus1, 0, 1)?
            .squeeze(D::Minus1)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?)
    }
}

/// Loads the linear layers `names` (output sizes `outs`, input size `input`) of `vb` as
/// one fused layer whose weight rows are theirs one after the other, and each of them
/// as a view of its rows (no second copy of the weights).
fn fused(
    vb: &VarBuilder,
    names: &[&str],
    outs: &[usize],
    input: usize,
    bias: bool,
) -> candle_core::Result<(Linear, Vec<Linear>)> {
    let weights = names
        .iter()
        .zip(outs)
        .map(|(n, &o)| vb.pp(*n).get((o, input), "weight"))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let biases = if bias {
        let b = names
            .iter()
            .zip(outs)
            .map(|(n, &o)| vb.pp(*n).get(o, "bias"))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Some(Tensor::cat(&b, 0)?)
    } else {
        None
    };
    let weight = Tensor::cat(&weights, 0)?;
    let mut views = Vec::with_capacity(names.len());
    let mut start = 0;
    for &o in outs {
        let b = biases.as_ref().map(|b| b.narrow(0, start, o)).transpose()?;
        views.push(Linear::new(weight.narrow(0, start, o)?, b));
        start += o;
    }
    Ok((Linear::new(weight, biases), views))
}

/// The safetensors files of a model directory: model.safetensors, or every shard named
/// in model.safetensors.index.json (sorted, each once).
pub fn weight_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, ModelError> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).map_err(|e| {
        ModelError::load(
            dir,
            format!("neither model.safetensors nor model.safetensors.index.json: {e}"),
        )
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::load(&index, e))?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| ModelError::load(&index, "no `weight_map` object"))?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect();
    files.sort();
    files.dedup();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA: &str = r#"{
        "model_type": "llama", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "rope_theta": 500000, "max_position_embeddings": 128,
        "pad_token_id": [7, 8], "head_dim": null, "sliding_window": null,
        "id2label": {"0": "LABEL_0"}, "tie_word_embeddings": false,
        "rope_scaling": {"type": "llama3", "rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}
    }"#;

    #[test]
    fn config_json_reads_both_rope_spellings_nulls_and_defaults() {
        let c = DecoderConfig::parse(LLAMA).unwrap();
        assert_eq!(c.arch, Arch::Llama);
        assert_eq!((c.head_dim, c.num_key_value_heads), (4, 2));
        assert_eq!(c.pad_token_id, Some(7));
        assert_eq!(c.layer_windows, vec![None, None]);
        assert_eq!(c.rope_scaling.as_ref().map(|s| s.factor), Some(8.0));
        assert_eq!(
            (c.attention_bias, c.mlp_bias, c.num_labels),
            (false, false, 1)
        );
        // The same config as serde reads it inside another document.
        let v: DecoderConfig = serde_json::from_str(LLAMA).unwrap();
        assert_eq!(v, c);
    }

    #[test]
    fn config_json_errors_name_the_key() {
        let no_theta = LLAMA.replace("\"rope_theta\": 500000,", "");
        let e = DecoderConfig::parse(&no_theta).unwrap_err().to_string();
        assert!(e.contains("rope_theta"), "{e}");
        let gelu = LLAMA.replace(
            "\"model_type\": \"llama\",",
            "\"model_type\": \"llama\", \"hidden_act\": \"gelu\",",
        );
        let e = DecoderConfig::parse(&gelu).unwrap_err().to_string();
        assert!(e.contains("hidden_act `gelu`"), "{e}");
        let no_vocab = LLAMA.replace("\"vocab_size\": 64,", "");
        let e = DecoderConfig::parse(&no_vocab).unwrap_err().to_string();
        assert!(e.contains("vocab_size"), "{e}");
    }
}
