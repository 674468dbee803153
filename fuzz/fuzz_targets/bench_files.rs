//! Benchmark and evaluation-set files, as downloaded from their publishers: the bytes
//! as a Parquet file (when they start with `PAR1`) or a JSON / JSON Lines file, read by
//! `synpref_jobs::bench::layouts::convert_file` for each of the seven benchmarks
//! (`bench import`, through `bench::released::rows_of`), `bench::read_layout` (an
//! imported layout), `bench::prompts::decontamination_texts` and
//! `synpref_engine::side::read_benchmark_texts` (curate's `--decontaminate`), and
//! `synpref_jobs::read::load_eval_set` (`eval`, `fractions`, `stage1`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use synpref_jobs::bench::{layouts::convert_file, prompts::decontamination_texts, read_layout, Benchmark};

fuzz_target!(|data: &[u8]| {
    let url = synpref_fuzz::write(&synpref_fuzz::side_file_name("bench", data), data);
    let loc = synpref_engine::store::resolve(&url).expect("a local path");
    for b in Benchmark::ALL {
        let _ = convert_file(b, &url, &loc);
    }
    let _ = read_layout(&url);
    let urls = [url.clone()];
    let _ = decontamination_texts(&urls, true);
    let _ = synpref_engine::side::read_benchmark_texts(&urls, true);
    let _ = synpref_jobs::read::load_eval_set(&url, 64);
});
