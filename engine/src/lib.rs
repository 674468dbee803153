//! synpref-engine owns the data model (`model`), Parquet and JSONL I/O through
//! object_store (`store`, `input`, `output`, `side`, `extras`), output-schema inference (`schema`), sharding of input over
//! timely workers (`input::InputPlan`), the cluster spec (`cluster`) and where a launched job's processes run (`launch`), the collective steps between dataflows
//! (`collective`), the label log, the pool store and the output lock of `serve` (`label_log`, `pool_store`, `out_lock`), progress reporting (`progress`), typed reports and the interval they state figures with (`report`), the durable score cache
//! (`score_cache`), and the one error type (`error`).
//! It holds no model code and no jobs.

pub mod cluster;
pub mod collective;
pub mod error;
pub mod extras;
pub mod hashing;
pub mod input;
pub mod json_types;
pub mod label_log;
pub mod launch;
pub mod model;
pub mod out_lock;
pub mod output;
pub mod pool_store;
pub mod progress;
pub mod report;
pub mod schema;
pub mod score_cache;
pub mod side;
pub mod store;

pub use error::{Error, Result};
