//! Gold-label files (`curate --gold`, `stage1 --gold`, the label files `serve` polls):
//! `synpref_engine::side::GoldLabels::read` and `read_label_records` on the bytes as a
//! Parquet file (when they start with `PAR1`) or a JSON Lines file. Label files are
//! written by annotation tools and people: untrusted.
#![no_main]
use libfuzzer_sys::fuzz_target;
use synpref_engine::side::{read_label_records, GoldLabels};

fuzz_target!(|data: &[u8]| {
    let url = synpref_fuzz::write(&synpref_fuzz::side_file_name("gold", data), data);
    let gold = GoldLabels::read(&url);
    let records = read_label_records(&url);
    if let (Ok(g), Ok(r)) = (gold, records) {
        assert_eq!(g.records, r.len() as u64, "both readers read every record");
    }
});
