//! Fuzz target `judge_votes`: see `synpref_fuzz::targets::judge_votes`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| synpref_fuzz::targets::judge_votes(data));
