//! Fuzz target `pairs_jsonl`: see `synpref_fuzz::targets::pairs_jsonl`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| synpref_fuzz::targets::pairs_jsonl(data));
