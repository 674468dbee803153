//! Fuzz target `saved_state`: see `synpref_fuzz::targets::saved_state`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| synpref_fuzz::targets::saved_state(data));
