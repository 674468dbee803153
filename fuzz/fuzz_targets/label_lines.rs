//! Fuzz target `label_lines`: see `synpref_fuzz::targets::label_lines`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| synpref_fuzz::targets::label_lines(data));
