//! The integration tests, in one binary: one module per area, all sharing
//! `common`. One binary links the crate graph once instead of once per area.
//!
//! The modules share one process, so nothing here may depend on being
//! alone in it. Process-wide state is handled where it arises:
//! - the Prometheus registry is global: tests that assert counts from an
//!   in-process gateway's `/metrics` run in a process of their own
//!   ([`common::alone`]); tests of the binary read its own registry;
//! - memory and descriptor figures are read from a spawned gateway's
//!   `/proc/PID`, never from `/proc/self`;
//! - no test sets environment variables or the current directory of this
//!   process (children get theirs through `Command`);
//! - port ranges a test must own lie outside the ephemeral range and the
//!   other gateways' passive ranges (`engine_transfers::free_port_run`).
//!
//! Select an area with its module path: `cargo test --test it engine::`.

#[macro_use]
mod common;

mod abuse;
mod cli;
mod clients;
mod cloud;
mod conformance;
mod engine;
mod engine_transfers;
mod faults;
mod fleet;
mod fuzz_smoke;
mod integrity;
mod memory_bound;
mod memory_budget;
mod modification_times;
mod operations;
mod rust_version;
mod security;
mod seed_python;
mod spliced_uploads;
