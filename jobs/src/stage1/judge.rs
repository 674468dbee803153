//! LLM judges (DESIGN §1, Stage 1 step 3): each judge sees the annotation guideline, up
//! to 8 similar gold pairs as few-shot examples, and the pair's two replies as
//! "Candidate 1" and "Candidate 2" in an order drawn by a seeded coin per (pair, model,
//! sample), so position bias averages out instead of leaning one way; n samples per
//! model (self-consistency) are aggregated by majority within a model, model verdicts by
//! majority across models.
//!
//! The judges are also measured on gold pairs they are not shown: each is asked in both
//! orders, which gives their agreement with the human verdicts and their position-bias
//! rate (how often swapping the order flips the vote).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use synpref_engine::model::{PreferencePair, Verdict};
use synpref_engine::store::Location;
use synpref_engine::{Error, Result};

use super::llm::{
    clip, cut, json_object, AnswerSchema, ChatMessage, ChatRequest, LlmClient, LlmUsage,
};
use super::retrieve::conversation_text;

/// The guideline a judge gets for a pair that has none of its own.
pub const DEFAULT_GUIDELINE: &str = "Prefer the response that better serves the user: correct, \
helpful and complete for the request, honest about uncertainty, and harmless. Length alone is \
not quality.";

/// Judge settings; every knob's default is in `Default`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JudgeSettings {
    /// Model names at the LLM server; several are aggregated by majority.
    pub models: Vec<String>,
    /// Samples per model and pair (self-consistency, Wang et al. 2022).
    pub samples: usize,
    /// Sampling temperature: 0 makes n samples one answer; 0.7 is the usual
    /// self-consistency setting.
    pub temperature: f32,
    /// Few-shot gold examples per prompt, the most similar first (the paper: up to 8).
    pub few_shot: usize,
    /// Characters kept of each conversation or reply in a prompt (longer ones are cut
    /// with a marker), to bound the prompt within small context windows.
    pub max_text_chars: usize,
    /// Completion tokens allowed (the answer is a one-field JSON object).
    pub max_tokens: u32,
    /// Gold pairs (at most) on which the judges are measured, asked in both orders.
    pub gold_eval_pairs: usize,
    pub seed: u64,
}

impl Default for JudgeSettings {
    fn default() -> Self {
        JudgeSettings {
            models: Vec::new(),
            samples: 3,
            temperature: 0.7,
            few_shot: 8,
            max_text_chars: 1500,
            max_tokens: 32,
            gold_eval_pairs: 32,
            seed: 0,
        }
    }
}

/// The answer a judge gives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JudgeAnswer {
    /// "Candidate 1" or "Candidate 2".
    pub preferred: String,
}

fn answer_schema() -> AnswerSchema {
    AnswerSchema {
        name: "preference".into(),
        schema: serde_json::json!({
            "type": "object",
            "properties": {"preferred": {"type": "string", "enum": ["Candidate 1", "Candidate 2"]}},
            "required": ["preferred"],
            "additionalProperties": false
        }),
    }
}

/// Which candidate an answer prefers (1 or 2), or why the answer is not usable (a
/// free-text reason recorded as the sample's `invalid`, see `llm::Answer::value`).
pub fn parse_answer(text: &str) -> std::result::Result<u8, String> {
    let a: JudgeAnswer = json_object(text)?;
    match a.preferred.trim() {
        "Candidate 1" | "1" => Ok(1),
        "Candidate 2" | "2" => Ok(2),
        other => Err(format!(
            "`preferred` is `{}`, not Candidate 1 or Candidate 2",
            clip(other, 40)
        )),
    }
}

/// The coin of a (pair, model, sample): whether the chosen reply is shown first.
pub fn chosen_first(seed: u64, pair_id: &str, model: &str, sample: usize) -> bool {
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(seed);
    h.update(pair_id.as_bytes());
    h.update(&[0]);
    h.update(model.as_bytes());
    h.update(&(sample as u64).to_le_bytes());
    h.digest() & 1 == 0
}

fn reply_text(p: &PreferencePair, chosen: bool) -> String {
    let c = if chosen { &p.chosen } else { &p.rejected };
    match c {
        synpref_engine::model::Conversation::Text(t) => t.clone(),
        synpref_engine::model::Conversation::Messages(ms) => {
            // For implicit-prompt pairs the reply is the part after the shared prefix.
            let skip = if p.implicit_prompt {
                match &p.prompt {
                    synpref_engine::model::Conversation::Messages(pm) => pm.len(),
                    _ => 0,
                }
            } else {
                0
            };
            ms.iter()
                .skip(skip)
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}

fn shown(p: &PreferencePair, first_is_chosen: bool, settings: &JudgeSettings) -> String {
    let n = settings.max_text_chars;
    format!(
        "[Conversation]\n{}\n\n[Candidate 1]\n{}\n\n[Candidate 2]\n{}",
        cut(&conversation_text(&p.prompt), n),
        cut(&reply_text(p, first_is_chosen), n),
        cut(&reply_text(p, !first_is_chosen), n),
    )
}

/// One judgement to ask: a pair, its few-shot gold examples, the model, sample, order.
pub struct JudgeTask<'a> {
    pub pair: &'a PreferencePair,
    /// Gold pairs with their verdicts (chosen or rejected), most similar first.
    pub examples: &'a [(&'a PreferencePair, Verdict)],
    pub model: &'a str,
    pub sample: usize,
    pub chosen_first: bool,
}

/// The chat request of a task: the prompt of DESIGN §1.
pub fn request(task: &JudgeTask<'_>, settings: &JudgeSettings) -> ChatRequest {
    let guideline = task
        .pair
        .attributes
        .guideline
        .as_deref()
        .filter(|g| !g.trim().is_empty())
        .unwrap_or(DEFAULT_GUIDELINE);
    let system = format!(
        "You are an expert annotator of preference data for reward-model training. You compare \
two candidate responses to the same conversation and say which one is better.\n\nAnnotation \
guideline:\n{guideline}\n\nAnswer with a JSON object: {{\"preferred\": \"Candidate 1\"}} or \
{{\"preferred\": \"Candidate 2\"}}."
    );
    let mut user = String::new();
    if !task.examples.is_empty() {
        user.push_str("Here are verified examples of similar comparisons.\n\n");
        for (i, (ex, verdict)) in task.examples.iter().enumerate() {
            // Each example in its own seeded order, so the examples do not teach "1".
            let first_is_chosen = chosen_first(settings.seed ^ 0x5eed, &ex.pair_id, "example", i);
            let better_is_first = (*verdict == Verdict::Chosen) == first_is_chosen;
            user.push_str(&format!(
                "### Example {}\n{}\n\n[Verified answer]\n{{\"preferred\": \"Candidate {}\"}}\n\n",
                i + 1,
                shown(ex, first_is_chosen, settings),
                if better_is_first { 1 } else { 2 }
            ));
        }
        user.push_str("### Now judge this comparison\n");
    }
    user.push_str(&shown(task.pair, task.chosen_first, settings));
    user.push_str("\n\nWhich candidate is better? Answer with the JSON object only.");
    ChatRequest {
        model: task.model.to_string(),
        messages: vec![
            ChatMessage::new("system", system),
            ChatMessage::new("user", user),
        ],
        temperature: settings.temperature,
        max_tokens: settings.max_tokens,
        // The seed of a sample: distinct per (pair, sample) and reproducible.
        seed: {
            let mut h = xxhash_rust::xxh3::Xxh3::with_seed(settings.seed);
            h.update(task.pair.pair_id.as_bytes());
            h.update(&(task.sample as u64).to_le_bytes());
            h.update(&[task.chosen_first as u8]);
            h.digest() >> 33
        },
        schema: Some(answer_schema()),
    }
}

/// One judge's answer about one pair, as recorded in `judge_samples.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JudgeSample {
    pub pair_id: String,
    pub model: String,
    pub sample: usize,
    /// The chosen reply was shown as Candidate 1.
    pub chosen_first: bool,
    /// The vote in the pair's terms (`None`: the answer was invalid).
    pub verdict: Option<Verdict>,
    /// Why there is no vote.
    pub invalid: Option<String>,
    pub from_cache: bool,
}

/// Asks every task; one sample per task, in task order.
pub fn judge(
    client: &LlmClient,
    what: &str,
    tasks: &[JudgeTask<'_>],
    settings: &JudgeSettings,
) -> Result<(Vec<JudgeSample>, LlmUsage)> {
    let requests: Vec<ChatRequest> = tasks.iter().map(|t| request(t, settings)).collect();
    let (answers, usage) = client.complete_all(what, &requests, &parse_answer)?;
    let samples = tasks
        .iter()
        .zip(answers)
        .map(|(t, a)| {
            let (verdict, invalid) = match a.value {
                Ok(candidate) => {
                    let chosen_wins = (candidate == 1) == t.chosen_first;
                    (
                        Some(if chosen_wins {
                            Verdict::Chosen
                        } else {
                            Verdict::Rejected
                        }),
                        None,
                    )
                }
                Err(reason) => (None, Some(reason)),
            };
            JudgeSample {
                pair_id: t.pair.pair_id.clone(),
                model: t.model.to_string(),
                sample: t.sample,
                chosen_first: t.chosen_first,
                verdict,
                invalid,
                from_cache: a.from_cache,
            }
        })
        .collect();
    Ok((samples, usage))
}

/// A majority verdict of votes: `None` on a tie or without votes.
fn majority(chosen: u32, rejected: u32) -> Option<Verdict> {
    match chosen.cmp(&rejected) {
        std::cmp::Ordering::Greater => Some(Verdict::Chosen),
        std::cmp::Ordering::Less => Some(Verdict::Rejected),
        std::cmp::Ordering::Equal => None,
    }
}

/// The aggregated vote on a pair, as written to `judge_votes.parquet` (the `--judges`
/// format of curate: `pair_id`, `verdict`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JudgeVote {
    pub pair_id: String,
    /// Across models: the majority of model verdicts; undecidable on a tie or when no
    /// model gave one.
    pub verdict: Verdict,
    /// Models whose majority (over their samples) was chosen / rejected.
    pub models_chosen: u32,
    pub models_rejected: u32,
    /// Valid samples, all models.
    pub samples: u32,
}

/// Aggregates samples: within a model by majority of its samples, then across models by
/// majority of model verdicts. One vote per pair id, sorted by pair id.
pub fn aggregate(samples: &[JudgeSample]) -> Vec<JudgeVote> {
    let mut per_model: FxHashMap<(&str, &str), (u32, u32)> = FxHashMap::default();
    for s in samples {
        let e = per_model.entry((&s.pair_id, &s.model)).or_default();
        match s.verdict {
            Some(Verdict::Chosen) => e.0 += 1,
            Some(Verdict::Rejected) => e.1 += 1,
            _ => {}
        }
    }
    let mut per_pair: FxHashMap<&str, JudgeVote> = FxHashMap::default();
    for ((pair, _), (c, r)) in per_model {
        let v = per_pair.entry(pair).or_insert_with(|| JudgeVote {
            pair_id: pair.to_string(),
            verdict: Verdict::Undecidable,
            models_chosen: 0,
            models_rejected: 0,
            samples: 0,
        });
        v.samples += c + r;
        match majority(c, r) {
            Some(Verdict::Chosen) => v.models_chosen += 1,
            Some(Verdict::Rejected) => v.models_rejected += 1,
            _ => {}
        }
    }
    let mut out: Vec<JudgeVote> = per_pair
        .into_values()
        .map(|mut v| {
            v.verdict =
                majority(v.models_chosen, v.models_rejected).unwrap_or(Verdict::Undecidable);
            v
        })
        .collect();
    out.sort_by(|a, b| a.pair_id.cmp(&b.pair_id));
    out
}

/// How the judges did on gold pairs they were not shown (each asked in both orders).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JudgeQuality {
    /// Gold pairs judged.
    pub pairs: usize,
    /// Of those, pairs whose aggregated vote (both orders, all models) was decisive.
    pub decided: usize,
    /// Decisive votes that match the human verdict, over decisive votes (`None`: none).
    pub agreement_with_gold: Option<f64>,
    /// (pair, model) cases where the majority vote with the chosen reply first differs
    /// from the one with it second, over cases with both votes decisive. 0 is
    /// order-blind; 1 means the model picks a position, not a reply.
    pub position_bias_rate: Option<f64>,
    /// Share of valid answers (all orders, all models) that picked Candidate 1.
    pub first_position_share: Option<f64>,
    /// A plain sentence when the judges are no better than chance or mostly pick a
    /// position.
    pub warning: Option<String>,
}

/// Measures the judges from their samples on gold pairs with known verdicts.
pub fn quality(samples: &[JudgeSample], gold: &FxHashMap<String, Verdict>) -> JudgeQuality {
    let votes = aggregate(samples);
    let decided: Vec<&JudgeVote> = votes
        .iter()
        .filter(|v| v.verdict != Verdict::Undecidable)
        .collect();
    let agree = decided
        .iter()
        .filter(|v| gold.get(&v.pair_id) == Some(&v.verdict))
        .count();
    let mut by_order: FxHashMap<(&str, &str, bool), (u32, u32)> = FxHashMap::default();
    let (mut first, mut valid) = (0u64, 0u64);
    for s in samples {
        let e = by_order
            .entry((&s.pair_id, &s.model, s.chosen_first))
            .or_default();
        match s.verdict {
            Some(Verdict::Chosen) => e.0 += 1,
            Some(Verdict::Rejected) => e.1 += 1,
            _ => continue,
        }
        valid += 1;
        // Candidate 1 was picked when the vote went to the reply shown first.
        if (s.verdict == Some(Verdict::Chosen)) == s.chosen_first {
            first += 1;
        }
    }
    let (mut cases, mut flips) = (0u64, 0u64);
    for (&(pair, model, order), &(c, r)) in &by_order {
        if !order {
            continue;
        }
        let Some(&(c2, r2)) = by_order.get(&(pair, model, false)) else {
            continue;
        };
        if let (Some(a), Some(b)) = (majority(c, r), majority(c2, r2)) {
            cases += 1;
            flips += (a != b) as u64;
        }
    }
    let agreement = (!decided.is_empty()).then(|| agree as f64 / decided.len() as f64);
    let bias = (cases > 0).then(|| flips as f64 / cases as f64);
    let first_share = (valid > 0).then(|| first as f64 / valid as f64);
    let warning = match (agreement, bias) {
        (_, Some(b)) if b >= 0.5 => Some(format!(
            "the judges' votes follow the position, not the replies: swapping the order flipped {:.0}% of votes; treat their labels as noise",
            b * 100.0
        )),
        (Some(a), _) if a <= 0.55 => Some(format!(
            "the judges agree with human verdicts on {:.0}% of gold pairs: no better than chance",
            a * 100.0
        )),
        (None, _) => Some("the judges gave no decisive vote on any gold pair".into()),
        _ => None,
    };
    JudgeQuality {
        pairs: votes.len(),
        decided: decided.len(),
        agreement_with_gold: agreement,
        position_bias_rate: bias,
        first_position_share: first_share,
        warning,
    }
}

/// Writes votes in the `--judges` format (plus the vote counts).
pub fn write_votes(loc: &Location, votes: &[JudgeVote]) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("pair_id", DataType::Utf8, false),
        Field::new("verdict", DataType::Utf8, false),
        Field::new("models_chosen", DataType::UInt32, false),
        Field::new("models_rejected", DataType::UInt32, false),
        Field::new("samples", DataType::UInt32, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            votes.iter().map(|v| v.pair_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            votes.iter().map(|v| v.verdict.as_str()),
        )),
        Arc::new(UInt32Array::from_iter_values(
            votes.iter().map(|v| v.models_chosen),
        )),
        Arc::new(UInt32Array::from_iter_values(
            votes.iter().map(|v| v.models_rejected),
        )),
        Arc::new(UInt32Array::from_iter_values(
            votes.iter().map(|v| v.samples),
        )),
    ];
    let batch = RecordBatch::try_new(schema, columns).map_err(|e| Error::Arrow {
        context: "judge votes".into(),
        source: e,
    })?;
    synpref_engine::output::write_parquet_file(loc, &[batch])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(pair: &str, model: &str, first: bool, v: Option<Verdict>) -> JudgeSample {
        JudgeSample {
            pair_id: pair.into(),
            model: model.into(),
            sample: 0,
            chosen_first: first,
            verdict: v,
            invalid: None,
            from_cache: false,
        }
    }

    #[test]
    fn votes_aggregate_within_then_across_models() {
        use Verdict::*;
        let samples = vec![
            // Model a: 2 of 3 samples for chosen; model b: rejected; model c: tie.
            s("p", "a", true, Some(Chosen)),
            s("p", "a", false, Some(Chosen)),
            s("p", "a", true, Some(Rejected)),
            s("p", "b", true, Some(Rejected)),
            s("p", "c", true, Some(Chosen)),
            s("p", "c", false, Some(Rejected)),
            s("q", "a", true, Some(Rejected)),
            s("q", "b", true, None),
        ];
        let v = aggregate(&samples);
        assert_eq!(v[0].pair_id, "p");
        assert_eq!((v[0].models_chosen, v[0].models_rejected), (1, 1));
        assert_eq!(v[0].verdict, Undecidable);
        assert_eq!(v[1].verdict, Rejected);
        assert_eq!(v[1].samples, 1);
    }

    #[test]
    fn a_judge_that_always_picks_candidate_1_is_called_position_biased() {
        use Verdict::*;
        // Picks the first shown: chosen when chosen is first, rejected when second.
        let samples = vec![
            s("p", "a", true, Some(Chosen)),
            s("p", "a", false, Some(Rejected)),
            s("q", "a", true, Some(Chosen)),
            s("q", "a", false, Some(Rejected)),
        ];
        let gold: FxHashMap<String, Verdict> =
            [("p".to_string(), Chosen), ("q".to_string(), Chosen)]
                .into_iter()
                .collect();
        let q = quality(&samples, &gold);
        assert_eq!(q.position_bias_rate, Some(1.0));
        assert_eq!(q.first_position_share, Some(1.0));
        assert!(q.warning.unwrap().contains("position"));
    }

    #[test]
    fn answers_map_back_through_the_coin() {
        assert_eq!(parse_answer("{\"preferred\": \"Candidate 2\"}"), Ok(2));
        assert!(parse_answer("{\"preferred\": \"both\"}").is_err());
        // The coin is a fair, reproducible function of its inputs.
        let heads = (0..1000)
            .filter(|i| chosen_first(7, &format!("p{i}"), "m", 0))
            .count();
        assert!((400..600).contains(&heads), "{heads}");
        assert_eq!(chosen_first(7, "x", "m", 1), chosen_first(7, "x", "m", 1));
    }
}
