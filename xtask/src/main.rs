//! `cargo xtask`: end-to-end database setup, migrations, partitions and benchmarks.
fn main() {}
