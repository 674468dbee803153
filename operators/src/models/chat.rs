//! Chat templates: a Hugging Face model directory's Jinja chat template, rendered the
//! way transformers' `apply_chat_template` renders it (minijinja with `trim_blocks` and
//! `lstrip_blocks`, loop controls, Python string methods such as `.startswith` and
//! `.split` through minijinja-contrib's pycompat, `raise_exception`), and the
//! conversation a reward model reads for one reply: the prompt's messages plus the
//! reply as the assistant's turn, with no system prompt added (the Skywork-Reward-V2
//! recipe).

use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use synpref_engine::model::{Conversation, PreferencePair};

use super::ModelError;

/// A loaded chat template and the special tokens it may refer to.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    /// The template text (part of the model fingerprint).
    pub source: String,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

#[derive(Serialize)]
struct Msg<'a> {
    role: &'a str,
    content: &'a str,
}

/// A special token in tokenizer_config.json: a string or an AddedToken dict.
fn special_token(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

impl ChatTemplate {
    /// The template of a model directory: `chat_template.jinja` (transformers 5 saves it
    /// there) or `chat_template` in tokenizer_config.json (a string, or a list of named
    /// templates of which `default` is used). `None` when the directory has neither.
    pub fn from_dir(dir: &Path) -> Result<Option<ChatTemplate>, ModelError> {
        let config_path = dir.join("tokenizer_config.json");
        let config: Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|e| ModelError::load(&config_path, e))?
            }
            Err(_) => Value::Null,
        };
        let jinja_path = dir.join("chat_template.jinja");
        let source = if jinja_path.exists() {
            std::fs::read_to_string(&jinja_path).map_err(|e| ModelError::load(&jinja_path, e))?
        } else {
            match config.get("chat_template") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(named)) => named
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|t| t.get("template").and_then(Value::as_str))
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        ModelError::load(
                            &config_path,
                            "`chat_template` is a list without a `default` entry",
                        )
                    })?,
                _ => return Ok(None),
            }
        };
        ChatTemplate::new(
            source,
            special_token(config.get("bos_token")),
            special_token(config.get("eos_token")),
        )
        .map(Some)
    }

    pub fn new(
        source: String,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<ChatTemplate, ModelError> {
        let mut env = minijinja::Environment::new();
        // transformers renders with trim_blocks and lstrip_blocks (and jinja2's default of
        // dropping a single trailing newline, minijinja's default too).
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", source.clone())
            .map_err(|e| ModelError::Template(e.to_string()))?;
        Ok(ChatTemplate {
            env,
            source,
            bos_token,
            eos_token,
        })
    }

    /// Renders `messages` (role, content) as transformers' `apply_chat_template(...,
    /// tokenize=False)` does, then strips one leading BOS text if the template wrote it
    /// (the tokenizer adds its own BOS, and two would change the reward).
    pub fn render(
        &self,
        messages: &[(&str, &str)],
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let msgs: Vec<Msg> = messages
            .iter()
            .map(|(role, content)| Msg { role, content })
            .collect();
        let tmpl = self.env.get_template("chat").expect("added in new");
        let text = tmpl
            .render(minijinja::context! {
                messages => msgs,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.clone().unwrap_or_default(),
                eos_token => self.eos_token.clone().unwrap_or_default(),
            })
            .map_err(|e| ModelError::Template(format!("{e:#}")))?;
        Ok(match &self.bos_token {
            Some(bos) if !bos.is_empty() && text.starts_with(bos.as_str()) => {
                text[bos.len()..].to_owned()
            }
            _ => text,
        })
    }
}

/// The messages of a conversation, a plain-text prompt being one user turn.
fn push_messages<'a>(
    conv: &'a Conversation,
    text_role: &'a str,
    out: &mut Vec<(&'a str, &'a str)>,
) {
    match conv {
        Conversation::Text(t) => out.push((text_role, t)),
        Conversation::Messages(ms) => {
            out.extend(ms.iter().map(|m| (m.role.as_str(), m.content.as_str())))
        }
    }
}

/// The conversation a reward model reads for one reply of a pair, and the prompt part
/// of it: prompt messages + the reply as the assistant's turn. In the implicit-prompt
/// form the reply is the whole conversation, and its prompt is every message before
/// the last assistant turn.
pub fn conversation<'a>(
    pair: &'a PreferencePair,
    reply: &'a Conversation,
) -> (Vec<(&'a str, &'a str)>, usize) {
    let mut msgs = Vec::new();
    if pair.implicit_prompt {
        push_messages(reply, "assistant", &mut msgs);
        let prompt_len = msgs
            .iter()
            .rposition(|(role, _)| *role == "assistant")
            .unwrap_or(msgs.len());
        return (msgs, prompt_len);
    }
    push_messages(&pair.prompt, "user", &mut msgs);
    let prompt_len = msgs.len();
    push_messages(reply, "assistant", &mut msgs);
    (msgs, prompt_len)
}
