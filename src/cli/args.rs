//! The command line as clap sees it: every subcommand, flag, environment variable and help text.
//! What each command does lives in `cli`; this file only says how it is spelled.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "WebSocket event gateway for a safe legacy → SSOT broadcast migration"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Config file merged over the embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Development mode: no secrets needed, clients may connect with ?user_id=, loopback only.
        #[arg(long)]
        dev: bool,
        /// Address for WebSocket clients and the producer API.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Address for /metrics, /healthz, /readyz and /admin.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// The flags file.
        #[arg(long)]
        flags: Option<PathBuf>,
    },
    /// Connect to a gateway as a client and print every frame received, one per line.
    Client {
        /// Gateway WebSocket URL.
        #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
        url: String,
        /// User to connect as (dev mode only; otherwise use --token).
        #[arg(long)]
        user_id: Option<String>,
        /// Client JWT.
        #[arg(long, env = "SWITCHYARD_CLIENT_TOKEN")]
        token: Option<String>,
    },
    /// Print the embedded default configuration.
    Defaults,
    /// Check, show or change the routing flags.
    Flags {
        #[command(subcommand)]
        command: FlagsCommand,
    },
    /// Show where a user lands on every route: cohort bucket, path and why.
    Cohort {
        user_id: String,
        /// The flags file to decide with.
        #[arg(long, default_value = "flags.toml")]
        flags: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum FlagsCommand {
    /// Validate a flags file (for CI on flag changes); exits non-zero with the error.
    Check { file: PathBuf },
    /// Show the live flags of a running gateway.
    Show {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Change one route's flags on a running gateway.
    Set {
        /// router_broadcast, scoped_broadcast, user_event or broadcast.
        route: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        ssot_percent: Option<f64>,
        #[arg(long)]
        shadow: Option<bool>,
        #[arg(long)]
        shadow_sample_percent: Option<f64>,
        /// Comma-separated user ids always on SSOT (replaces the list).
        #[arg(long, value_delimiter = ',')]
        pin_ssot: Option<Vec<String>>,
        /// Comma-separated user ids always on legacy (replaces the list).
        #[arg(long, value_delimiter = ',')]
        pin_legacy: Option<Vec<String>>,
        /// Clear the route's rollback latch.
        #[arg(long)]
        clear_latch: bool,
        /// Apply only if the live flags are still at this version.
        #[arg(long)]
        if_match: Option<u64>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Ramp one route's SSOT share on a running gateway: it starts at the first step, and the
    /// guard takes each next step once the one before has held --step with enough SSOT traffic
    /// and no breach. A rollback, the kill switch or `flags set --ssot-percent` ends it.
    Ramp {
        /// router_broadcast, scoped_broadcast, user_event or broadcast.
        route: String,
        /// The shares to go through, comma-separated and rising, e.g. 1,5,25,50,100.
        #[arg(value_delimiter = ',', required_unless_present = "cancel")]
        steps: Option<Vec<f64>>,
        /// How long each step holds at least: seconds, or 30s, 5m, 1h.
        #[arg(
            long = "step",
            value_name = "DURATION",
            value_parser = super::parse_duration_seconds,
            required_unless_present = "cancel"
        )]
        step_seconds: Option<u64>,
        /// Stop the route's ramp where it stands instead.
        #[arg(long, conflicts_with_all = ["steps", "step_seconds"])]
        cancel: bool,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
        /// Apply only if the live flags are still at this version.
        #[arg(long)]
        if_match: Option<u64>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Roll every route (or the given ones) back to legacy, latched until cleared.
    Rollback {
        #[arg(long)]
        reason: String,
        /// A route to roll back; repeat for several. All routes when absent.
        #[arg(long = "route")]
        routes: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make a running gateway re-read its flags file.
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show the change history of a running gateway.
    Audit {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(clap::Args)]
pub struct AdminArgs {
    /// The gateway's admin listener.
    #[arg(long, env = "ADMIN_URL", default_value = "http://127.0.0.1:9090")]
    pub admin_url: String,
    /// An admin token (as printed by `serve --dev`).
    #[arg(long, env = "ADMIN_TOKEN")]
    pub token: String,
}
