//! The OpenAI-compatible chat-completions client of Stage 1 (attributes and judges):
//! vLLM, SGLang, llama.cpp's `llama-server` and hosted APIs all speak
//! `POST {base}/chat/completions`.
//!
//! What a data team needs from it, and where each lives here:
//! - a durable response cache keyed by (request, model): `ResponseCache`, an
//!   append-only JSONL log synced per answer, so a rerun (or a run after a crash) asks
//!   nothing it already has an answer for;
//! - a concurrency limit (`concurrency` threads) and a rate limit (request starts spaced
//!   by 60/`requests_per_minute` s);
//! - retries with exponential backoff on 429, 5xx, timeouts and refused connections
//!   (honouring `Retry-After`); a request still failing after `max_retries` ends the run
//!   with an error naming the server, and what was answered stays cached;
//! - structured output (`response_format: json_schema`, which vLLM, SGLang, llama.cpp
//!   and OpenAI accept) and validation of every answer: an invalid answer is asked
//!   again (with another seed) up to `max_invalid_answers` times, then recorded with its
//!   reason, never dropped silently;
//! - token counts and cost in `LlmUsage`; the API key from an environment variable;
//!   a progress bar.
//!
//! The client is blocking (ureq) and threaded: jobs are library code and start no async
//! runtime (DESIGN §2).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use synpref_engine::{Error, Result};

/// Where and how to ask; every knob's default is in `Default`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LlmSettings {
    /// The API base, e.g. `http://127.0.0.1:8080/v1` (the client appends
    /// `/chat/completions`).
    pub base_url: String,
    /// The environment variable holding the API key (sent as a bearer token); unset or
    /// empty: no Authorization header (local servers need none).
    pub api_key_env: String,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Request starts per minute at most (`None`: unlimited). Hosted APIs publish theirs.
    pub requests_per_minute: Option<f64>,
    /// Retries of one request after a 429, a 5xx, a timeout or a refused connection.
    pub max_retries: u32,
    /// First backoff; doubled per retry up to `max_backoff_s`.
    pub initial_backoff_s: f64,
    pub max_backoff_s: f64,
    /// Timeout of one HTTP request, connect to last byte.
    pub timeout_s: f64,
    /// Asks after an answer that fails validation before it is recorded as invalid.
    pub max_invalid_answers: u32,
    /// Send `response_format: json_schema` (structured output). Off for servers that
    /// reject it; answers are validated either way.
    pub structured_output: bool,
    /// Prices in USD per million prompt / completion tokens, for the report's cost.
    pub prompt_usd_per_mtok: f64,
    pub completion_usd_per_mtok: f64,
    /// The response cache directory (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
    pub progress: bool,
}

impl Default for LlmSettings {
    fn default() -> Self {
        LlmSettings {
            base_url: "http://127.0.0.1:8080/v1".into(),
            api_key_env: "OPENAI_API_KEY".into(),
            // llama-server's default slot count is 4 (`--parallel`); hosted APIs take more.
            concurrency: 4,
            requests_per_minute: None,
            max_retries: 6,
            initial_backoff_s: 0.5,
            max_backoff_s: 20.0,
            timeout_s: 120.0,
            max_invalid_answers: 3,
            structured_output: true,
            prompt_usd_per_mtok: 0.0,
            completion_usd_per_mtok: 0.0,
            cache_dir: None,
            progress: true,
        }
    }
}

impl LlmSettings {
    /// Checks the settings a client cannot work with, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(Error::setting("--llm-concurrency", "must be at least 1"));
        }
        if let Some(r) = self.requests_per_minute {
            if !(r > 0.0 && r.is_finite()) {
                return Err(Error::setting("--llm-rpm", "must be a positive number"));
            }
        }
        let url = url::Url::parse(&self.base_url).map_err(|e| {
            Error::setting(
                "--llm-url",
                format!("`{}` is not a URL: {e}", self.base_url),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::setting(
                "--llm-url",
                format!("`{}` is not an http(s) URL", self.base_url),
            ));
        }
        Ok(())
    }
}

/// One chat message of a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A JSON schema the answer must follow (OpenAI's `response_format.json_schema`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnswerSchema {
    pub name: String,
    /// A JSON Schema document: free-form by nature.
    pub schema: serde_json::Value,
}

/// One chat-completion request: everything that decides the answer, so its hash is the
/// cache key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub temperature: f32,
    pub max_tokens: u32,
    /// Sampling seed (self-consistency samples differ by seed).
    pub seed: u64,
    pub schema: Option<AnswerSchema>,
}

impl ChatRequest {
    /// The cache key: a 128-bit hash of the request as JSON (model included).
    pub fn key(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("a request serialises");
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes))
    }
}

/// The wire form of a request (OpenAI's chat-completions body).
#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    temperature: f32,
    max_tokens: u32,
    seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<WireFormat<'a>>,
}

#[derive(Serialize)]
struct WireFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    json_schema: WireSchema<'a>,
}

#[derive(Serialize)]
struct WireSchema<'a> {
    name: &'a str,
    strict: bool,
    schema: &'a serde_json::Value,
}

#[derive(Deserialize)]
struct WireResponse {
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// The recorded outcome of one request: a valid answer, or why there is none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    pub key: String,
    pub model: String,
    /// The last answer's text.
    pub content: Option<String>,
    /// `None`: `content` passed validation; else why the last answer did not.
    pub invalid: Option<String>,
    /// Answers asked for (1 + re-asks after invalid answers).
    pub answers: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// The durable cache: `DIR/responses.jsonl`, one `CachedAnswer` per line, appended and
/// synced as each answer arrives; a torn last line (a crash mid-write) is skipped.
pub struct ResponseCache {
    path: PathBuf,
    entries: Mutex<FxHashMap<String, CachedAnswer>>,
    file: Mutex<std::fs::File>,
}

impl ResponseCache {
    pub fn open(dir: &Path) -> Result<ResponseCache> {
        std::fs::create_dir_all(dir).map_err(|e| Error::other(dir.display().to_string(), e))?;
        let path = dir.join("responses.jsonl");
        let mut entries = FxHashMap::default();
        if let Ok(f) = std::fs::File::open(&path) {
            for line in std::io::BufReader::new(f).lines() {
                let line = line.map_err(|e| Error::other(path.display().to_string(), e))?;
                if let Ok(a) = serde_json::from_str::<CachedAnswer>(&line) {
                    entries.insert(a.key.clone(), a);
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::other(path.display().to_string(), e))?;
        Ok(ResponseCache {
            path,
            entries: Mutex::new(entries),
            file: Mutex::new(file),
        })
    }

    pub fn get(&self, key: &str) -> Option<CachedAnswer> {
        self.entries.lock().unwrap().get(key).cloned()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn put(&self, answer: &CachedAnswer) -> Result<()> {
        let mut line = serde_json::to_vec(answer).expect("an answer serialises");
        line.push(b'\n');
        {
            let mut f = self.file.lock().unwrap();
            f.write_all(&line)
                .and_then(|_| f.sync_data())
                .map_err(|e| Error::other(self.path.display().to_string(), e))?;
        }
        self.entries
            .lock()
            .unwrap()
            .insert(answer.key.clone(), answer.clone());
        Ok(())
    }
}

/// What a batch of requests cost, for reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmUsage {
    /// Requests answered.
    pub requests: u64,
    /// Of those, answered from the cache (no HTTP request).
    pub cached: u64,
    /// HTTP requests sent (retries and re-asks included).
    pub http_requests: u64,
    /// Retries after 429 / 5xx / timeouts / refused connections.
    pub retries: u64,
    /// Answers that failed validation and were asked again.
    pub reasked: u64,
    /// Requests whose every answer failed validation (recorded with the reason).
    pub invalid: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

impl LlmUsage {
    pub fn merge(&mut self, o: &LlmUsage) {
        self.requests += o.requests;
        self.cached += o.cached;
        self.http_requests += o.http_requests;
        self.retries += o.retries;
        self.reasked += o.reasked;
        self.invalid += o.invalid;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        self.cost_usd += o.cost_usd;
    }
}

/// One request's outcome.
#[derive(Clone, Debug)]
pub struct Answer<T> {
    /// The validated value, or why every answer was invalid. The `String` stays: it is
    /// a free-text reason about an LLM's answer, recorded as data (a pair's annotation
    /// error, a judge sample's `invalid`), never a setting or input error with an exit code.
    pub value: std::result::Result<T, String>,
    pub from_cache: bool,
}

/// The client.
pub struct LlmClient {
    settings: LlmSettings,
    agent: ureq::Agent,
    api_key: Option<String>,
    cache: Option<ResponseCache>,
    next_start: Mutex<Instant>,
}

/// Why one HTTP attempt failed.
enum AttemptError {
    /// Worth retrying (429, 5xx, timeout, connection); with the server's Retry-After.
    Transient(String, Option<Duration>),
    /// Retrying will not help (400, 401, 404, an unreadable body).
    Fatal(String),
}

impl LlmClient {
    pub fn new(settings: LlmSettings) -> Result<LlmClient> {
        settings.validate()?;
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs_f64(settings.timeout_s)))
            .http_status_as_error(false)
            .build();
        let api_key = std::env::var(&settings.api_key_env)
            .ok()
            .filter(|k| !k.is_empty());
        let cache = match &settings.cache_dir {
            Some(d) => Some(ResponseCache::open(d)?),
            None => None,
        };
        Ok(LlmClient {
            agent: ureq::Agent::new_with_config(config),
            api_key,
            cache,
            next_start: Mutex::new(Instant::now()),
            settings,
        })
    }

    pub fn settings(&self) -> &LlmSettings {
        &self.settings
    }

    fn endpoint(&self) -> String {
        format!(
            "{}/chat/completions",
            self.settings.base_url.trim_end_matches('/')
        )
    }

    /// Waits for the rate limiter's next slot.
    fn pace(&self) {
        let Some(rpm) = self.settings.requests_per_minute else {
            return;
        };
        let gap = Duration::from_secs_f64(60.0 / rpm);
        let wait = {
            let mut next = self.next_start.lock().unwrap();
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + gap;
            start - now
        };
        std::thread::sleep(wait);
    }

    /// One HTTP attempt: the answer's text and token counts.
    fn attempt(
        &self,
        request: &ChatRequest,
        seed: u64,
    ) -> std::result::Result<(String, WireUsage), AttemptError> {
        let body = WireRequest {
            model: &request.model,
            messages: &request.messages,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            seed,
            response_format: request
                .schema
                .as_ref()
                .filter(|_| self.settings.structured_output)
                .map(|s| WireFormat {
                    kind: "json_schema",
                    json_schema: WireSchema {
                        name: &s.name,
                        strict: true,
                        schema: &s.schema,
                    },
                }),
        };
        let mut call = self.agent.post(&self.endpoint());
        if let Some(k) = &self.api_key {
            call = call.header("Authorization", &format!("Bearer {k}"));
        }
        let mut response = match call.send_json(&body) {
            Ok(r) => r,
            Err(e) => {
                return Err(match e {
                    ureq::Error::Timeout(_)
                    | ureq::Error::Io(_)
                    | ureq::Error::ConnectionFailed
                    | ureq::Error::HostNotFound
                    | ureq::Error::Protocol(_)
                    | ureq::Error::BodyStalled => AttemptError::Transient(e.to_string(), None),
                    other => AttemptError::Fatal(other.to_string()),
                })
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(Duration::from_secs_f64);
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| AttemptError::Transient(format!("reading the response: {e}"), None))?;
        if status == 429 || status >= 500 {
            return Err(AttemptError::Transient(
                format!("HTTP {status}: {}", clip(&text, 200)),
                retry_after,
            ));
        }
        if status != 200 {
            let hint = if status == 401 || status == 403 {
                format!(
                    " (the API key comes from ${}; is it set?)",
                    self.settings.api_key_env
                )
            } else {
                String::new()
            };
            return Err(AttemptError::Fatal(format!(
                "HTTP {status}{hint}: {}",
                clip(&text, 300)
            )));
        }
        let parsed: WireResponse = serde_json::from_str(&text).map_err(|e| {
            AttemptError::Fatal(format!(
                "not an OpenAI chat-completions response ({e}): {}",
                clip(&text, 200)
            ))
        })?;
        let content = parsed
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .unwrap_or_default();
        Ok((content, parsed.usage.unwrap_or_default()))
    }

    /// One request with retries: the answer and usage, or an error ending the run.
    fn ask(
        &self,
        request: &ChatRequest,
        seed: u64,
        usage: &Mutex<LlmUsage>,
    ) -> Result<(String, WireUsage)> {
        let mut backoff = self.settings.initial_backoff_s;
        let mut tries = 0u32;
        loop {
            self.pace();
            usage.lock().unwrap().http_requests += 1;
            match self.attempt(request, seed) {
                Ok(a) => return Ok(a),
                Err(AttemptError::Fatal(m)) => {
                    return Err(Error::other(
                        format!("LLM server {}", self.endpoint()),
                        format!("model `{}`: {m}", request.model),
                    ))
                }
                Err(AttemptError::Transient(m, retry_after)) => {
                    if tries >= self.settings.max_retries {
                        return Err(Error::other(
                            format!("LLM server {}", self.endpoint()),
                            format!(
                                "model `{}`: still failing after {} retries: {m} (answers so far are cached; rerun to resume)",
                                request.model, self.settings.max_retries
                            ),
                        ));
                    }
                    tries += 1;
                    usage.lock().unwrap().retries += 1;
                    let wait = retry_after
                        .unwrap_or(Duration::from_secs_f64(backoff))
                        .min(Duration::from_secs_f64(self.settings.max_backoff_s));
                    tracing::warn!(error = %m, retry = tries, wait_s = wait.as_secs_f64(), "LLM request failed; retrying");
                    std::thread::sleep(wait);
                    backoff = (backoff * 2.0).min(self.settings.max_backoff_s);
                }
            }
        }
    }

    /// Answers every request (cache first), validating each answer with `validate`;
    /// in request order. An error (a request failing after its retries, or a refusal
    /// such as HTTP 401) stops the batch; what was answered is cached. `validate`'s
    /// `Err` is a free-text reason kept in `Answer::value` (see there).
    pub fn complete_all<T: Send>(
        &self,
        what: &str,
        requests: &[ChatRequest],
        validate: &(dyn Fn(&str) -> std::result::Result<T, String> + Sync),
    ) -> Result<(Vec<Answer<T>>, LlmUsage)> {
        let usage = Mutex::new(LlmUsage::default());
        let slots: Vec<Mutex<Option<Answer<T>>>> =
            requests.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        let done = AtomicU64::new(0);
        let bar = self
            .settings
            .progress
            .then(|| synpref_engine::progress::bar(what, requests.len() as u64, "requests"));
        let run_one = |i: usize| -> Result<()> {
            let request = &requests[i];
            let key = request.key();
            if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(&key)) {
                let value = match (&hit.invalid, &hit.content) {
                    (None, Some(text)) => validate(text),
                    (Some(reason), _) => Err(reason.clone()),
                    (None, None) => Err("no answer".into()),
                };
                let mut u = usage.lock().unwrap();
                u.requests += 1;
                u.cached += 1;
                if value.is_err() {
                    u.invalid += 1;
                }
                *slots[i].lock().unwrap() = Some(Answer {
                    value,
                    from_cache: true,
                });
                return Ok(());
            }
            let mut record = CachedAnswer {
                key,
                model: request.model.clone(),
                content: None,
                invalid: None,
                answers: 0,
                prompt_tokens: 0,
                completion_tokens: 0,
            };
            let mut value = Err(String::new());
            for answer in 0..self.settings.max_invalid_answers.max(1) {
                // A re-ask varies the seed: at temperature 0 the same seed gives the
                // same invalid answer again.
                let seed = request.seed.wrapping_add(1_000_003 * answer as u64);
                let (text, tokens) = self.ask(request, seed, &usage)?;
                record.answers += 1;
                record.prompt_tokens += tokens.prompt_tokens;
                record.completion_tokens += tokens.completion_tokens;
                value = validate(&text);
                record.content = Some(text);
                match &value {
                    Ok(_) => {
                        record.invalid = None;
                        break;
                    }
                    Err(reason) => {
                        record.invalid = Some(reason.clone());
                        if answer + 1 < self.settings.max_invalid_answers {
                            usage.lock().unwrap().reasked += 1;
                        }
                    }
                }
            }
            if let Some(c) = &self.cache {
                c.put(&record)?;
            }
            let mut u = usage.lock().unwrap();
            u.requests += 1;
            u.prompt_tokens += record.prompt_tokens;
            u.completion_tokens += record.completion_tokens;
            if value.is_err() {
                u.invalid += 1;
            }
            drop(u);
            *slots[i].lock().unwrap() = Some(Answer {
                value,
                from_cache: false,
            });
            Ok(())
        };
        std::thread::scope(|scope| {
            for _ in 0..self.settings.concurrency.min(requests.len().max(1)) {
                scope.spawn(|| loop {
                    if failed.load(Ordering::SeqCst) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= requests.len() {
                        return;
                    }
                    if let Err(e) = run_one(i) {
                        failed.store(true, Ordering::SeqCst);
                        first_error.lock().unwrap().get_or_insert(e);
                        return;
                    }
                    let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                    if let Some(b) = &bar {
                        b.set_position(n);
                    }
                });
            }
        });
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if let Some(e) = first_error.into_inner().unwrap() {
            return Err(e);
        }
        let mut usage = usage.into_inner().unwrap();
        usage.cost_usd = (usage.prompt_tokens as f64 * self.settings.prompt_usd_per_mtok
            + usage.completion_tokens as f64 * self.settings.completion_usd_per_mtok)
            / 1e6;
        let answers = slots
            .into_iter()
            .map(|s| s.into_inner().unwrap().expect("every request answered"))
            .collect();
        Ok((answers, usage))
    }
}

/// The first `n` characters of `text`, for messages.
pub fn clip(text: &str, n: usize) -> String {
    let mut out: String = text.chars().take(n).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// `text` cut to its first `n` characters, with a marker when cut (prompts keep long
/// conversations and replies within small context windows).
pub fn cut(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_string()
    } else {
        format!("{} […cut]", text.chars().take(n).collect::<String>())
    }
}

/// The JSON object in an answer: the whole text, or (for servers without structured
/// output, whose models wrap JSON in prose or code fences) the first `{`…last `}`.
/// The `Err` is a free-text reason recorded with the answer (see `Answer::value`).
pub fn json_object<T: serde::de::DeserializeOwned>(text: &str) -> std::result::Result<T, String> {
    let t = text.trim();
    if let Ok(v) = serde_json::from_str::<T>(t) {
        return Ok(v);
    }
    match (t.find('{'), t.rfind('}')) {
        (Some(a), Some(b)) if a < b => serde_json::from_str::<T>(&t[a..=b])
            .map_err(|e| format!("not the JSON object asked for ({e}): {}", clip(t, 120))),
        _ => Err(format!("no JSON object in the answer: {}", clip(t, 120))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_survives_a_torn_last_line_and_keys_cover_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let c = ResponseCache::open(dir.path()).unwrap();
        let a = CachedAnswer {
            key: "k1".into(),
            model: "m".into(),
            content: Some("{}".into()),
            invalid: None,
            answers: 1,
            prompt_tokens: 3,
            completion_tokens: 1,
        };
        c.put(&a).unwrap();
        drop(c);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("responses.jsonl"))
            .unwrap();
        f.write_all(b"{\"key\":\"k2\",\"mod").unwrap();
        let c = ResponseCache::open(dir.path()).unwrap();
        assert_eq!(c.get("k1"), Some(a));
        assert_eq!(c.len(), 1);
        let r = ChatRequest {
            model: "a".into(),
            messages: vec![ChatMessage::new("user", "hi")],
            temperature: 0.0,
            max_tokens: 8,
            seed: 1,
            schema: None,
        };
        let mut other = r.clone();
        other.model = "b".into();
        assert_ne!(r.key(), other.key());
        assert_eq!(r.key(), r.clone().key());
    }

    #[test]
    fn json_object_finds_fenced_json_and_explains_failures() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct V {
            preferred: u8,
        }
        assert_eq!(
            json_object::<V>("```json\n{\"preferred\": 2}\n```"),
            Ok(V { preferred: 2 })
        );
        assert!(json_object::<V>("Candidate 1")
            .unwrap_err()
            .contains("no JSON object"));
    }
}
