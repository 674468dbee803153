//! BERT-family sentence encoders in candle (DESIGN §3): the transformer of a Hugging
//! Face `BertModel` directory (config.json, model.safetensors, tokenizer.json), then
//! mean pooling over the attention mask and L2 normalisation, as sentence-transformers'
//! `Pooling(mean)` + `Normalize` do for e.g. all-MiniLM-L6-v2.
//!
//! Written from candle_nn layers rather than taken from candle-transformers: it is a
//! hundred lines, and candle-transformers would add several hundred models' worth of
//! compile time to every build.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{
    embedding, layer_norm, linear, Embedding, LayerNorm, LayerNormConfig, Linear, VarBuilder,
};
use serde::Deserialize;

use super::batching::PaddedBatch;
use super::{load_tokenizer, ModelError};

/// The fields of a BERT config.json we use (hub and transformers-v5 forms agree on them).
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_act() -> String {
    "gelu".into()
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    out: Linear,
    out_norm: LayerNorm,
}

/// A loaded BERT encoder on one device.
pub struct BertEncoder {
    config: BertConfig,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    tokenizer: tokenizers::Tokenizer,
    device: Device,
    /// Longest input in tokens; longer texts are truncated (sentence-transformers'
    /// max_seq_length; 256 for all-MiniLM-L6-v2).
    pub max_tokens: usize,
}

impl BertEncoder {
    /// Heads of each attention layer.
    pub fn attention_heads(&self) -> usize {
        self.config.num_attention_heads
    }

    /// Loads `dir` in f32 on the CPU.
    pub fn load(dir: &Path, max_tokens: usize) -> Result<Self, ModelError> {
        let device = Device::Cpu;
        let cfg_path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::load(&cfg_path, e))?;
        let config: BertConfig =
            serde_json::from_str(&text).map_err(|e| ModelError::load(&cfg_path, e))?;
        if config.hidden_act != "gelu" {
            return Err(ModelError::load(
                &cfg_path,
                format!(
                    "hidden_act `{}` is not supported (only exact gelu)",
                    config.hidden_act
                ),
            ));
        }
        let weights = dir.join("model.safetensors");
        // SAFETY: the file is mapped read-only and not modified while the model lives.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }
            .map_err(|e| ModelError::load(&weights, e))?;
        let tokenizer = load_tokenizer(dir)?;
        let h = config.hidden_size;
        let ln = |size, vb: VarBuilder| {
            layer_norm(
                size,
                LayerNormConfig {
                    eps: config.layer_norm_eps,
                    ..Default::default()
                },
                vb,
            )
        };
        let e = vb.pp("embeddings");
        let word = embedding(config.vocab_size, h, e.pp("word_embeddings"))?;
        let position = embedding(
            config.max_position_embeddings,
            h,
            e.pp("position_embeddings"),
        )?;
        let token_type = embedding(config.type_vocab_size, h, e.pp("token_type_embeddings"))?;
        let embed_norm = ln(h, e.pp("LayerNorm"))?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            layers.push(Layer {
                query: linear(h, h, a.pp("self.query"))?,
                key: linear(h, h, a.pp("self.key"))?,
                value: linear(h, h, a.pp("self.value"))?,
                attn_out: linear(h, h, a.pp("output.dense"))?,
                attn_norm: ln(h, a.pp("output.LayerNorm"))?,
                intermediate: linear(h, config.intermediate_size, l.pp("intermediate.dense"))?,
                out: linear(config.intermediate_size, h, l.pp("output.dense"))?,
                out_norm: ln(h, l.pp("output.LayerNorm"))?,
            });
        }
        let max_tokens = max_tokens.min(config.max_position_embeddings);
        Ok(BertEncoder {
            config,
            word,
            position,
            token_type,
            embed_norm,
            layers,
            tokenizer,
            device,
            max_tokens,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// Token ids of a text with the tokenizer's special tokens, truncated to `max_tokens`
    /// (keeping the final [SEP], as sentence-transformers does).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        Ok(self.tokenize_counted(text)?.0)
    }

    /// [`Self::tokenize`], and whether the text was truncated.
    pub fn tokenize_counted(&self, text: &str) -> Result<(Vec<u32>, bool), ModelError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        let truncated = ids.len() > self.max_tokens;
        if truncated {
            let last = *ids.last().expect("non-empty");
            ids.truncate(self.max_tokens - 1);
            ids.push(last);
        }
        Ok((ids, truncated))
    }

    /// Last hidden states [B, T, H] for right-padded ids and their mask.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor, ModelError> {
        let (b, t) = ids.dims2()?;
        let positions = Tensor::arange(0u32, t as u32, &self.device)?
            .unsqueeze(0)?
            .broadcast_as((b, t))?;
        let types = ids.zeros_like()?;
        let x = self
            .word
            .forward(ids)?
            .add(&self.position.forward(&positions)?)?
            .add(&self.token_type.forward(&types)?)?;
        let mut x = self.embed_norm.forward(&x)?;
        let heads = self.config.num_attention_heads;
        let dh = self.config.hidden_size / heads;
        // Additive mask: 0 on real tokens, the most negative f32 on padding (as
        // transformers' eager attention does with torch.finfo(float32).min).
        let bias = ((mask.to_dtype(DType::F32)?.affine(-1.0, 1.0)?) * f32::MIN as f64)?
            .reshape((b, 1, 1, t))?;
        let scale = 1.0 / (dh as f64).sqrt();
        for l in &self.layers {
            let split = |y: Tensor| -> candle_core::Result<Tensor> {
                y.reshape((b, t, heads, dh))?.transpose(1, 2)?.contiguous()
            };
            let q = split(l.query.forward(&x)?)?;
            let k = split(l.key.forward(&x)?)?;
            let v = split(l.value.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&bias)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, t, heads * dh))?;
            let attn = l.attn_norm.forward(&(l.attn_out.forward(&ctx)? + &x)?)?;
            let inter = l.intermediate.forward(&attn)?.gelu_erf()?;
            x = l.out_norm.forward(&(l.out.forward(&inter)? + &attn)?)?;
        }
        Ok(x)
    }

    /// Mean-pooled, L2-normalised embeddings of already tokenised inputs.
    pub fn embed_ids(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let refs: Vec<&[u32]> = batch.iter().map(|v| v.as_slice()).collect();
        let flat = self.embed_batch(&PaddedBatch::right(&refs, 0, 0))?;
        Ok(flat
            .chunks_exact(self.hidden_size())
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Embeddings of a padded batch, `rows × hidden` floats.
    pub fn embed_batch(&self, batch: &PaddedBatch) -> Result<Vec<f32>, ModelError> {
        let (b, t) = (batch.rows, batch.width);
        let ids = Tensor::from_slice(&batch.ids, (b, t), &self.device)?;
        let mask: Vec<u32> = batch.mask.iter().map(|&m| u32::from(m)).collect();
        let mask = Tensor::from_vec(mask, (b, t), &self.device)?;
        let hidden = self.forward(&ids, &mask)?;
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&m)?.sum(1)?;
        let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norm)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// Embeddings of texts.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let ids = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<Vec<_>, _>>()?;
        self.embed_ids(&ids)
    }
}
