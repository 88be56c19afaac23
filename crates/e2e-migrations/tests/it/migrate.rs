//! Migration engine tests: apply, rerun, drift, failures, concurrency, goose edge cases.
