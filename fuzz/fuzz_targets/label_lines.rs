//! JSON Lines label bodies: `synpref_engine::side::parse_label_lines`, which parses the
//! body of serve's `POST /v1/labels` (cluster/src/http.rs calls it on the raw request
//! bytes, from any client holding the token), and `synpref_engine::label_log::LabelLog::read`,
//! which reads a label-log segment back on restart (saved state in object storage) with
//! the same parser plus its `log_source` field.
#![no_main]
use libfuzzer_sys::fuzz_target;
use synpref_engine::label_log::LabelLog;
use synpref_engine::side::parse_label_lines;

fuzz_target!(|data: &[u8]| {
    let _ = parse_label_lines(data, "request body");
    let dir = synpref_fuzz::scratch().join("label-log");
    synpref_fuzz::write_at(&dir.join("seg-0000000001.jsonl"), data);
    let log = LabelLog::open(dir.to_str().expect("UTF-8")).expect("a local directory");
    if let Ok(segments) = log.segments() {
        for s in &segments {
            let _ = log.read(s);
        }
    }
});
