//! The `switchyard` binary: parses the command line, sets up logging, loads the configuration and
//! calls into the library. Exit codes: 64 for configuration errors, 69 when a listener cannot be
//! bound, 70 for other runtime failures.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchyard::config::{Config, Overrides};
use switchyard::{Listeners, run};
use tokio_util::sync::CancellationToken;

const EXIT_CONFIG: u8 = 64;
const EXIT_UNAVAILABLE: u8 = 69;
const EXIT_SOFTWARE: u8 = 70;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "WebSocket event gateway for a safe legacy → SSOT broadcast migration"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
enum FlagsCommand {
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
            value_parser = switchyard::cli::parse_duration_seconds,
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
struct AdminArgs {
    /// The gateway's admin listener.
    #[arg(long, env = "ADMIN_URL", default_value = "http://127.0.0.1:9090")]
    admin_url: String,
    /// An admin token (as printed by `serve --dev`).
    #[arg(long, env = "ADMIN_TOKEN")]
    token: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the async runtime: {error}");
            return ExitCode::from(EXIT_SOFTWARE);
        }
    };
    match cli.command {
        Command::Serve {
            config,
            dev,
            listen,
            admin_listen,
            flags,
        } => {
            let overrides = Overrides {
                config_file: config,
                dev,
                listen,
                admin_listen,
                flags_path: flags,
            };
            runtime.block_on(serve(overrides))
        }
        Command::Client {
            url,
            user_id,
            token,
        } => runtime.block_on(client(url, user_id, token)),
        Command::Defaults => {
            print!("{}", switchyard::config::DEFAULTS_TOML);
            ExitCode::SUCCESS
        }
        Command::Cohort { user_id, flags } => {
            report(switchyard::cli::cohort_report(&flags, &user_id))
        }
        Command::Flags { command } => runtime.block_on(flags(command)),
    }
}

fn report(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn flags(command: FlagsCommand) -> ExitCode {
    use hyper::Method;
    use serde_json::{Value, json};
    let (admin, method, path, body, if_match) = match command {
        FlagsCommand::Check { file } => return report(switchyard::cli::check_flags_file(&file)),
        FlagsCommand::Show { admin } => (admin, Method::GET, "/admin/flags".to_owned(), None, None),
        FlagsCommand::Set {
            route,
            reason,
            ssot_percent,
            shadow,
            shadow_sample_percent,
            pin_ssot,
            pin_legacy,
            clear_latch,
            if_match,
            admin,
        } => {
            let mut patch = serde_json::Map::new();
            patch.insert("reason".into(), json!(reason));
            let fields: [(&str, Option<Value>); 6] = [
                ("ssot_percent", ssot_percent.map(Value::from)),
                ("shadow", shadow.map(Value::from)),
                (
                    "shadow_sample_percent",
                    shadow_sample_percent.map(Value::from),
                ),
                ("pin_ssot", pin_ssot.map(Value::from)),
                ("pin_legacy", pin_legacy.map(Value::from)),
                ("clear_latch", clear_latch.then_some(Value::Bool(true))),
            ];
            for (key, value) in fields {
                if let Some(value) = value {
                    patch.insert(key.into(), value);
                }
            }
            (
                admin,
                Method::PATCH,
                format!("/admin/flags/routes/{route}"),
                Some(Value::Object(patch)),
                if_match,
            )
        }
        FlagsCommand::Ramp {
            route,
            steps,
            step_seconds,
            cancel,
            reason,
            if_match,
            admin,
        } => {
            let ramp = match (cancel, steps, step_seconds) {
                (false, Some(steps), Some(step_seconds)) => {
                    json!({ "steps": steps, "step_seconds": step_seconds })
                }
                // clap requires both unless --cancel, which excludes them.
                _ => Value::Null,
            };
            (
                admin,
                Method::PATCH,
                format!("/admin/flags/routes/{route}"),
                Some(json!({ "reason": reason, "ramp": ramp })),
                if_match,
            )
        }
        FlagsCommand::Rollback {
            reason,
            routes,
            admin,
        } => {
            let mut body = json!({ "reason": reason });
            if !routes.is_empty() {
                body["routes"] = json!(routes);
            }
            (
                admin,
                Method::POST,
                "/admin/rollback".to_owned(),
                Some(body),
                None,
            )
        }
        FlagsCommand::Reload { admin } => (
            admin,
            Method::POST,
            "/admin/flags/reload".to_owned(),
            None,
            None,
        ),
        FlagsCommand::Audit { limit, admin } => (
            admin,
            Method::GET,
            format!("/admin/audit?limit={limit}"),
            None,
            None,
        ),
    };
    let call = switchyard::cli::AdminCall {
        base_url: &admin.admin_url,
        token: &admin.token,
        method,
        path,
        body,
        if_match,
    };
    match switchyard::cli::admin_request(call).await {
        Ok((status, text)) if (200..300).contains(&status) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok((status, text)) => {
            eprintln!("error: HTTP {status}\n{text}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

async fn serve(overrides: Overrides) -> ExitCode {
    let config = match Config::load(&overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let listeners = match Listeners::bind(&config).await {
        Ok(listeners) => listeners,
        Err(error) => {
            eprintln!(
                "error: binding {} and {}: {error}",
                config.server.listen, config.server.admin_listen
            );
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let (public, admin) = match listeners.local_addrs() {
        Ok(addrs) => addrs,
        Err(error) => {
            eprintln!("error: reading bound addresses: {error}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    println!(
        "switchyard listening: clients and producers on http://{public}, admin on http://{admin}"
    );
    if config.dev {
        println!(
            "dev mode: clients may connect with ws://{public}/ws?user_id=NAME; tokens for this run:"
        );
        for (name, secret) in &config.auth.producer_tokens {
            println!("export PRODUCER_TOKEN={secret}   # producer {name:?}");
        }
        for (name, secret) in &config.auth.admin_tokens {
            println!("export ADMIN_TOKEN={secret}   # admin {name:?}");
        }
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    // `run` fails only on what it finds at start (a key, the flags file); once serving, it ends
    // when asked to and exits 0, even when the grace period had to cut connections short.
    match run(config, listeners, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn signal_shutdown(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}

async fn client(url: String, user_id: Option<String>, token: Option<String>) -> ExitCode {
    let mut url = url;
    let mut params = Vec::new();
    if let Some(user_id) = user_id {
        params.push(format!("user_id={user_id}"));
    }
    if let Some(token) = token {
        params.push(format!("token={token}"));
    }
    if !params.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&params.join("&"));
    }
    match switchyard::client::listen(&url, tokio::io::stdout()).await {
        Ok(closed) => {
            eprintln!(
                "connection closed: code {} {}",
                closed
                    .code
                    .map_or_else(|| "none".to_owned(), |c| c.to_string()),
                closed.reason
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}
