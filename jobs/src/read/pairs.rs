//! Reading preference pairs from any input curate accepts (Parquet or JSONL, explicit
//! or implicit layout): the output schema an input implies, and its rows validated
//! and handed out in chunks. Used by `score`, `eval`, `fractions` and `stage1`.

use std::sync::Arc;

use arrow::datatypes::Field;
use synpref_engine::extras::ExtrasCodec;
use synpref_engine::input::{InputPlan, JsonlObservation, ShardReader};
use synpref_engine::model::PreferencePair;
use synpref_engine::output::{OutputRow, OutputSchema};
use synpref_engine::schema::infer_output_schema;
use synpref_engine::Result;
use synpref_operators::validate::{check, ValidateSettings};

/// The largest pair (bytes of text) `read_valid_pairs` accepts: curate's default
/// `max_pair_bytes` (a test checks that they agree).
pub const DEFAULT_MAX_PAIR_BYTES: usize = 4 << 20;

/// The output schema and the extra columns of an input (a JSONL input is read once to
/// learn which columns hold message lists).
pub fn input_schema(input: &InputPlan) -> Result<(OutputSchema, Vec<Field>)> {
    let mut observations = Vec::new();
    for shard in input.shards_for(0, 1) {
        let mut obs = JsonlObservation {
            file: shard.file(),
            ..Default::default()
        };
        let mut reader = ShardReader::open(input, shard, None, true, None)?;
        while reader.next_batch(Some(&mut obs))?.is_some() {}
        observations.push(obs);
    }
    infer_output_schema(input, &observations)
}

/// Reads every row of `input`, validates it as `score` does (empty replies allowed: a
/// scorer can score them), hands invalid rows to `invalid` and valid pairs to `pairs`
/// in chunks of `chunk_pairs` in input order. Returns the rows read.
pub fn read_valid_pairs(
    input: &InputPlan,
    extras: &Arc<ExtrasCodec>,
    chunk_pairs: usize,
    invalid: &mut dyn FnMut(OutputRow) -> Result<()>,
    pairs: &mut dyn FnMut(Vec<PreferencePair>) -> Result<()>,
) -> Result<u64> {
    let settings = ValidateSettings {
        max_pair_bytes: DEFAULT_MAX_PAIR_BYTES,
        allow_empty_replies: true,
        dedup_form: Default::default(),
    };
    let (mut rows, mut pending) = (0u64, Vec::new());
    for shard in input.shards_for(0, 1) {
        let mut reader = ShardReader::open(input, shard, Some(extras), false, None)?;
        while let Some(batch) = reader.next_batch(None)? {
            rows += batch.len() as u64;
            for record in batch {
                match check(record, &settings) {
                    Ok(pair) => pending.push(pair),
                    Err(row) => invalid(row)?,
                }
            }
            while pending.len() >= chunk_pairs.max(1) {
                let rest = pending.split_off(chunk_pairs.max(1));
                pairs(std::mem::replace(&mut pending, rest))?;
            }
        }
    }
    if !pending.is_empty() {
        pairs(pending)?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #[test]
    fn max_pair_bytes_is_curates_default() {
        assert_eq!(
            super::DEFAULT_MAX_PAIR_BYTES,
            crate::curate::CurateSpec::default().max_pair_bytes
        );
    }
}
