//! Fuzz target `score_cache`: see `synpref_fuzz::targets::score_cache`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| synpref_fuzz::targets::score_cache(data));
