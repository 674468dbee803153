//! Parquet pair rows: the bytes as a `.parquet` input read through
//! `synpref_engine::input::plan_input` (footer and column checks), `ShardReader` (each
//! row group, survey-projected and whole), `synpref_engine::schema::infer_output_schema`
//! and `synpref_jobs::read::read_valid_pairs`. Parquet files come from anywhere
//! (Hugging Face datasets, other tools' exports): a corrupt footer, page or column of
//! an unexpected type must be an error naming the file, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let url = synpref_fuzz::write("pairs.parquet", data);
    let _ = synpref_fuzz::read_pairs(&url, None);
});
