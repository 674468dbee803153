//! Dev-only integration tests for synpref live in `tests/integration.rs`.
