//! Saved state read back after a restart, from the output prefix (object storage that
//! may hold torn, truncated or other versions' files): the first byte chooses the
//! reader, the rest is the file.
//!
//! - 0: curate's `checkpoint.json` — `synpref_jobs::curate::checkpoint::load_checkpoint`
//! - 1: curate's survey indexes `survey-wNNNNN.bin` (bincode) — `checkpoint::load_survey`
//! - 2: curate's slice marker `slice-wNNNNN-sNNNNNN.json` — `checkpoint::committed_slices`
//!   and `checkpoint::load_marker`
//! - 3: serve's `state.json` — `synpref_jobs::serve::state::PoolState::load_meta` (the
//!   text `@SPEC@` is replaced by the default settings' fingerprint, which a saved state
//!   must carry to be used) and then `PoolState::load_all_parts`
//! - 4: one of serve's saved parts `pairs-EEEEEEEEEE-wNNNNN.bin` —
//!   `PoolState::load_all_parts` and `SavedScorer::pair`
//!
//! (Label-log segments are fuzzed by `label_lines`, score-cache chunks by `score_cache`.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use synpref_engine::store::resolve;
use synpref_jobs::curate::checkpoint::{committed_slices, load_checkpoint, load_marker, load_survey};
use synpref_jobs::curate::CurateSpec;
use synpref_jobs::serve::state::{spec_fingerprint, PoolState, SavedScorer, SavedStateMeta};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, file)) = data.split_first() else {
        return;
    };
    let dir = synpref_fuzz::fresh_dir("state");
    let resume = dir.join("_staging").join("resume");
    let loc = resolve(dir.to_str().expect("UTF-8")).expect("a local path");
    match mode % 5 {
        0 => {
            synpref_fuzz::write_at(&resume.join("checkpoint.json"), file);
            let _ = load_checkpoint(&loc, "aad80913ebd7699c");
        }
        1 => {
            synpref_fuzz::write_at(&resume.join("survey-w00000.bin"), file);
            let _ = load_survey(&loc, 0);
        }
        2 => {
            synpref_fuzz::write_at(&resume.join("slice-w00000-s000000.json"), file);
            let _ = committed_slices(&loc, 0);
            let _ = load_marker(&loc, 0, 0);
        }
        3 => {
            let spec = CurateSpec::default();
            let text = String::from_utf8_lossy(file).replace("@SPEC@", &spec_fingerprint(&spec));
            synpref_fuzz::write_at(&dir.join("state.json"), text.as_bytes());
            if let Ok(Some(meta)) = PoolState::load_meta(&loc, &spec) {
                let _ = PoolState::load_all_parts(&loc, &meta);
            }
        }
        _ => {
            synpref_fuzz::write_at(&dir.join("pairs-0000000001-w00000.bin"), file);
            let meta = SavedStateMeta {
                epoch: 1,
                workers: 1,
                pairs: 0,
                margin_error: 0.0,
                examples: 0,
                spec: String::new(),
                best_fingerprint: "best".into(),
                gold_fingerprint: "gold".into(),
                trainer: None,
            };
            if let Ok(saved) = PoolState::load_all_parts(&loc, &meta) {
                let _ = SavedScorer::pair(&saved, &meta);
            }
        }
    }
});
