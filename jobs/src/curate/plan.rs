//! `CuratePlan`: everything a curate worker needs, prepared once per process before any
//! worker starts (input plan, gold labels, judge votes, truth, benchmark n-grams, the
//! output location, progress bars, the model registry and any models given as they are), so that bad input fails
//! fast with exit 2.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use synpref_engine::input::{plan_input, InputPlan};
use synpref_engine::side::{GoldLabels, JudgeVotes, Truth};
use synpref_engine::store::{resolve, Location};
use synpref_engine::Result;
use synpref_operators::decontaminate::{DecontaminationScope, NgramIndex};
use synpref_operators::models::{LoadedModel, ModelOptions, ModelSpec, RewardModel};

use super::spec::CurateSpec;

/// Transformer feature sources, loaded once and shared by every worker of a process
/// (weights are large; the score cache is one per model), keyed by everything that
/// shapes them. Owned by whoever plans the run, so that two runs in one process (a
/// test, serve's snapshots) share what they load and nothing outlives them.
#[derive(Clone, Default)]
pub struct ModelRegistry {
    loaded: Arc<Mutex<Vec<(RegistryKey, LoadedModel)>>>,
}

type RegistryKey = (ModelSpec, ModelOptions, Option<String>);

impl ModelRegistry {
    /// `spec` with what it needs (its feature source, loaded on first use). `flag`
    /// names the setting in errors.
    pub fn features(
        &self,
        flag: &str,
        spec: &ModelSpec,
        options: &ModelOptions,
        score_cache: Option<&str>,
    ) -> Result<LoadedModel> {
        if *spec == ModelSpec::Builtin {
            return Ok(LoadedModel::Builtin);
        }
        let key = (
            spec.clone(),
            options.clone(),
            score_cache.map(str::to_string),
        );
        let mut loaded = self.loaded.lock().expect("model registry");
        if let Some((_, m)) = loaded.iter().find(|(k, _)| *k == key) {
            return Ok(m.clone());
        }
        let m = LoadedModel::load(spec, options, score_cache).map_err(|e| e.for_setting(flag))?;
        loaded.push((key, m.clone()));
        Ok(m)
    }
}

/// A best and a gold scorer to use as they are (serve's snapshots): nothing is trained.
pub type GivenModels = (Arc<dyn RewardModel>, Arc<dyn RewardModel>);

/// Everything a worker needs, prepared once per process.
pub struct CuratePlan {
    pub spec: CurateSpec,
    pub input: InputPlan,
    pub gold: Arc<GoldLabels>,
    pub judges: Option<Arc<JudgeVotes>>,
    pub truth: Option<Arc<Truth>>,
    pub ngrams: Arc<NgramIndex>,
    pub out: Location,
    pub started: Instant,
    pub bars: Bars,
    /// Models to score with instead of training any (`None`: train them).
    pub given_models: Option<GivenModels>,
    pub models: ModelRegistry,
    /// The run's fingerprint when it commits progress as it goes and resumes an
    /// interrupted run with the same fingerprint (`resume`; curate only).
    pub resume: Option<String>,
    /// `--memory-budget` in bytes, resolved once (its default reads the machine's
    /// memory): what the survey's band index may hold in memory in this process, and
    /// what the report says it was.
    pub memory_budget: u64,
}

/// Progress bars shared by the workers of a process.
pub struct Bars {
    pub survey: indicatif::ProgressBar,
    pub curate: indicatif::ProgressBar,
}

/// Validates the spec and reads the small inputs. The `leader` process (the first of a
/// cluster, or the only one) also clears a previous run's output; the others connect
/// only after every process has prepared, so no part is written before the clearing.
pub fn prepare(spec: CurateSpec, leader: bool) -> Result<CuratePlan> {
    spec.validate()?;
    let gold = GoldLabels::read(&spec.gold)?;
    prepare_with_gold(spec, gold, leader, None, ModelRegistry::default())
}

/// `prepare` with the gold labels given (serve holds them), models to use as they are
/// (serve's snapshots) and the registry its models are already loaded in.
pub fn prepare_with_gold(
    spec: CurateSpec,
    gold: GoldLabels,
    leader: bool,
    given_models: Option<GivenModels>,
    models: ModelRegistry,
) -> Result<CuratePlan> {
    let started = Instant::now();
    spec.validate()?;
    let mut input = plan_input(&spec.pairs)?;
    input.batch_rows = spec.machine.batch_rows;
    tracing::info!(
        files = input.files.len(),
        shards = input.shards.len(),
        rows = input.estimated_rows,
        "planned input"
    );
    tracing::info!(
        labels = gold.labels.len(),
        records = gold.records,
        "read gold labels"
    );
    let judges = spec
        .judges
        .as_deref()
        .map(JudgeVotes::read)
        .transpose()?
        .map(Arc::new);
    let truth = spec
        .truth
        .as_deref()
        .map(Truth::read)
        .transpose()?
        .map(Arc::new);
    let settings = spec.decontamination;
    let texts = crate::bench::prompts::decontamination_texts(
        &spec.decontaminate,
        settings.scope == DecontaminationScope::Pair,
    )?;
    let ngrams = NgramIndex::build(
        settings,
        texts.prompts.iter().map(String::as_str),
        texts.replies.iter().map(String::as_str),
    );
    tracing::info!(
        texts = ngrams.texts,
        ngrams = ngrams.len(),
        words = settings.ngram_words,
        scope = ?settings.scope,
        "indexed benchmark n-grams"
    );
    let out = resolve(&spec.out)?;
    if leader {
        synpref_engine::output::clear_output(&out)?;
    }
    let hidden = !spec.machine.run.progress;
    let mk = |m: &str, n: u64| {
        let b = synpref_engine::progress::bar(m, n, "pairs");
        if hidden {
            b.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        b
    };
    let bars = Bars {
        survey: mk("survey", input.estimated_rows),
        curate: mk("curate", input.estimated_rows),
    };
    Ok(CuratePlan {
        memory_budget: spec.machine.memory_budget_bytes(),
        spec,
        input,
        gold: Arc::new(gold),
        judges,
        truth,
        ngrams: Arc::new(ngrams),
        out,
        started,
        bars,
        given_models,
        models,
        resume: None,
    })
}

/// The default score-cache location: `$SYNPREF_CACHE`, else
/// `$XDG_CACHE_HOME/synpref/scores`, else `~/.cache/synpref/scores`.
pub fn default_score_cache() -> Option<String> {
    if let Ok(c) = std::env::var("SYNPREF_CACHE") {
        return Some(c);
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOME").ok().map(|h| format!("{h}/.cache")))?;
    Some(format!("{base}/synpref/scores"))
}
