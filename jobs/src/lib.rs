//! synpref-jobs: each job is a plain serde spec with documented defaults plus the code
//! that builds its dataflow from operators, all behind one seam (`job`: validate →
//! prepare → execute → summary): `curate` (batch Stage 2), `score` (one reward model
//! over a dataset), `serve` (incremental Stage 2 as gold labels arrive), `export` (a
//! committed output in another layout), `eval` (a reward model's accuracy on preference
//! sets), `fractions` (scaling experiments across data fractions), `stage1` (Stage 1's
//! loop, `annotate`, annotation `tasks`), `gen` (synthetic SynPref-like data with ground
//! truth) and `demo` (gen + curate on an embedded default). `read` holds the readers they
//! share (pairs and evaluation sets), so that no job borrows another's code.

pub mod bench;
pub mod curate;
pub mod demo;
pub mod eval;
pub mod export;
pub mod fractions;
pub mod gen;
pub mod job;
pub mod read;
pub mod score;
pub mod serve;
pub mod stage1;
