//! Score-cache chunks (saved state read back): `synpref_engine::score_cache::ScoreCache::open`
//! on a cache directory holding the bytes as one `chunk-*.parquet`. Chunks live in
//! object storage shared between runs and may be torn, truncated or written by another
//! version; an unreadable chunk must be skipped with a warning (a cache miss), never
//! crash the run.
#![no_main]
use libfuzzer_sys::fuzz_target;
use synpref_engine::score_cache::ScoreCache;

fuzz_target!(|data: &[u8]| {
    let dir = synpref_fuzz::scratch().join("score-cache");
    synpref_fuzz::write_at(&dir.join("fp").join("chunk-0.parquet"), data);
    let url = dir.to_str().expect("UTF-8");
    // Width 2 matches the seeds (best and gold margins); 1 exercises the size check.
    for width in [2, 1] {
        let cache = ScoreCache::open(url, "fp", width).expect("unreadable chunks are skipped");
        let _ = cache.get_many(&[0, 1, u128::MAX]);
    }
});
