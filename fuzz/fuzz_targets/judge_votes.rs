//! LLM-judge votes (`curate --judges`) and ground truth (`--truth`):
//! `synpref_engine::side::JudgeVotes::read` and `Truth::read`, both through
//! `side::for_each_string_row` (column-projected Parquet, or JSON Lines), on the bytes
//! as a Parquet file (when they start with `PAR1`) or a JSON Lines file. Votes come
//! from judge runs outside synpref (stage1 writes them too, but any tool may).
#![no_main]
use libfuzzer_sys::fuzz_target;
use synpref_engine::side::{JudgeVotes, Truth};

fuzz_target!(|data: &[u8]| {
    let url = synpref_fuzz::write(&synpref_fuzz::side_file_name("judges", data), data);
    let _ = JudgeVotes::read(&url);
    let _ = Truth::read(&url);
});
