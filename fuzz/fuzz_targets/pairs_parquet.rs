//! Fuzz target `pairs_parquet`: see `synpref_fuzz::targets::pairs_parquet`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| synpref_fuzz::targets::pairs_parquet(data));
