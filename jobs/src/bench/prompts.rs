//! The prompts curate's `--decontaminate` indexes: every user turn of every prompt of
//! a benchmark, read from an imported layout or from the released files themselves
//! (a file or a directory of them), whatever the benchmark calls its prompt: `prompt`
//! (RewardBench 1 and 2, PPE, RM-Bench, the layout), `question` (JudgeBench) or
//! `conversation_input` (RMB). A row with none of them names its file and row (exit 2).
//! Globs and object-store prefixes go through the engine's reader of `prompt` columns.

use serde::Deserialize;
use synpref_engine::side::read_benchmark_prompts;
use synpref_engine::store::resolve;
use synpref_engine::{Error, Result};

use super::import::source_files;
use super::released::read_rows;
use super::Text;

/// A benchmark row's prompt, under any of the names the seven benchmarks use.
#[derive(Deserialize)]
struct AnyPrompt {
    #[serde(default)]
    prompt: Option<Text>,
    #[serde(default)]
    question: Option<String>,
    #[serde(default)]
    conversation_input: Option<Vec<synpref_engine::model::Message>>,
}

/// Every user turn of every benchmark prompt under `urls`, each distinct text once.
pub fn decontamination_prompts(urls: &[String]) -> Result<Vec<String>> {
    let mut prompts = Vec::new();
    for url in urls {
        let local = std::path::Path::new(url);
        if !(local.is_file() || local.is_dir()) {
            prompts.extend(read_benchmark_prompts(std::slice::from_ref(url))?);
            continue;
        }
        for file in source_files(url, "--decontaminate")? {
            for (row, p) in read_rows::<AnyPrompt>(&resolve(&file)?)? {
                let conversation = match (p.prompt, p.question, p.conversation_input) {
                    (Some(t), _, _) => t.conversation(),
                    (None, Some(q), _) => synpref_engine::model::Conversation::Text(q),
                    (None, None, Some(turns)) => synpref_engine::model::Conversation::Messages(turns),
                    (None, None, None) => {
                        return Err(Error::bad_row(
                            &file,
                            row,
                            None,
                            "a benchmark row needs its prompt: `prompt`, `question` (JudgeBench) or `conversation_input` (RMB)",
                        ))
                    }
                };
                prompts.extend(conversation.user_turns().into_iter().map(str::to_string));
            }
        }
    }
    prompts.sort();
    prompts.dedup();
    Ok(prompts)
}
