//! Fuzz target `gold_labels`: see `synpref_fuzz::targets::gold_labels`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| synpref_fuzz::targets::gold_labels(data));
