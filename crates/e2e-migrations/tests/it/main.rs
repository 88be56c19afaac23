//! Integration tests against a real PostgreSQL: the local default server, shared by all tests,
//! with a fresh database per test. One test binary, one module per area.

mod support;

mod connect;
mod migrate;
mod partitions;
mod progress;
mod txblock;
