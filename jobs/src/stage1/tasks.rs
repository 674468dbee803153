//! The human side of Stage 1: retrieved pairs out as annotation tasks (Label Studio's
//! task import format, and Argilla dataset records), completed annotations back in as
//! gold labels (Label Studio's JSON export: verdict, annotator, timestamp).
//!
//! Annotators see the two replies as "Response A" and "Response B" in an order drawn by
//! a seeded coin per pair (as the judges do), with the order kept in the task's data
//! (`a_is_chosen`) so the import maps the choice back to the pair's chosen/rejected.
//! The models' opinions go along as Label Studio predictions / Argilla suggestions.

use serde::{Deserialize, Serialize};
use synpref_engine::model::{GoldLabel, PreferencePair, Verdict};
use synpref_engine::side::normalise_timestamp;
use synpref_engine::store::Location;
use synpref_engine::{Error, Result};

use super::retrieve::conversation_text;

/// The name of the choice control in the labelling config (and of Argilla's question).
pub const QUESTION: &str = "preference";

/// Label Studio's labelling config for synpref's tasks.
pub const LABEL_STUDIO_CONFIG: &str = r#"<View>
  <Header value="Conversation"/>
  <Text name="prompt" value="$prompt"/>
  <Header value="Guideline"/>
  <Text name="guideline" value="$guideline"/>
  <Header value="Response A"/>
  <Text name="response_a" value="$response_a"/>
  <Header value="Response B"/>
  <Text name="response_b" value="$response_b"/>
  <Choices name="preference" toName="prompt" choice="single" showInline="true" required="true">
    <Choice value="A"/>
    <Choice value="B"/>
    <Choice value="Undecidable"/>
  </Choices>
</View>
"#;

/// What the models think of a pair, sent along with its task.
#[derive(Clone, Debug, Default)]
pub struct Suggestion {
    /// The best RM's probability that the pair's chosen reply is better.
    pub best_rm_p: Option<f64>,
    /// The judges' aggregated verdict.
    pub judges: Option<Verdict>,
}

/// The data of one task (Label Studio's `data`, Argilla's fields and metadata).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskData {
    pub pair_id: String,
    pub prompt: String,
    pub guideline: String,
    pub response_a: String,
    pub response_b: String,
    /// Response A is the pair's chosen reply.
    pub a_is_chosen: bool,
    #[serde(default)]
    pub task_category: Option<String>,
    #[serde(default)]
    pub iteration: u64,
}

fn task_data(p: &PreferencePair, iteration: u64) -> TaskData {
    let a_is_chosen = super::judge::chosen_first(iteration, &p.pair_id, "human", 0);
    let reply = |c: &synpref_engine::model::Conversation| conversation_text(c);
    let (chosen, rejected) = (reply(&p.chosen), reply(&p.rejected));
    let (a, b) = if a_is_chosen {
        (chosen, rejected)
    } else {
        (rejected, chosen)
    };
    TaskData {
        pair_id: p.pair_id.clone(),
        prompt: conversation_text(&p.prompt),
        guideline: p
            .attributes
            .guideline
            .clone()
            .unwrap_or_else(|| super::judge::DEFAULT_GUIDELINE.to_string()),
        response_a: a,
        response_b: b,
        a_is_chosen,
        task_category: p.attributes.task_category.clone(),
        iteration,
    }
}

/// The choice ("A"/"B") that means `verdict` for a task.
fn choice_for(verdict: Verdict, a_is_chosen: bool) -> &'static str {
    match verdict {
        Verdict::Undecidable => "Undecidable",
        v => {
            if (v == Verdict::Chosen) == a_is_chosen {
                "A"
            } else {
                "B"
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LsChoices {
    pub choices: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LsResult {
    pub from_name: String,
    pub to_name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: LsChoices,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LsPrediction {
    pub model_version: String,
    #[serde(default)]
    pub score: Option<f64>,
    pub result: Vec<LsResult>,
}

/// A task in Label Studio's import format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LsTask {
    pub data: TaskData,
    #[serde(default)]
    pub predictions: Vec<LsPrediction>,
}

fn choice_result(choice: &str) -> LsResult {
    LsResult {
        from_name: QUESTION.into(),
        to_name: "prompt".into(),
        kind: "choices".into(),
        value: LsChoices {
            choices: vec![choice.into()],
        },
    }
}

/// The tasks of `pairs` (Label Studio's import format).
pub fn label_studio_tasks(
    pairs: &[&PreferencePair],
    suggestions: &[Suggestion],
    iteration: u64,
) -> Vec<LsTask> {
    pairs
        .iter()
        .zip(suggestions)
        .map(|(p, s)| {
            let data = task_data(p, iteration);
            let mut predictions = Vec::new();
            if let Some(prob) = s.best_rm_p {
                let v = if prob > 0.5 {
                    Verdict::Chosen
                } else {
                    Verdict::Rejected
                };
                predictions.push(LsPrediction {
                    model_version: "synpref best RM".into(),
                    score: Some(prob.max(1.0 - prob)),
                    result: vec![choice_result(choice_for(v, data.a_is_chosen))],
                });
            }
            if let Some(v) = s.judges {
                predictions.push(LsPrediction {
                    model_version: "synpref LLM judges".into(),
                    score: None,
                    result: vec![choice_result(choice_for(v, data.a_is_chosen))],
                });
            }
            LsTask { data, predictions }
        })
        .collect()
}

/// Writes `value` as pretty JSON through the object store (a local file is written to
/// a temporary name and renamed, so a reader never sees half a file).
fn write_pretty<T: Serialize>(to: &Location, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::other(to.url.clone(), e))?;
    to.put(bytes)
}

/// Writes Label Studio tasks for `pairs` to `to` (a local file or an object).
pub fn write_label_studio(
    to: &Location,
    pairs: &[&PreferencePair],
    suggestions: &[Suggestion],
    iteration: u64,
) -> Result<()> {
    write_pretty(to, &label_studio_tasks(pairs, suggestions, iteration))
}

/// An Argilla (v2) dataset: its settings and records, as `rg.Settings` and
/// `rg.Record`s take them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArgillaDataset {
    pub settings: ArgillaSettings,
    pub records: Vec<ArgillaRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArgillaSettings {
    pub guidelines: String,
    pub fields: Vec<ArgillaField>,
    pub questions: Vec<ArgillaQuestion>,
    pub metadata: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArgillaField {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArgillaQuestion {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub labels: Vec<String>,
    pub required: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArgillaRecord {
    pub id: String,
    pub fields: ArgillaFields,
    pub metadata: ArgillaMetadata,
    pub suggestions: Vec<ArgillaSuggestion>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArgillaFields {
    pub prompt: String,
    pub guideline: String,
    pub response_a: String,
    pub response_b: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArgillaMetadata {
    pub pair_id: String,
    pub a_is_chosen: bool,
    pub task_category: Option<String>,
    pub iteration: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArgillaSuggestion {
    pub question_name: String,
    pub value: String,
    pub score: Option<f64>,
    pub agent: String,
}

/// Writes `pairs` as an Argilla dataset (settings and records) to `to`.
pub fn write_argilla(
    to: &Location,
    pairs: &[&PreferencePair],
    suggestions: &[Suggestion],
    iteration: u64,
) -> Result<()> {
    let tasks = label_studio_tasks(pairs, suggestions, iteration);
    let field = |n: &str| ArgillaField {
        name: n.into(),
        kind: "text".into(),
    };
    let records = tasks
        .into_iter()
        .map(|t| ArgillaRecord {
            id: t.data.pair_id.clone(),
            suggestions: t
                .predictions
                .iter()
                .map(|p| ArgillaSuggestion {
                    question_name: QUESTION.into(),
                    value: p.result[0].value.choices[0].clone(),
                    score: p.score,
                    agent: p.model_version.clone(),
                })
                .collect(),
            fields: ArgillaFields {
                prompt: t.data.prompt,
                guideline: t.data.guideline,
                response_a: t.data.response_a,
                response_b: t.data.response_b,
            },
            metadata: ArgillaMetadata {
                pair_id: t.data.pair_id,
                a_is_chosen: t.data.a_is_chosen,
                task_category: t.data.task_category,
                iteration: t.data.iteration,
            },
        })
        .collect();
    let dataset = ArgillaDataset {
        settings: ArgillaSettings {
            guidelines: "Which response is better for the conversation, following the pair's guideline? Undecidable when neither is.".into(),
            fields: ["prompt", "guideline", "response_a", "response_b"].map(field).to_vec(),
            questions: vec![ArgillaQuestion {
                name: QUESTION.into(),
                kind: "label_selection".into(),
                labels: vec!["A".into(), "B".into(), "Undecidable".into()],
                required: true,
            }],
            metadata: vec!["pair_id".into(), "a_is_chosen".into(), "task_category".into(), "iteration".into()],
        },
        records,
    };
    write_pretty(to, &dataset)
}

/// `completed_by` in Label Studio's export: a user id, or the user object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LsUser {
    Id(i64),
    User {
        #[serde(default)]
        id: Option<i64>,
        #[serde(default)]
        email: Option<String>,
    },
}

impl LsUser {
    fn name(&self) -> String {
        match self {
            LsUser::Id(i) => format!("label-studio-user-{i}"),
            LsUser::User { email: Some(e), .. } => e.clone(),
            LsUser::User { id, .. } => format!("label-studio-user-{}", id.unwrap_or(0)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LsAnnotationResult {
    #[serde(default)]
    pub from_name: Option<String>,
    #[serde(default)]
    pub value: Option<LsChoices>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LsAnnotation {
    #[serde(default)]
    pub completed_by: Option<LsUser>,
    #[serde(default)]
    pub result: Vec<LsAnnotationResult>,
    #[serde(default)]
    pub was_cancelled: bool,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// A task in Label Studio's JSON export.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LsExportedTask {
    #[serde(default)]
    pub id: Option<i64>,
    pub data: TaskData,
    #[serde(default)]
    pub annotations: Vec<LsAnnotation>,
}

/// What an import found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Imported {
    pub labels: Vec<GoldLabel>,
    pub tasks: usize,
    /// Tasks nobody annotated (yet).
    pub unannotated: usize,
    /// Annotations skipped (cancelled, or with no choice).
    pub cancelled: usize,
}

/// Reads Label Studio's JSON export of synpref's tasks: one gold label per completed
/// annotation (a later annotation of a pair supersedes an earlier one by `labeled_at`).
pub fn import_label_studio(from: &Location) -> Result<Imported> {
    let file = from.url.clone();
    let bytes = from
        .get()
        .map_err(|e| Error::bad_file(&file, format!("cannot read: {e}")))?;
    let tasks: Vec<serde_json::Value> = serde_json::from_slice(&bytes).map_err(|e| {
        Error::bad_file(
            &file,
            format!("not a Label Studio JSON export (a list of tasks): {e}"),
        )
    })?;
    let mut out = Imported::default();
    for (row, raw) in tasks.into_iter().enumerate() {
        let task: LsExportedTask = serde_json::from_value(raw).map_err(|e| {
            Error::bad_row(
                &file,
                row as u64,
                None,
                format!("not a synpref task (data.pair_id, data.a_is_chosen, annotations): {e}"),
            )
        })?;
        out.tasks += 1;
        if task.annotations.is_empty() {
            out.unannotated += 1;
        }
        for a in &task.annotations {
            let choice = a
                .result
                .iter()
                .filter(|r| r.from_name.as_deref().is_none_or(|n| n == QUESTION))
                .find_map(|r| r.value.as_ref().and_then(|v| v.choices.first().cloned()));
            let Some(choice) = choice.filter(|_| !a.was_cancelled) else {
                out.cancelled += 1;
                continue;
            };
            let verdict = match choice.as_str() {
                "A" => {
                    if task.data.a_is_chosen {
                        Verdict::Chosen
                    } else {
                        Verdict::Rejected
                    }
                }
                "B" => {
                    if task.data.a_is_chosen {
                        Verdict::Rejected
                    } else {
                        Verdict::Chosen
                    }
                }
                "Undecidable" => Verdict::Undecidable,
                other => {
                    return Err(Error::bad_row(
                        &file,
                        row as u64,
                        Some("annotations.result.value.choices".into()),
                        format!("`{other}` is not A, B or Undecidable"),
                    ))
                }
            };
            let stamp = a.updated_at.as_deref().or(a.created_at.as_deref());
            out.labels.push(GoldLabel {
                pair_id: task.data.pair_id.clone(),
                verdict,
                annotator: a.completed_by.as_ref().map(|u| u.name()),
                labeled_at: stamp.and_then(normalise_timestamp),
                text: None,
            });
        }
    }
    // Oldest first, so a later annotation supersedes an earlier one when inserted.
    out.labels
        .sort_by(|a, b| (&a.pair_id, &a.labeled_at).cmp(&(&b.pair_id, &b.labeled_at)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_maps_back_through_the_shown_order() {
        assert_eq!(choice_for(Verdict::Chosen, true), "A");
        assert_eq!(choice_for(Verdict::Chosen, false), "B");
        assert_eq!(choice_for(Verdict::Rejected, false), "A");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.json");
        std::fs::write(
            &path,
            r#"[{"id": 3, "data": {"pair_id": "p1", "prompt": "x", "guideline": "g", "response_a": "a", "response_b": "b", "a_is_chosen": false},
                 "annotations": [{"completed_by": 1, "result": [{"from_name": "preference", "value": {"choices": ["A"]}}], "updated_at": "2026-12-01T10:00:00Z"},
                                 {"completed_by": {"id": 2, "email": "x@y.z"}, "was_cancelled": true, "result": []}]},
                {"data": {"pair_id": "p2", "prompt": "x", "guideline": "g", "response_a": "a", "response_b": "b", "a_is_chosen": true}, "annotations": []}]"#,
        )
        .unwrap();
        let got = import_label_studio(
            &synpref_engine::store::resolve(&path.display().to_string()).unwrap(),
        )
        .unwrap();
        assert_eq!((got.tasks, got.unannotated, got.cancelled), (2, 1, 1));
        assert_eq!(got.labels.len(), 1);
        assert_eq!(got.labels[0].verdict, Verdict::Rejected);
        assert_eq!(
            got.labels[0].annotator.as_deref(),
            Some("label-studio-user-1")
        );
    }
}
