//! switchyard's integration tests: one binary, every test against a real gateway in-process on
//! port 0 with real WebSocket and HTTP clients over loopback.

mod harness;

mod auth;
mod delivery;
mod metrics_format;
mod producer_api;
mod readme;
