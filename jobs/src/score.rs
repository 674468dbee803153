//! `score`: a user's "score my dataset with this reward model" command (DESIGN §4).
//!
//! Reads pairs (Parquet or JSONL, any form curate accepts), validates them like curate
//! (invalid rows go to `OUT/quarantine/` with their reason), scores both replies of each
//! valid pair with one model through the score cache, and writes Parquet parts
//! `OUT/part-00000-SSSSS.parquet` holding the input columns plus `r_chosen`,
//! `r_rejected` and `p` = σ(r_chosen − r_rejected), then `OUT/report.json` with the
//! counts and the RewardBench-style accuracy (share of pairs with r_chosen > r_rejected,
//! the input's chosen reply being the labelled winner).

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float32Array, Float64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};
use synpref_engine::extras::ExtrasCodec;
use synpref_engine::input::plan_input;
use synpref_engine::model::{Destination, PreferencePair, Reason};
use synpref_engine::output::{
    rows_to_batch, write_json, write_parquet_file, PartWriter, WrittenFile,
};
use synpref_engine::store::resolve;
use synpref_engine::{Error, Result};
use synpref_operators::models::{
    load_hf, sigmoid, ComputeStats, ModelOptions, ModelSpec, ModelUsage, RewardModel,
};
use synpref_operators::routed;

use crate::read::{input_schema, read_valid_pairs};

/// The plain-data spec of a score run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScoreSpec {
    /// `hf:DIR` (builtin and encoder: models have no weights until curate trains them
    /// on labels, so they are refused here).
    pub model: ModelSpec,
    pub pairs: String,
    pub out: String,
    pub options: ModelOptions,
    /// Score-cache URL; `None` disables the cache.
    pub cache: Option<String>,
    /// Pairs scored per call of the model (each call sorts its pairs into batches).
    pub chunk_pairs: usize,
    pub progress: bool,
}

/// What a score run reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScoreReport {
    pub input_rows: u64,
    pub scored_rows: u64,
    pub quarantined_rows: u64,
    /// Share of scored pairs with r_chosen > r_rejected.
    pub accuracy: f64,
    pub model: String,
    pub fingerprint: String,
    pub usage: ModelUsage,
    /// Where the scoring time went, stage by stage (the same figures as
    /// `usage.compute`, at the top level where every job's report has them).
    pub scoring: ComputeStats,
    pub elapsed_s: f64,
    pub pairs_per_s: f64,
}

/// Runs `score`.
pub fn run_score(spec: &ScoreSpec) -> Result<ScoreReport> {
    let started = Instant::now();
    let ModelSpec::Hf(dir) = &spec.model else {
        return Err(Error::setting(
            "--model",
            format!(
                "`{}`: score needs a ready reward model, `hf:DIR` (builtin and encoder: models are trained by curate on labels)",
                spec.model
            ),
        ));
    };
    let features =
        load_hf(dir, &spec.options, spec.cache.as_deref()).map_err(|e| e.for_setting("--model"))?;
    let model = synpref_operators::models::HfScorer(features);
    let input = plan_input(&spec.pairs)?;
    let out = resolve(&spec.out)?;
    // The previous output goes as a whole (on local disk with object_store's
    // in-progress files); parts are staged and moved into place at the end.
    out.delete_tree()?;
    let staging = out.child(synpref_engine::output::STAGING_DIR);
    let mut parts: Vec<WrittenFile> = Vec::new();

    let (schema, extras_fields) = input_schema(&input)?;
    let extras = Arc::new(ExtrasCodec::new(extras_fields)?);
    let file_urls: Arc<Vec<String>> =
        Arc::new(input.files.iter().map(|f| f.location.url.clone()).collect());
    let mut quarantine = PartWriter::new(
        &out,
        Destination::Quarantine,
        0,
        schema.clone(),
        extras.clone(),
        file_urls.clone(),
        &synpref_engine::output::new_run_id(),
    );
    let arrow_schema = schema.arrow_schema(&extras, Destination::Curated);
    let keep = arrow_schema.fields().len() - 3; // drop reason, p_best, p_gold
    let mut fields: Vec<Field> = arrow_schema.fields()[..keep]
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("r_chosen", DataType::Float32, false));
    fields.push(Field::new("r_rejected", DataType::Float32, false));
    fields.push(Field::new("p", DataType::Float64, false));
    let out_schema = Arc::new(Schema::new(fields));

    let bar = synpref_engine::progress::bar("score", input.estimated_rows, "pairs");
    if !spec.progress {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (mut input_rows, mut scored_rows, mut quarantined, mut correct) = (0u64, 0u64, 0u64, 0u64);
    let mut part = 0usize;
    let mut write = |pairs: Vec<PreferencePair>, part: &mut usize| -> Result<u64> {
        let refs: Vec<&PreferencePair> = pairs.iter().collect();
        let rewards = model.score(&refs).map_err(|e| e.for_setting("--model"))?;
        let wins = rewards.iter().filter(|(c, r)| c > r).count() as u64;
        let rows = pairs
            .into_iter()
            .map(|p| routed(p, Reason::BothRmsAgree, None))
            .collect();
        let batch = rows_to_batch(
            &schema,
            &arrow_schema,
            &extras,
            Destination::Curated,
            &file_urls,
            rows,
        )?;
        let mut cols: Vec<ArrayRef> = batch.columns()[..keep].to_vec();
        cols.push(Arc::new(Float32Array::from_iter_values(
            rewards.iter().map(|r| r.0),
        )));
        cols.push(Arc::new(Float32Array::from_iter_values(
            rewards.iter().map(|r| r.1),
        )));
        cols.push(Arc::new(Float64Array::from_iter_values(
            rewards.iter().map(|(c, r)| sigmoid((c - r) as f64)),
        )));
        let batch = RecordBatch::try_new(out_schema.clone(), cols).map_err(|e| Error::Arrow {
            context: "score output".into(),
            source: e,
        })?;
        let name = format!("part-00000-{:05}.parquet", *part);
        let rows = batch.num_rows() as u64;
        write_parquet_file(&staging.child(&name), &[batch])?;
        parts.push(WrittenFile { path: name, rows });
        *part += 1;
        Ok(wins)
    };
    input_rows += read_valid_pairs(
        &input,
        &extras,
        spec.chunk_pairs,
        &mut |row| {
            quarantined += 1;
            quarantine.push(row)
        },
        &mut |chunk| {
            scored_rows += chunk.len() as u64;
            bar.inc(chunk.len() as u64);
            correct += write(chunk, &mut part)?;
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    parts.extend(quarantine.finish()?);
    synpref_engine::output::publish(&out, &parts)?;
    model.0.flush().map_err(|e| e.for_setting("--model"))?;
    let elapsed_s = started.elapsed().as_secs_f64();
    let report = ScoreReport {
        input_rows,
        scored_rows,
        quarantined_rows: quarantined,
        accuracy: if scored_rows == 0 {
            0.0
        } else {
            correct as f64 / scored_rows as f64
        },
        model: spec.model.to_string(),
        fingerprint: model.fingerprint(),
        scoring: model.usage().compute,
        usage: model.usage(),
        elapsed_s,
        pairs_per_s: scored_rows as f64 / elapsed_s.max(1e-9),
    };
    write_json(&out.child("report.json"), &report)?;
    Ok(report)
}

impl crate::job::SerialJob for ScoreSpec {
    const NAME: &'static str = "score";
    type Report = ScoreReport;

    fn progress(&self) -> bool {
        self.progress
    }

    fn run(&self) -> Result<ScoreReport> {
        run_score(self)
    }

    fn summarise(&self, r: &ScoreReport) -> String {
        format!(
            "scored {} pairs ({} computed, {} from the cache; {} quarantined) in {:.1} s ({:.1} pairs/s); accuracy (r_chosen > r_rejected) {:.2}%; truncated: {} prompts, {} responses; model: {} tokens computed for {} in the sequences, {} batches, forward {:.1} s, tokenising {:.1} s; output under {}\n",
            r.scored_rows,
            r.usage.scored,
            r.usage.cached,
            r.quarantined_rows,
            r.elapsed_s,
            r.pairs_per_s,
            100.0 * r.accuracy,
            r.usage.truncations.prompt_truncated,
            r.usage.truncations.response_truncated,
            r.scoring.computed_tokens,
            r.scoring.sequence_tokens,
            r.scoring.batches,
            r.scoring.forward_s,
            r.scoring.tokenize_s,
            self.out
        )
    }
}
