//! The benchmark texts curate's `--decontaminate` indexes: every user turn of every
//! prompt of a benchmark and, for the whole-pair check (`--decontaminate-scope pair`),
//! every reply it holds, read from an imported layout or from the released files
//! themselves (a file or a directory of them), whatever the benchmark calls them.
//! Prompts: `prompt` (RewardBench 1 and 2, PPE, RM-Bench, the layout), `question`
//! (JudgeBench) or `conversation_input` (RMB); a row with none of them names its file
//! and row (exit 2). Replies: `chosen`/`rejected` (strings, lists of strings or
//! messages), RMB's `chosen`/`reject`/`bon_best` objects and `loser_list`, PPE's
//! `response_1`..`response_K`, JudgeBench's `response_A`/`response_B`. Globs and
//! object-store prefixes go through the engine's reader of `prompt`, `chosen` and
//! `rejected` columns.

use std::collections::BTreeMap;

use serde::Deserialize;
use synpref_engine::model::{Conversation, Message};
use synpref_engine::side::{read_benchmark_texts, BenchmarkTexts};
use synpref_engine::store::resolve;
use synpref_engine::{Error, Result};

use super::import::source_files;
use super::released::read_rows;
use super::Text;

/// A benchmark row's prompt and replies, under any of the names the seven benchmarks
/// use.
#[derive(Deserialize)]
struct AnyBenchmarkRow {
    #[serde(default)]
    prompt: Option<Text>,
    #[serde(default)]
    question: Option<String>,
    #[serde(default)]
    conversation_input: Option<Vec<Message>>,
    #[serde(default)]
    chosen: Option<AnyReply>,
    #[serde(default)]
    rejected: Option<AnyReply>,
    /// RMB's rejected reply.
    #[serde(default)]
    reject: Option<AnyReply>,
    #[serde(default)]
    bon_best: Option<AnyReply>,
    #[serde(default)]
    loser_list: Option<AnyReply>,
    #[serde(default, rename = "response_A")]
    response_a: Option<String>,
    #[serde(default, rename = "response_B")]
    response_b: Option<String>,
    /// PPE's `response_1`..`response_K` (and every other field, ignored).
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

/// A reply in any of the benchmarks' shapes.
#[derive(Deserialize)]
#[serde(untagged)]
enum AnyReply {
    /// A string or a list of messages.
    Text(Text),
    /// RMB's `{answer, llm_name}`.
    Answer { answer: String },
    /// RewardBench 2's and RM-Bench's lists of completions, RMB's `loser_list`.
    List(Vec<AnyReply>),
}

impl AnyReply {
    fn texts(&self, out: &mut Vec<String>) {
        match self {
            AnyReply::Text(t) => t.conversation().for_each_text(|s| out.push(s.to_string())),
            AnyReply::Answer { answer } => out.push(answer.clone()),
            AnyReply::List(items) => items.iter().for_each(|r| r.texts(out)),
        }
    }
}

impl AnyBenchmarkRow {
    /// The row's prompt, under whichever name it has.
    fn take_prompt(&mut self) -> Option<Conversation> {
        match (
            self.prompt.take(),
            self.question.take(),
            self.conversation_input.take(),
        ) {
            (Some(t), _, _) => Some(t.conversation()),
            (None, Some(q), _) => Some(Conversation::Text(q)),
            (None, None, Some(turns)) => Some(Conversation::Messages(turns)),
            (None, None, None) => None,
        }
    }

    fn replies(&self, out: &mut Vec<String>) {
        for reply in [
            &self.chosen,
            &self.rejected,
            &self.reject,
            &self.bon_best,
            &self.loser_list,
        ]
        .into_iter()
        .flatten()
        {
            reply.texts(out);
        }
        out.extend(self.response_a.iter().chain(&self.response_b).cloned());
        for (name, value) in &self.rest {
            let numbered = name
                .strip_prefix("response_")
                .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()));
            if let (true, Some(s)) = (numbered, value.as_str()) {
                out.push(s.to_string());
            }
        }
    }
}

/// Every user turn of every benchmark prompt under `urls` and, with `replies`, every
/// benchmark reply; each distinct text once.
pub fn decontamination_texts(urls: &[String], replies: bool) -> Result<BenchmarkTexts> {
    let mut texts = BenchmarkTexts::default();
    for url in urls {
        // A set with no rows would turn decontamination off without a word.
        let no_rows = || Error::setting("--decontaminate", format!("`{url}`: no rows"));
        let local = std::path::Path::new(url);
        if !(local.is_file() || local.is_dir()) {
            let read = read_benchmark_texts(std::slice::from_ref(url), replies)?;
            if read.prompts.is_empty() {
                return Err(no_rows());
            }
            texts.prompts.extend(read.prompts);
            texts.replies.extend(read.replies);
            continue;
        }
        let mut rows = 0usize;
        for file in source_files(url, "--decontaminate")? {
            for (row, mut r) in read_rows::<AnyBenchmarkRow>(&resolve(&file)?)? {
                rows += 1;
                let Some(prompt) = r.take_prompt() else {
                    return Err(Error::bad_row(
                        &file,
                        row,
                        None,
                        "a benchmark row needs its prompt: `prompt`, `question` (JudgeBench) or `conversation_input` (RMB)",
                    ));
                };
                texts
                    .prompts
                    .extend(prompt.user_turns().into_iter().map(str::to_string));
                if replies {
                    r.replies(&mut texts.replies);
                }
            }
        }
        if rows == 0 {
            return Err(no_rows());
        }
    }
    texts.dedup();
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(json: &str) -> Vec<String> {
        let r: AnyBenchmarkRow = serde_json::from_str(json).unwrap();
        let mut out = Vec::new();
        r.replies(&mut out);
        out
    }

    #[test]
    fn replies_of_every_released_shape_are_read() {
        // RewardBench 2 / RM-Bench: lists of completions.
        assert_eq!(
            row(r#"{"prompt":"p","chosen":["c1"],"rejected":["r1","r2"]}"#),
            ["c1", "r1", "r2"]
        );
        // RMB pairwise and best-of-N objects.
        assert_eq!(
            row(r#"{"conversation_input":[{"role":"user","content":"p"}],
                    "chosen":{"answer":"a","llm_name":"m"},"reject":{"answer":"b","llm_name":"n"}}"#),
            ["a", "b"]
        );
        assert_eq!(
            row(r#"{"conversation_input":[],"bon_best":{"answer":"best"},
                    "loser_list":[{"answer":"l1"},{"answer":"l2"}]}"#),
            ["best", "l1", "l2"]
        );
        // PPE: numbered responses, nothing else of the row.
        assert_eq!(
            row(
                r#"{"prompt":"p","response_1":"one","response_2":"two","response_x":"no","winner":"model_a"}"#
            ),
            ["one", "two"]
        );
        // JudgeBench.
        assert_eq!(
            row(r#"{"question":"q","response_A":"A","response_B":"B","label":"A>B"}"#),
            ["A", "B"]
        );
        // The layout's message-list replies.
        assert_eq!(
            row(r#"{"prompt":"p","chosen":[{"role":"assistant","content":"m"}],"rejected":"s"}"#),
            ["m", "s"]
        );
    }
}
