//! Fuzz target `bench_files`: see `synpref_fuzz::targets::bench_files`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| synpref_fuzz::targets::bench_files(data));
