//! The command line as clap sees it: every subcommand, flag, environment variable and help text.
//! What each command does lives in `cli`; this file only says how it is spelled. Every
//! argument has help text (`every_argument_has_help` checks it).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "WebSocket event gateway for a safe legacy → SSOT broadcast migration",
    after_help = "Commands that talk to a running gateway read ADMIN_URL (default \
                  http://127.0.0.1:9090; https:// works) and ADMIN_TOKEN, as `serve --dev` prints \
                  them. Exit codes: 0 ok, 64 usage, 65 invalid input or refused as invalid, 69 \
                  gateway unreachable or a listener not bound, 70 other failure, 75 conflict \
                  (stale --if-match), 77 not authorised."
)]
pub struct Cli {
    /// Print answers as JSON, for scripts (the default is human-readable text).
    #[arg(long, global = true)]
    pub json: bool,
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
        #[arg(long, env = "SWITCHYARD_CLIENT_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Print the embedded default configuration.
    Defaults,
    /// Check, show or change the routing flags.
    Flags {
        #[command(subcommand)]
        command: FlagsCommand,
    },
    /// Show where a user lands on every route: cohort bucket, path and why. Asks the running
    /// gateway (its live flags, decided as its routes decide); --file decides offline instead.
    Cohort {
        /// The user id, as producers send it.
        user_id: String,
        /// Only this route (router_broadcast, scoped_broadcast, user_event or broadcast).
        #[arg(long)]
        route: Option<String>,
        /// Decide offline from this flags file instead of asking the gateway.
        #[arg(long, alias = "flags", value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show per route and path what the guard sees over its window: events/s, delivery
    /// ratios, client drops, shadow mismatches, verdict.
    Stats {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show recent shadow mismatches with their diffs.
    Mismatches {
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// At most this many, newest first.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Engage the kill switch (every route to legacy at once) or release it; nothing else
    /// changes.
    KillSwitch {
        /// engage or release.
        action: KillSwitchAction,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// List, inject or clear faults for drills (the gateway must allow fault injection).
    Faults {
        #[command(subcommand)]
        command: FaultsCommand,
    },
    /// Print a shell completion script: `switchyard completions bash > …`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// What `kill-switch` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KillSwitchAction {
    /// Send every route to legacy.
    Engage,
    /// Let every route's own flags decide again.
    Release,
}

#[derive(Subcommand)]
pub enum FaultsCommand {
    /// The faults in force.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make one path of one route fail a share of its deliveries or answer late.
    Set {
        /// router_broadcast, scoped_broadcast, user_event or broadcast.
        route: String,
        /// legacy or ssot.
        path: String,
        /// Share of deliveries to fail, 0 to 1 (counted as write_error).
        #[arg(long, default_value_t = 0.0)]
        drop_ratio: f64,
        /// Delay before the path serves, in milliseconds (at most 60000).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Clear every fault.
    Clear {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum FlagsCommand {
    /// Validate a flags file (for CI on flag changes); exits non-zero with the error.
    Check {
        /// The flags file to check.
        file: PathBuf,
    },
    /// Show the live flags of a running gateway.
    Show {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Change one route's flags on a running gateway.
    Set {
        /// router_broadcast, scoped_broadcast, user_event or broadcast.
        route: String,
        /// Share of users (a sticky cohort) on SSOT, 0 to 100; ends a running ramp.
        #[arg(long)]
        ssot_percent: Option<f64>,
        /// Mirror the route's events to the other path as a dry run and compare: true or false.
        #[arg(long)]
        shadow: Option<bool>,
        /// Share of users whose events are shadowed, 0 to 100.
        #[arg(long)]
        shadow_sample_percent: Option<f64>,
        /// Comma-separated user ids always on SSOT (replaces the list).
        #[arg(long, value_delimiter = ',')]
        pin_ssot: Option<Vec<String>>,
        /// Comma-separated user ids always on legacy (replaces the list).
        #[arg(long, value_delimiter = ',')]
        pin_legacy: Option<Vec<String>>,
        /// Comma-separated fields (names or JSON pointers) the shadow comparison ignores
        /// (replaces the list; an empty value clears it).
        #[arg(long, value_delimiter = ',')]
        ignore_fields: Option<Vec<String>>,
        /// Clear the route's rollback latch.
        #[arg(long)]
        clear_latch: bool,
        #[command(flatten)]
        change: ChangeArgs,
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
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Roll every route (or the given ones) back to legacy, latched until cleared.
    Rollback {
        /// Why, for the audit log.
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
    /// Show the change history of a running gateway, newest first.
    Audit {
        /// At most this many entries.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only entries about this route (its settings, or ones every route shares).
        #[arg(long)]
        route: Option<String>,
        /// Only entries from this time on: RFC 3339 (2026-12-03T07:00:00Z) or unix seconds.
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// What every change of the flags takes: why, the version it expects, and the gateway.
#[derive(clap::Args)]
pub struct ChangeArgs {
    /// Why, for the audit log.
    #[arg(long)]
    pub reason: String,
    /// Apply only if the live flags are still at this version.
    #[arg(long)]
    pub if_match: Option<u64>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(clap::Args)]
pub struct AdminArgs {
    /// The gateway's admin listener, http:// or https://.
    #[arg(long, env = "ADMIN_URL", default_value = "http://127.0.0.1:9090")]
    pub admin_url: String,
    /// An admin token (as printed by `serve --dev`).
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    /// Every argument of every command says what it is for in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (about)", sub.get_name()));
                }
                check(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        check(&Cli::command(), "switchyard", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
        Cli::command().debug_assert();
    }
}
