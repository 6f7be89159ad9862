//! The `switchyard` binary: parses the command line, sets up logging, loads the configuration and
//! dispatches to the library (`switchyard::cli`, `switchyard::run`). Exit codes, one table in
//! [`exit_code`] (README, "Exit codes"): 64 usage or configuration, 65 invalid input (a bad flags
//! file, a request the gateway refused as invalid), 69 unavailable (a listener not bound, a
//! gateway not reached), 70 other failures, 75 conflict (a stale `--if-match`), 77 not authorised.

use std::process::ExitCode;

use clap::Parser;
use switchyard::cli::{self, AdminCallError, Cli, CliError, Command};
use switchyard::config::{Config, Overrides};

/// Exit codes, from BSD's sysexits.
const EXIT_USAGE: u8 = 64;
const EXIT_DATA: u8 = 65;
const EXIT_UNAVAILABLE: u8 = 69;
const EXIT_SOFTWARE: u8 = 70;
const EXIT_TEMPFAIL: u8 = 75;
const EXIT_NOPERM: u8 = 77;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // `--help` and `--version` are answers, not errors.
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match dispatch(cli.command, cli.json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(exit_code(&error))
        }
    }
}

fn dispatch(command: Command, json: bool) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    match command {
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
            let config = Config::load(&overrides)?;
            runtime.block_on(cli::serve(config))
        }
        Command::Client {
            url,
            user_id,
            token,
        } => runtime.block_on(cli::client(url, user_id, token)),
        Command::Defaults => {
            print!("{}", switchyard::config::DEFAULTS_TOML);
            Ok(())
        }
        command => runtime.block_on(cli::operate(command, json)),
    }
}

/// The exit code for each kind of failure, in one place.
fn exit_code(error: &CliError) -> u8 {
    match error {
        CliError::Config(_)
        | CliError::Run(_)
        | CliError::MissingToken { .. }
        | CliError::Admin(AdminCallError::Url { .. }) => EXIT_USAGE,
        CliError::Flags(_) | CliError::UnknownRoute(_) => EXIT_DATA,
        CliError::Rejected { status, .. } => match status {
            401 | 403 => EXIT_NOPERM,
            409 | 412 => EXIT_TEMPFAIL,
            400..=499 => EXIT_DATA,
            503 => EXIT_UNAVAILABLE,
            _ => EXIT_SOFTWARE,
        },
        CliError::Bind { .. }
        | CliError::LocalAddrs(_)
        | CliError::Admin(_)
        | CliError::Client(_) => EXIT_UNAVAILABLE,
        CliError::Runtime(_) => EXIT_SOFTWARE,
    }
}
