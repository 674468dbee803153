//! Fuzz target `manifest`: see `synpref_fuzz::targets::manifest`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| synpref_fuzz::targets::manifest(data));
