//! `validate`: raw input rows to valid preference pairs; everything else goes to the
//! quarantine stream with an `invalid_*` reason (DESIGN §2: bad records are data).

use synpref_engine::hashing::{
    as_written_pair_hash, canonical_pair_hash, content_hash, derived_pair_id, pair_key, DedupForm,
};
use synpref_engine::input::{RawBody, RawFields, RawRecord, RawValue};
use synpref_engine::model::{Conversation, InvalidReason, PreferencePair, Reason, KNOWN_ROLES};
use synpref_engine::output::OutputRow;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::Operator;

use crate::Rows;

/// Limits a row must respect.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ValidateSettings {
    /// Largest accepted pair, in bytes of text (prompt + chosen + rejected).
    pub max_pair_bytes: usize,
    /// Accept empty replies (`score` rates them like any reply; curate quarantines them
    /// as `invalid_empty_response`, an empty reply being no training signal).
    pub allow_empty_replies: bool,
    /// The form exact dedup compares (`dedup_hash`).
    pub dedup_form: DedupForm,
}

pub trait Validate<'scope> {
    /// Splits raw rows into valid pairs and quarantined rows.
    fn validate(
        self,
        settings: ValidateSettings,
    ) -> (Rows<'scope, PreferencePair>, Rows<'scope, OutputRow>);
}

impl<'scope> Validate<'scope> for Rows<'scope, RawRecord> {
    fn validate(
        self,
        settings: ValidateSettings,
    ) -> (Rows<'scope, PreferencePair>, Rows<'scope, OutputRow>) {
        let checked: Rows<'scope, Result<PreferencePair, OutputRow>> =
            self.unary(Pipeline, "Validate", move |_, _| {
                move |input, output| {
                    input.for_each(|time, data| {
                        let mut session = output.session(&time);
                        for record in data.drain(..) {
                            session.give(check(record, &settings));
                        }
                    });
                }
            });
        checked.ok_err(|r| r)
    }
}

/// The verdict on one raw row.
pub fn check(record: RawRecord, settings: &ValidateSettings) -> Result<PreferencePair, OutputRow> {
    let RawRecord {
        key,
        row,
        bytes,
        body,
    } = record;
    let fields = match body {
        RawBody::Unparsable { raw, message } => {
            return Err(quarantined(
                key,
                row,
                None,
                InvalidReason::Unparsable,
                message,
                Some(raw),
            ));
        }
        RawBody::Fields(f) => f,
    };
    let fail = |fields: RawFields,
                reason: InvalidReason,
                message: String|
     -> Result<PreferencePair, OutputRow> {
        Err(quarantined(key, row, Some(fields), reason, message, None))
    };
    if fields.pair_id_wrong_type {
        return fail(
            fields,
            InvalidReason::WrongType,
            "`pair_id` is not a string".into(),
        );
    }
    if let Some((reason, message)) = field_problem(&fields) {
        return fail(fields, reason, message);
    }
    if let Some((reason, message)) = conversation_problem(&fields) {
        return fail(fields, reason, message);
    }
    if bytes > settings.max_pair_bytes {
        let message = format!(
            "pair has {bytes} bytes of text, over the limit of {} (--max-pair-bytes)",
            settings.max_pair_bytes
        );
        return fail(fields, InvalidReason::TooLarge, message);
    }
    let (corrected, agreed) = (fields.is_corrected(), fields.is_agreed());
    let RawFields {
        pair_id,
        pair_id_wrong_type,
        prompt,
        chosen,
        rejected,
        attributes,
        extras,
        previous,
    } = fields;
    let (RawValue::Value(chosen), RawValue::Value(rejected)) = (chosen, rejected) else {
        unreachable!("missing and mistyped responses were routed above")
    };
    // A row an earlier pass swapped for a human verdict is held in the orientation the
    // verdict was given for (the rule swaps it again, with the same reason).
    let (chosen, rejected) = if corrected {
        (rejected, chosen)
    } else {
        (chosen, rejected)
    };
    // Rebuilds the raw fields for a quarantined row (the failure paths are rare).
    let refill =
        |prompt: RawValue, chosen: Conversation, rejected: Conversation, attributes, extras| {
            RawFields {
                pair_id: pair_id.clone(),
                pair_id_wrong_type,
                prompt,
                chosen: RawValue::Value(chosen),
                rejected: RawValue::Value(rejected),
                attributes,
                extras,
                previous: previous.clone(),
            }
        };
    let (prompt, implicit_prompt) = match prompt {
        RawValue::Value(p) => (p, false),
        RawValue::Null => {
            let f = refill(RawValue::Null, chosen, rejected, attributes, extras);
            return fail(f, InvalidReason::MissingPrompt, "`prompt` is null".into());
        }
        RawValue::Missing => match implicit_prompt(&chosen, &rejected) {
            Ok(p) => (p, true),
            Err(message) => {
                let reason = if matches!(chosen, Conversation::Text(_))
                    || matches!(rejected, Conversation::Text(_))
                {
                    InvalidReason::MissingPrompt
                } else {
                    InvalidReason::ImplicitPrompt
                };
                let f = refill(RawValue::Missing, chosen, rejected, attributes, extras);
                return fail(f, reason, message.to_string());
            }
        },
        RawValue::WrongType(_) => unreachable!("checked above"),
    };
    let is_blank = |reply: &Conversation| match (implicit_prompt, reply) {
        (true, Conversation::Messages(ms)) => ms.last().is_none_or(|m| m.content.trim().is_empty()),
        _ => reply.is_blank(),
    };
    let blank = if settings.allow_empty_replies {
        None
    } else if is_blank(&chosen) {
        Some("chosen")
    } else if is_blank(&rejected) {
        Some("rejected")
    } else {
        None
    };
    if let Some(name) = blank {
        let message = format!("`{name}` reply is empty");
        let shown = if implicit_prompt {
            RawValue::Missing
        } else {
            RawValue::Value(prompt)
        };
        let f = refill(shown, chosen, rejected, attributes, extras);
        return fail(f, InvalidReason::EmptyResponse, message);
    }
    let hash = content_hash(&prompt, &chosen, &rejected);
    let pair_id = pair_id.unwrap_or_else(|| derived_pair_id(hash));
    let dedup_hash = match settings.dedup_form {
        DedupForm::Canonical => canonical_pair_hash(&prompt, &chosen, &rejected, implicit_prompt),
        DedupForm::AsWritten => as_written_pair_hash(&prompt, &chosen, &rejected),
    };
    Ok(PreferencePair {
        key,
        row,
        pair_key: pair_key(&pair_id),
        pair_id,
        prompt,
        chosen,
        rejected,
        implicit_prompt,
        attributes,
        extras,
        content_hash: hash,
        dedup_hash,
        corrected,
        agreed,
        conflict: false,
        adopted_label: None,
    })
}

/// Wrong types and missing responses, checked before anything else.
fn field_problem(fields: &RawFields) -> Option<(InvalidReason, String)> {
    for (name, v) in [
        ("prompt", &fields.prompt),
        ("chosen", &fields.chosen),
        ("rejected", &fields.rejected),
    ] {
        if let RawValue::WrongType(what) = v {
            let message = format!(
                "`{name}` is {what}; expected a string or a list of {{role, content}} messages"
            );
            return Some((InvalidReason::WrongType, message));
        }
    }
    for (name, v) in [("chosen", &fields.chosen), ("rejected", &fields.rejected)] {
        if matches!(v, RawValue::Missing | RawValue::Null) {
            return Some((
                InvalidReason::MissingResponse,
                format!("`{name}` is missing"),
            ));
        }
    }
    None
}

/// Roles outside `KNOWN_ROLES`, and replies (message lists) whose last turn is not the
/// assistant's: a chat template would reject them or train on a turn that is not a
/// reply.
fn conversation_problem(fields: &RawFields) -> Option<(InvalidReason, String)> {
    for (name, v) in [
        ("prompt", &fields.prompt),
        ("chosen", &fields.chosen),
        ("rejected", &fields.rejected),
    ] {
        let RawValue::Value(Conversation::Messages(ms)) = v else {
            continue;
        };
        if let Some(m) = ms.iter().find(|m| !KNOWN_ROLES.contains(&m.role.as_str())) {
            return Some((
                InvalidReason::UnknownRole,
                format!(
                    "`{name}` has a message with role `{}`; expected one of {}",
                    m.role,
                    KNOWN_ROLES.join(", ")
                ),
            ));
        }
    }
    for (name, v) in [("chosen", &fields.chosen), ("rejected", &fields.rejected)] {
        if let RawValue::Value(Conversation::Messages(ms)) = v {
            if let Some(last) = ms.last() {
                if last.role != "assistant" {
                    return Some((
                        InvalidReason::LastTurn,
                        format!(
                            "`{name}` ends with a `{}` turn; the last turn must be the assistant's reply",
                            last.role
                        ),
                    ));
                }
            }
        }
    }
    None
}

/// Why a row without `prompt` has no implicit prompt (its text is the quarantine
/// message).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
enum ImplicitPromptError {
    #[error("implicit-prompt form: a conversation is empty")]
    Empty,
    #[error("implicit-prompt form: a conversation does not end in an assistant reply")]
    NoFinalReply,
    #[error(
        "implicit-prompt form: the chosen and rejected conversations differ before the final reply"
    )]
    PromptsDiffer,
    #[error("`prompt` is missing (and chosen/rejected are not whole conversations)")]
    NotConversations,
}

/// The shared prompt of the TRL implicit-prompt form: both conversations must end in an
/// assistant reply and agree on everything before it.
fn implicit_prompt(
    chosen: &Conversation,
    rejected: &Conversation,
) -> Result<Conversation, ImplicitPromptError> {
    match (chosen, rejected) {
        (Conversation::Messages(c), Conversation::Messages(r)) => {
            let (Some((lc, pc)), Some((lr, pr))) = (c.split_last(), r.split_last()) else {
                return Err(ImplicitPromptError::Empty);
            };
            if lc.role != "assistant" || lr.role != "assistant" {
                return Err(ImplicitPromptError::NoFinalReply);
            }
            if pc != pr {
                return Err(ImplicitPromptError::PromptsDiffer);
            }
            Ok(Conversation::Messages(pc.to_vec()))
        }
        _ => Err(ImplicitPromptError::NotConversations),
    }
}

fn quarantined(
    key: synpref_engine::model::RowKey,
    row: u64,
    fields: Option<RawFields>,
    reason: InvalidReason,
    message: String,
    raw: Option<String>,
) -> OutputRow {
    let value = |v: RawValue| match v {
        RawValue::Value(c) => Some(c),
        _ => None,
    };
    let (pair_id, prompt, chosen, rejected, attributes, extras) = match fields {
        Some(f) => (
            f.pair_id,
            value(f.prompt),
            value(f.chosen),
            value(f.rejected),
            f.attributes,
            f.extras,
        ),
        None => (None, None, None, None, Default::default(), Vec::new()),
    };
    OutputRow {
        key,
        row,
        pair_id,
        prompt,
        chosen,
        rejected,
        attributes,
        extras,
        reason: Reason::Invalid(reason),
        p_best: None,
        p_gold: None,
        error: Some(message),
        raw,
        matched_ngram: None,
        duplicate_of: None,
        swapped: false,
    }
}
