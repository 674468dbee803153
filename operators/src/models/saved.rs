//! Reward models synpref trained, saved as a directory that `synpref eval --model
//! saved:DIR` (and the fractions job's cache) loads back: `synpref_model.json` (a typed
//! card: which kind, its settings, what it was trained on) and `weights.safetensors`
//! (one f32 tensor `weights`, readable by Python's `safetensors` as well).
//!
//! Two kinds: the built-in hashed BT model (weights over 2^feature_bits hashed
//! n-grams) and a BT head over a frozen encoder's features (the encoder directory is
//! named in the card, not copied; its fingerprint is checked on load, so a changed
//! encoder is an error rather than silently different rewards).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::builtin::{HashedBtModel, TrainInfo};
use super::encoder::DenseHead;
use super::{load_encoder, EncoderScorer, ModelError, ModelOptions, RewardModel};

/// The card's file name.
pub const CARD_FILE: &str = "synpref_model.json";
/// The weights' file name.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// The card's format version; bumped when its meaning changes.
const CARD_VERSION: u32 = 1;

/// `synpref_model.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub format_version: u32,
    pub kind: SavedKind,
    /// The fingerprint the model reports (`builtin-…` or `<encoder>+head-…`).
    pub fingerprint: String,
    /// How training went (examples, held-out accuracy per epoch, chosen epoch).
    pub info: TrainInfo,
}

/// What the weights are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SavedKind {
    /// The built-in hashed BT model.
    Builtin { feature_bits: u32 },
    /// A BT head over `encoder`'s features `[e(x), e(y_w), e(y_l)]`.
    EncoderHead {
        encoder: PathBuf,
        /// The encoder's feature fingerprint when the head was trained.
        encoder_fingerprint: String,
    },
}

/// A model to save: the built-in model, or a head with the encoder it reads.
pub enum ToSave<'a> {
    Builtin(&'a HashedBtModel),
    EncoderHead {
        head: &'a DenseHead,
        encoder: &'a Path,
        encoder_fingerprint: &'a str,
    },
}

/// Writes `model` into `dir` (created if needed): the weights first, the card last, so
/// that a directory with a card is complete.
pub fn save(dir: &Path, model: ToSave<'_>) -> Result<ModelCard, ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::load(dir, e))?;
    let (weights, card) = match model {
        ToSave::Builtin(m) => (
            &m.weights,
            ModelCard {
                format_version: CARD_VERSION,
                kind: SavedKind::Builtin {
                    feature_bits: m.feature_bits,
                },
                fingerprint: m.fingerprint(),
                info: m.info.clone(),
            },
        ),
        ToSave::EncoderHead {
            head,
            encoder,
            encoder_fingerprint,
        } => (
            &head.weights,
            ModelCard {
                format_version: CARD_VERSION,
                kind: SavedKind::EncoderHead {
                    encoder: encoder.to_path_buf(),
                    encoder_fingerprint: encoder_fingerprint.to_string(),
                },
                fingerprint: format!("{encoder_fingerprint}+head-{}", head.fingerprint()),
                info: head.info.clone(),
            },
        ),
    };
    let tensor = Tensor::from_slice(weights, weights.len(), &Device::Cpu)?;
    let path = dir.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&HashMap::from([("weights".to_string(), tensor)]), &path)?;
    let card_path = dir.join(CARD_FILE);
    let text = serde_json::to_vec_pretty(&card).expect("a card serializes");
    std::fs::write(&card_path, text).map_err(|e| ModelError::load(&card_path, e))?;
    Ok(card)
}

/// Whether `dir` holds a saved model (its card).
pub fn is_saved(dir: &Path) -> bool {
    dir.join(CARD_FILE).is_file()
}

/// Reads a saved model's card.
pub fn read_card(dir: &Path) -> Result<ModelCard, ModelError> {
    let path = dir.join(CARD_FILE);
    let text = std::fs::read(&path).map_err(|e| ModelError::load(&path, e))?;
    let card: ModelCard = serde_json::from_slice(&text).map_err(|e| ModelError::load(&path, e))?;
    if card.format_version != CARD_VERSION {
        return Err(ModelError::load(
            &path,
            format!(
                "format_version {} (this synpref reads {CARD_VERSION})",
                card.format_version
            ),
        ));
    }
    Ok(card)
}

fn read_weights(dir: &Path, expected: usize) -> Result<Vec<f32>, ModelError> {
    let path = dir.join(WEIGHTS_FILE);
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
        .map_err(|e| ModelError::load(&path, e))?;
    let w = tensors
        .get("weights")
        .ok_or_else(|| ModelError::load(&path, "no tensor named `weights`"))?
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    if w.len() != expected {
        return Err(ModelError::load(
            &path,
            format!("{} weights where the card implies {expected}", w.len()),
        ));
    }
    Ok(w)
}

/// Loads a saved model as a reward model; an encoder head loads its encoder with
/// `options` and its features' cache under `cache_url`.
pub fn load(
    dir: &Path,
    options: &ModelOptions,
    cache_url: Option<&str>,
) -> Result<Arc<dyn RewardModel>, ModelError> {
    let card = read_card(dir)?;
    match &card.kind {
        SavedKind::Builtin { feature_bits } => {
            if !(1..=30).contains(feature_bits) {
                return Err(ModelError::load(
                    &dir.join(CARD_FILE),
                    format!("feature_bits {feature_bits} is out of range"),
                ));
            }
            let weights = read_weights(dir, 1usize << feature_bits)?;
            Ok(Arc::new(HashedBtModel {
                feature_bits: *feature_bits,
                weights,
                info: card.info.clone(),
            }))
        }
        SavedKind::EncoderHead {
            encoder,
            encoder_fingerprint,
        } => {
            let features = load_encoder(encoder, options, cache_url)?;
            if features.features.fingerprint() != encoder_fingerprint {
                return Err(ModelError::load(
                    &dir.join(CARD_FILE),
                    format!(
                        "the head was trained on encoder features {encoder_fingerprint}, but {} now gives {} (another encoder, max length or dtype)",
                        encoder.display(),
                        features.features.fingerprint()
                    ),
                ));
            }
            let dims = 2 * features.features.width() / 3;
            let weights = read_weights(dir, dims)?;
            Ok(Arc::new(EncoderScorer {
                features,
                head: DenseHead {
                    weights,
                    info: card.info.clone(),
                },
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::builtin::{TrainExample, TrainSettings};
    use crate::models::features::{response_features, SparseFeatures};

    #[test]
    fn a_saved_builtin_model_loads_back_with_the_same_weights_and_fingerprint() {
        let settings = TrainSettings {
            feature_bits: 12,
            ..TrainSettings::default()
        };
        let examples: Vec<TrainExample> = (0..50)
            .map(|i| {
                let (mut w, mut l) = (SparseFeatures::default(), SparseFeatures::default());
                response_features(&format!("good answer {i}"), 0, 12, &mut w);
                response_features(&format!("bad reply {i}"), 0, 12, &mut l);
                TrainExample {
                    pair_id: format!("p{i}"),
                    winner: w,
                    loser: l,
                }
            })
            .collect();
        let model = HashedBtModel::train(examples, Vec::new(), &settings, |_, _| {});
        let dir = std::env::temp_dir().join(format!("synpref-saved-{}", std::process::id()));
        let card = save(&dir, ToSave::Builtin(&model)).unwrap();
        assert_eq!(read_card(&dir).unwrap(), card);
        let loaded = load(&dir, &ModelOptions::default(), None).unwrap();
        assert_eq!(loaded.fingerprint(), model.fingerprint());
        // A truncated weights file is an error naming it, not a model.
        std::fs::write(dir.join(WEIGHTS_FILE), b"not safetensors").unwrap();
        let err = load(&dir, &ModelOptions::default(), None).err().unwrap();
        assert!(err.to_string().contains(WEIGHTS_FILE), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
