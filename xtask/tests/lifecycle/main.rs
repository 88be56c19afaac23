//! The lifecycle from the command line, on real checkouts in a temporary folder: isolation
//! between checkouts, crash safety of setup, read-only commands, `status`, and the commands
//! that follow a setup (`follow`).
//!
//! Each test makes its own checkouts (a `Cargo.lock` and a copy of this repository's
//! `migrations/`), runs the xtask binary in them, and tears down what it made.

mod support;

mod cache;
mod crash;
mod follow;
mod isolation;
mod status;
