//! switchyard's integration tests: one binary, every test against a real gateway in-process on
//! port 0 with real WebSocket and HTTP clients over loopback.

// The harness's items are `pub` for the test modules of this one binary; nothing leaves it.
#![allow(unreachable_pub, reason = "a test binary has no public API")]

mod harness;

mod admin_api;
mod auth;
mod batch;
mod cli;
mod conformance;
mod console;
mod delivery;
mod flags_file;
mod fleet;
mod fleet_flags;
mod flip;
mod fuzz;
mod guard;
mod http_limits;
mod layers;
mod liveness;
mod logs;
mod metrics_format;
mod packaging;
mod producer_api;
mod prometheus;
mod ramp;
mod readme;
mod readme_fleet;
mod rules;
mod shadow;
