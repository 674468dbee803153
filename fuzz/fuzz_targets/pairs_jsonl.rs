//! JSON Lines pair rows: the bytes as a `.jsonl` input read through
//! `synpref_engine::input::plan_input` / `ShardReader` (the survey and the full read),
//! `synpref_engine::schema::infer_output_schema` and `synpref_jobs::read::read_valid_pairs`
//! (validation, extras encoding and decoding). A pairs file is the user's own data,
//! often scraped or converted: every byte of it is untrusted.
//!
//! The file is read twice: whole, and cut into about five byte ranges whose size
//! depends on the input's length, so that cuts fall anywhere (as a large file is cut
//! between workers); where both succeed they must read the same rows.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let url = synpref_fuzz::write("pairs.jsonl", data);
    let whole = synpref_fuzz::read_pairs(&url, None);
    let n = data.len() as u64;
    let cut = synpref_fuzz::read_pairs(&url, Some((n / 5).max(1) + n % 3));
    if let (Some(a), Some(b)) = (whole, cut) {
        assert_eq!(a, b, "reading in byte ranges changes what is read");
    }
});
