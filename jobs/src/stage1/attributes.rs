//! `synpref annotate`: the five LLM-written preference attributes of DESIGN §1 per pair —
//! task category (the 12 Magpie classes), objectivity, controversiality, desired
//! attributes and an annotation guideline — asked with a JSON schema and validated,
//! written as the columns curate, retrieval and the judges already read.
//!
//! Output under `--out`: `pairs.jsonl` (every valid input pair, attributes filled; a pair
//! whose every answer was invalid keeps the attributes it had and gets an
//! `attributes_error` column with the reason) and `report.json` (written last). Input
//! rows that are not valid pairs are counted, not written (curate would quarantine
//! them): input_rows = annotated + failed + already_annotated + invalid_rows.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use synpref_engine::model::PreferencePair;
use synpref_engine::store::resolve;
use synpref_engine::{Error, Result};

use super::llm::{
    clip, cut, json_object, AnswerSchema, ChatMessage, ChatRequest, LlmClient, LlmSettings,
    LlmUsage,
};
use super::retrieve::conversation_text;
use crate::read::load_eval_set;

/// The Magpie task taxonomy (Xu et al. 2024), as DESIGN §1 lists it.
pub const TASK_CATEGORIES: [&str; 12] = [
    "information seeking",
    "coding & debugging",
    "advice seeking",
    "math",
    "creative writing",
    "reasoning",
    "planning",
    "data analysis",
    "editing",
    "role playing",
    "brainstorming",
    "other",
];
pub const OBJECTIVITY: [&str; 2] = ["objective", "subjective"];
pub const CONTROVERSIALITY: [&str; 3] = ["low", "medium", "high"];

/// The settings of `annotate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnnotateSpec {
    pub pairs: String,
    /// A local directory.
    pub out: PathBuf,
    /// The model at the LLM server.
    pub model: String,
    pub llm: LlmSettings,
    /// Characters kept of each conversation or reply in the prompt.
    pub max_text_chars: usize,
    /// Completion tokens allowed (five short fields).
    pub max_tokens: u32,
    /// Re-annotate pairs that already have all five attributes.
    pub overwrite: bool,
    /// Where LLM answers are cached (default OUT/cache).
    pub cache: Option<PathBuf>,
    pub progress: bool,
}

/// The attributes an answer must give.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairAttributes {
    pub task_category: String,
    pub objectivity: String,
    pub controversiality: String,
    pub desired_attributes: String,
    pub guideline: String,
}

fn schema() -> AnswerSchema {
    AnswerSchema {
        name: "preference_attributes".into(),
        schema: serde_json::json!({
            "type": "object",
            "properties": {
                "task_category": {"type": "string", "enum": TASK_CATEGORIES},
                "objectivity": {"type": "string", "enum": OBJECTIVITY},
                "controversiality": {"type": "string", "enum": CONTROVERSIALITY},
                "desired_attributes": {"type": "string"},
                "guideline": {"type": "string"}
            },
            "required": ["task_category", "objectivity", "controversiality", "desired_attributes", "guideline"],
            "additionalProperties": false
        }),
    }
}

/// Validates an answer: the three closed fields in their vocabularies (case and spacing
/// forgiven), the two free-text fields non-empty. The `Err` is a free-text reason
/// recorded as the pair's annotation error (see `llm::Answer::value`), not an exit.
pub fn parse_attributes(text: &str) -> std::result::Result<PairAttributes, String> {
    let mut a: PairAttributes = json_object(text)?;
    let norm = |s: &str| {
        s.trim()
            .to_lowercase()
            .replace(['_', '-'], " ")
            .replace(" and ", " & ")
    };
    let pick = |field: &str, v: &str, allowed: &[&str]| -> std::result::Result<String, String> {
        let n = norm(v);
        allowed
            .iter()
            .find(|x| **x == n)
            .map(|x| x.to_string())
            .ok_or_else(|| {
                format!(
                    "{field} `{}` is not one of {}",
                    clip(v, 40),
                    allowed.join(", ")
                )
            })
    };
    a.task_category = pick("task_category", &a.task_category, &TASK_CATEGORIES)?;
    a.objectivity = pick("objectivity", &a.objectivity, &OBJECTIVITY)?;
    a.controversiality = pick("controversiality", &a.controversiality, &CONTROVERSIALITY)?;
    for (f, v) in [
        ("desired_attributes", &a.desired_attributes),
        ("guideline", &a.guideline),
    ] {
        if v.trim().is_empty() {
            return Err(format!("{f} is empty"));
        }
    }
    Ok(a)
}

/// The request for one pair.
pub fn request(p: &PreferencePair, spec: &AnnotateSpec) -> ChatRequest {
    let n = spec.max_text_chars;
    let system = format!(
        "You annotate preference data for reward-model training. For a conversation and two \
candidate responses, give a JSON object with:\n- task_category: one of {}\n- objectivity: \
objective (one correct answer) or subjective\n- controversiality: low, medium or high\n- \
desired_attributes: the qualities an ideal response needs here (one sentence)\n- guideline: \
how an annotator should decide which response is better for this conversation (one or two \
sentences)",
        TASK_CATEGORIES.join(", ")
    );
    let user = format!(
        "[Conversation]\n{}\n\n[Response 1]\n{}\n\n[Response 2]\n{}\n\nAnswer with the JSON object only.",
        cut(&conversation_text(&p.prompt), n),
        cut(&conversation_text(&p.chosen), n),
        cut(&conversation_text(&p.rejected), n),
    );
    ChatRequest {
        model: spec.model.clone(),
        messages: vec![
            ChatMessage::new("system", system),
            ChatMessage::new("user", user),
        ],
        temperature: 0.0,
        max_tokens: spec.max_tokens,
        seed: 0,
        schema: Some(schema()),
    }
}

/// What `annotate` did (`report.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnnotateReport {
    pub spec: AnnotateSpec,
    pub input_rows: u64,
    /// Rows that are not valid pairs (not written).
    pub invalid_rows: u64,
    pub annotated: usize,
    /// Pairs whose every answer was invalid (written with `attributes_error`).
    pub failed: usize,
    /// Pairs that had all five attributes and were left as they were.
    pub already_annotated: usize,
    /// Pairs per task category, in TASK_CATEGORIES order.
    pub task_categories: Vec<(String, usize)>,
    pub llm: LlmUsage,
    pub elapsed_s: f64,
}

fn complete(p: &PreferencePair) -> bool {
    let a = &p.attributes;
    [
        &a.task_category,
        &a.objectivity,
        &a.controversiality,
        &a.desired_attributes,
        &a.guideline,
    ]
    .iter()
    .all(|v| v.as_deref().is_some_and(|s| !s.is_empty()))
}

/// Runs `annotate`.
pub fn run_annotate(spec: &AnnotateSpec) -> Result<AnnotateReport> {
    let started = Instant::now();
    std::fs::create_dir_all(&spec.out)
        .map_err(|e| Error::other(spec.out.display().to_string(), e))?;
    let _ = std::fs::remove_file(spec.out.join("report.json"));
    let set = load_eval_set(&spec.pairs, 8192)?;
    let mut settings = spec.llm.clone();
    settings.cache_dir = Some(
        spec.cache
            .clone()
            .unwrap_or_else(|| spec.out.join("cache"))
            .join("llm"),
    );
    settings.progress = spec.progress;
    let client = LlmClient::new(settings)?;
    let todo: Vec<usize> = (0..set.pairs.len())
        .filter(|&i| spec.overwrite || !complete(&set.pairs[i]))
        .collect();
    let requests: Vec<ChatRequest> = todo.iter().map(|&i| request(&set.pairs[i], spec)).collect();
    let (answers, usage) = client.complete_all("annotate", &requests, &parse_attributes)?;
    let mut pairs = set.pairs;
    let mut errors: Vec<Option<String>> = vec![None; pairs.len()];
    let (mut annotated, mut failed) = (0, 0);
    for (&i, a) in todo.iter().zip(answers) {
        match a.value {
            Ok(v) => {
                let at = &mut pairs[i].attributes;
                at.task_category = Some(v.task_category);
                at.objectivity = Some(v.objectivity);
                at.controversiality = Some(v.controversiality);
                at.desired_attributes = Some(v.desired_attributes);
                at.guideline = Some(v.guideline);
                annotated += 1;
            }
            Err(reason) => {
                errors[i] = Some(reason);
                failed += 1;
            }
        }
    }
    let path = spec.out.join("pairs.jsonl");
    let rows = pairs.iter().zip(&errors).map(|(p, err)| {
        let mut v = synpref_engine::side::pair_to_json(p);
        if let (Some(e), Some(m)) = (err, v.as_object_mut()) {
            m.insert("attributes_error".into(), e.clone().into());
        }
        v
    });
    synpref_engine::output::write_json_lines(&resolve(&path.display().to_string())?, rows)?;
    let task_categories = TASK_CATEGORIES
        .iter()
        .map(|c| {
            (
                c.to_string(),
                pairs
                    .iter()
                    .filter(|p| p.attributes.task_category.as_deref() == Some(c))
                    .count(),
            )
        })
        .collect();
    let report = AnnotateReport {
        spec: spec.clone(),
        input_rows: set.input_rows,
        invalid_rows: set.invalid_rows,
        annotated,
        failed,
        already_annotated: pairs.len() - todo.len(),
        task_categories,
        llm: usage,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    synpref_engine::output::write_json(
        &resolve(&spec.out.join("report.json").display().to_string())?,
        &report,
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_validated_against_the_vocabularies() {
        let ok = r#"{"task_category": "Coding and Debugging", "objectivity": "objective", "controversiality": "LOW", "desired_attributes": "correct code", "guideline": "prefer code that runs"}"#;
        let a = parse_attributes(ok).unwrap();
        assert_eq!(a.task_category, "coding & debugging");
        assert_eq!(a.controversiality, "low");
        let bad = ok.replace("objective\"", "neutral\"");
        assert!(parse_attributes(&bad).unwrap_err().contains("objectivity"));
        let empty = ok.replace("prefer code that runs", " ");
        assert!(parse_attributes(&empty)
            .unwrap_err()
            .contains("guideline is empty"));
    }
}
