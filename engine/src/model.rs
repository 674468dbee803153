//! The data model: preference pairs, conversations, gold labels, decisions and reasons.
//!
//! Everything here is plain data with serde derives: timely exchanges it between workers
//! (and processes) through serde.

use serde::{Deserialize, Serialize};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A prompt or a response, in the form it had in the input: plain text or a list of
/// `{role, content}` messages. Output keeps the input's form (DESIGN §4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Conversation {
    Text(String),
    Messages(Vec<Message>),
}

impl Conversation {
    /// Total bytes of text content.
    pub fn text_bytes(&self) -> usize {
        match self {
            Conversation::Text(t) => t.len(),
            Conversation::Messages(ms) => ms.iter().map(|m| m.content.len() + m.role.len()).sum(),
        }
    }

    /// True when there is no non-whitespace content at all.
    pub fn is_blank(&self) -> bool {
        match self {
            Conversation::Text(t) => t.trim().is_empty(),
            Conversation::Messages(ms) => ms.iter().all(|m| m.content.trim().is_empty()),
        }
    }

    /// Calls `f` on each piece of text content, in order (roles excluded).
    pub fn for_each_text(&self, mut f: impl FnMut(&str)) {
        match self {
            Conversation::Text(t) => f(t),
            Conversation::Messages(ms) => ms.iter().for_each(|m| f(&m.content)),
        }
    }

    /// Every user turn (the whole text of a plain prompt; the first message when none
    /// is a user's): what decontamination indexes of a benchmark prompt.
    pub fn user_turns(&self) -> Vec<&str> {
        match self {
            Conversation::Text(t) => vec![t.as_str()],
            Conversation::Messages(ms) => {
                let users: Vec<&str> = ms
                    .iter()
                    .filter(|m| m.role == "user")
                    .map(|m| m.content.as_str())
                    .collect();
                if users.is_empty() {
                    ms.first().map(|m| m.content.as_str()).into_iter().collect()
                } else {
                    users
                }
            }
        }
    }

    /// Feeds a canonical, unambiguous encoding to a hasher (used for content hashes).
    pub fn hash_into(&self, h: &mut xxhash_rust::xxh3::Xxh3) {
        match self {
            Conversation::Text(t) => {
                h.update(b"T");
                h.update(&(t.len() as u64).to_le_bytes());
                h.update(t.as_bytes());
            }
            Conversation::Messages(ms) => {
                h.update(b"M");
                h.update(&(ms.len() as u64).to_le_bytes());
                for m in ms {
                    h.update(&(m.role.len() as u64).to_le_bytes());
                    h.update(m.role.as_bytes());
                    h.update(&(m.content.len() as u64).to_le_bytes());
                    h.update(m.content.as_bytes());
                }
            }
        }
    }
}

/// Identifies an input row: file index in the run's sorted file list and the row's
/// position in that file (Parquet: row index; JSONL: byte offset of the line). Orders
/// rows as they appear in the input, which decides which of several duplicates is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RowKey(pub u64);

impl RowKey {
    pub const POSITION_BITS: u32 = 40;
    pub fn new(file_index: usize, position: u64) -> Self {
        debug_assert!(position < (1 << Self::POSITION_BITS));
        RowKey(((file_index as u64) << Self::POSITION_BITS) | position)
    }
    pub fn file_index(self) -> usize {
        (self.0 >> Self::POSITION_BITS) as usize
    }
}

/// The LLM-written preference attributes of SynPref (DESIGN §1), all optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attributes {
    pub source: Option<String>,
    pub task_category: Option<String>,
    pub objectivity: Option<String>,
    pub controversiality: Option<String>,
    pub desired_attributes: Option<String>,
    pub guideline: Option<String>,
}

/// Names of the optional attribute columns, in output order.
pub const ATTRIBUTE_COLUMNS: [&str; 6] = [
    "source",
    "task_category",
    "objectivity",
    "controversiality",
    "desired_attributes",
    "guideline",
];

impl Attributes {
    pub fn get(&self, i: usize) -> Option<&str> {
        match i {
            0 => self.source.as_deref(),
            1 => self.task_category.as_deref(),
            2 => self.objectivity.as_deref(),
            3 => self.controversiality.as_deref(),
            4 => self.desired_attributes.as_deref(),
            5 => self.guideline.as_deref(),
            _ => None,
        }
    }
    pub fn slot(&mut self, i: usize) -> &mut Option<String> {
        match i {
            0 => &mut self.source,
            1 => &mut self.task_category,
            2 => &mut self.objectivity,
            3 => &mut self.controversiality,
            4 => &mut self.desired_attributes,
            _ => &mut self.guideline,
        }
    }
}

/// A valid preference pair (x, y_w, y_l) with everything needed to write it back out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferencePair {
    pub key: RowKey,
    /// Parquet: row index from 0; JSONL: line number from 1 (as in quarantine output).
    pub row: u64,
    pub pair_id: String,
    /// The conversation so far. For the TRL implicit-prompt form this is the shared
    /// prefix of the two conversations and is not written back out.
    pub prompt: Conversation,
    pub chosen: Conversation,
    pub rejected: Conversation,
    /// The input had no prompt column: `chosen`/`rejected` hold whole conversations.
    pub implicit_prompt: bool,
    pub attributes: Attributes,
    /// Other input columns, carried through untouched (arrow row encoding, see
    /// `engine::extras`).
    pub extras: Vec<u8>,
    /// 128-bit hash of (x, y_w, y_l) as written: the key of the score cache (a model
    /// reads the text as written) and of derived pair ids.
    pub content_hash: u128,
    /// The key of exact dedup: `hashing::canonical_pair_hash` (the default), or
    /// `content_hash` with `--dedup-as-written`.
    pub dedup_hash: u128,
    /// `hashing::pair_key(pair_id)`, computed once: the exchange and join key.
    pub pair_key: u64,
    /// The row came from an earlier curate pass that swapped chosen and rejected to
    /// follow a human verdict (its `reason` was `human_corrected`). It is held in the
    /// orientation the verdict was given for, and the recorded correction counts as that
    /// verdict where the gold labels have none, so re-curating never swaps it back.
    #[serde(default)]
    pub corrected: bool,
    /// The row came from an earlier curate pass that kept it for a human verdict that
    /// agreed with its label (its `reason` was `human_agrees`). Like a recorded
    /// correction, the recorded agreement counts as that verdict where the gold labels
    /// have none: re-curating a curated set keeps a decision whose label named a
    /// duplicate copy (`adopted_label`) that the curated set no longer holds.
    #[serde(default)]
    pub agreed: bool,
    /// The same comparison also occurs with chosen and rejected swapped, and this row
    /// is the copy its human verdict or judge votes decide (`dedup`): the best RM, which
    /// may have learned either label, is not consulted (DESIGN §4 `conflicting_labels`).
    #[serde(default)]
    pub conflict: bool,
    /// The pair key of a duplicate copy whose human label this row, the one kept for
    /// the content, takes: it has no label of its own (`dedup`; issue 28, "labels on a
    /// pair apply to its canonical key").
    #[serde(default)]
    pub adopted_label: Option<u64>,
}

impl PreferencePair {
    /// A pair that is no pool row (a gold label's own text, a benchmark pair, a test's
    /// pair): row and key 0, hashes and pair key 0, no attributes, extras or flags.
    /// Callers that need a key or hashes set them with struct update syntax.
    pub fn outside_pool(
        pair_id: impl Into<String>,
        prompt: Conversation,
        chosen: Conversation,
        rejected: Conversation,
    ) -> PreferencePair {
        PreferencePair {
            key: RowKey(0),
            row: 0,
            pair_id: pair_id.into(),
            prompt,
            chosen,
            rejected,
            implicit_prompt: false,
            attributes: Attributes::default(),
            extras: Vec::new(),
            content_hash: 0,
            dedup_hash: 0,
            pair_key: 0,
            corrected: false,
            agreed: false,
            conflict: false,
            adopted_label: None,
        }
    }
}

/// Why a row was quarantined (bad input flows as data, DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum InvalidReason {
    /// A JSONL line that is not a JSON object.
    Unparsable,
    /// A field of the wrong type (e.g. a number where text was expected).
    WrongType,
    MissingPrompt,
    MissingResponse,
    EmptyResponse,
    /// Over the configured size limit.
    TooLarge,
    /// Implicit-prompt form whose conversations do not share a prefix or do not end in
    /// an assistant reply.
    ImplicitPrompt,
    /// A pair_id already used by an earlier row with different content.
    DuplicatePairId,
    /// A message whose role is not one of `KNOWN_ROLES`.
    UnknownRole,
    /// A reply conversation whose last turn is not the assistant's.
    LastTurn,
}

/// The message roles of the chat formats reward models are trained on: OpenAI's
/// (system, developer, user, assistant, tool, and the older function) and Llama 3's
/// `ipython` tool-output role. Anything else is quarantined as `invalid_role`: a chat
/// template would reject it or render it as something it is not.
pub const KNOWN_ROLES: [&str; 7] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
    "ipython",
];

impl InvalidReason {
    pub const ALL: [InvalidReason; 10] = [
        InvalidReason::Unparsable,
        InvalidReason::WrongType,
        InvalidReason::MissingPrompt,
        InvalidReason::MissingResponse,
        InvalidReason::EmptyResponse,
        InvalidReason::TooLarge,
        InvalidReason::ImplicitPrompt,
        InvalidReason::DuplicatePairId,
        InvalidReason::UnknownRole,
        InvalidReason::LastTurn,
    ];
    pub fn code(self) -> &'static str {
        match self {
            InvalidReason::Unparsable => "invalid_unparsable",
            InvalidReason::WrongType => "invalid_wrong_type",
            InvalidReason::MissingPrompt => "invalid_missing_prompt",
            InvalidReason::MissingResponse => "invalid_missing_response",
            InvalidReason::EmptyResponse => "invalid_empty_response",
            InvalidReason::TooLarge => "invalid_too_large",
            InvalidReason::ImplicitPrompt => "invalid_implicit_prompt",
            InvalidReason::DuplicatePairId => "invalid_duplicate_pair_id",
            InvalidReason::UnknownRole => "invalid_role",
            InvalidReason::LastTurn => "invalid_last_turn",
        }
    }
}

/// The reason codes of DESIGN §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Reason {
    HumanAgrees,
    HumanCorrected,
    BothRmsAgree,
    GoldRmAndJudgeAgree,
    HumanUndecidable,
    GoldRmDisagrees,
    BestRmAndJudgeDisagree,
    Duplicate,
    NearDuplicate,
    ConflictingLabels,
    Contaminated,
    Invalid(InvalidReason),
}

/// Where a row goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Destination {
    Curated,
    Discarded,
    Quarantine,
}

impl Destination {
    pub const ALL: [Destination; 3] = [
        Destination::Curated,
        Destination::Discarded,
        Destination::Quarantine,
    ];
    pub fn dir(self) -> &'static str {
        match self {
            Destination::Curated => "curated",
            Destination::Discarded => "discarded",
            Destination::Quarantine => "quarantine",
        }
    }
}

impl Reason {
    /// A reason the reward models (and judges) decided, not a human or a filter.
    pub fn model_decided(self) -> bool {
        matches!(
            self,
            Reason::BothRmsAgree
                | Reason::GoldRmAndJudgeAgree
                | Reason::GoldRmDisagrees
                | Reason::BestRmAndJudgeDisagree
        )
    }

    /// Every reason code, valid ones first.
    pub fn all() -> Vec<Reason> {
        let mut v = vec![
            Reason::HumanAgrees,
            Reason::HumanCorrected,
            Reason::BothRmsAgree,
            Reason::GoldRmAndJudgeAgree,
            Reason::HumanUndecidable,
            Reason::GoldRmDisagrees,
            Reason::BestRmAndJudgeDisagree,
            Reason::Duplicate,
            Reason::NearDuplicate,
            Reason::ConflictingLabels,
            Reason::Contaminated,
        ];
        v.extend(InvalidReason::ALL.iter().map(|r| Reason::Invalid(*r)));
        v
    }

    pub fn code(self) -> &'static str {
        match self {
            Reason::HumanAgrees => "human_agrees",
            Reason::HumanCorrected => "human_corrected",
            Reason::BothRmsAgree => "both_rms_agree",
            Reason::GoldRmAndJudgeAgree => "gold_rm_and_judge_agree",
            Reason::HumanUndecidable => "human_undecidable",
            Reason::GoldRmDisagrees => "gold_rm_disagrees",
            Reason::BestRmAndJudgeDisagree => "best_rm_and_judge_disagree",
            Reason::Duplicate => "duplicate",
            Reason::NearDuplicate => "near_duplicate",
            Reason::ConflictingLabels => "conflicting_labels",
            Reason::Contaminated => "contaminated",
            Reason::Invalid(r) => r.code(),
        }
    }

    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::all().into_iter().find(|r| r.code() == code)
    }

    pub fn destination(self) -> Destination {
        match self {
            Reason::HumanAgrees
            | Reason::HumanCorrected
            | Reason::BothRmsAgree
            | Reason::GoldRmAndJudgeAgree => Destination::Curated,
            Reason::Invalid(_) => Destination::Quarantine,
            _ => Destination::Discarded,
        }
    }
}

/// A human (gold) verdict on a pair (DESIGN §4): "chosen" means the human prefers the
/// pair's chosen reply.
///
/// Written as DESIGN §4 spells it ("chosen", "rejected", "undecidable") in every file;
/// the capitalised names that label logs written before 2026-12 hold are still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    #[serde(alias = "Chosen")]
    Chosen,
    #[serde(alias = "Rejected")]
    Rejected,
    #[serde(alias = "Undecidable")]
    Undecidable,
}

impl Verdict {
    pub fn parse(s: &str) -> Option<Verdict> {
        match s.trim().to_ascii_lowercase().as_str() {
            "chosen" => Some(Verdict::Chosen),
            "rejected" => Some(Verdict::Rejected),
            "undecidable" => Some(Verdict::Undecidable),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Chosen => "chosen",
            Verdict::Rejected => "rejected",
            Verdict::Undecidable => "undecidable",
        }
    }
}

/// A gold label, possibly carrying the pair's text (then the pair need not be in the pool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldLabel {
    pub pair_id: String,
    pub verdict: Verdict,
    pub annotator: Option<String>,
    pub labeled_at: Option<String>,
    /// (prompt, chosen, rejected) when the label file carries the text.
    pub text: Option<(Conversation, Conversation, Conversation)>,
}

#[cfg(test)]
mod tests {
    use super::Verdict;

    #[test]
    fn verdicts_are_written_lowercase_and_old_capitalised_logs_still_read() {
        for v in [Verdict::Chosen, Verdict::Rejected, Verdict::Undecidable] {
            let written = serde_json::to_string(&v).unwrap();
            assert_eq!(written, format!("\"{}\"", v.as_str()));
            assert_eq!(serde_json::from_str::<Verdict>(&written).unwrap(), v);
            let old = format!("\"{:?}\"", v);
            assert_eq!(serde_json::from_str::<Verdict>(&old).unwrap(), v);
        }
    }
}
