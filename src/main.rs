//! The `switchyard` binary: parses the command line, sets up logging, loads the configuration and
//! dispatches to the library (`switchyard::cli`, `switchyard::run`). Exit codes, one table in
//! [`exit_code`] (README, "Exit codes"): 64 usage or configuration, 65 invalid input (a bad flags
//! file, a request the gateway refused as invalid), 69 unavailable (a listener not bound, a
//! gateway not reached), 70 other failures, 75 conflict (a stale `--if-match`), 77 not authorised.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use switchyard::cli::{self, AdminCallError, Cli, CliError, Command};
use switchyard::config::{Config, LogFormat, Overrides};

/// Exit codes, from BSD's sysexits.
const EXIT_USAGE: u8 = 64;
const EXIT_DATA: u8 = 65;
const EXIT_UNAVAILABLE: u8 = 69;
const EXIT_SOFTWARE: u8 = 70;
const EXIT_TEMPFAIL: u8 = 75;
const EXIT_NOPERM: u8 = 77;

/// mimalloc rather than glibc's malloc: the memory of offline queues and of bursts is given back
/// once freed (RSS 430 MB → 78 MB after 1M offline events replayed, glibc's stays at 430 MB), and
/// batches cost a little less CPU; single events are even (BENCHMARKS.md, "Issue 16: tuning
/// trials"). In-process tests (the library's) keep the system allocator; tests that run the
/// binary use this one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    // `serve` sets up logging once its configuration (`[log] format`) is loaded.
    if !matches!(cli.command, Command::Serve { .. }) {
        init_logging(LogFormat::Text);
    }
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
            init_logging(config.log.format);
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

/// Logs to stderr, filtered by `RUST_LOG` (default `info`): text, coloured only when stderr is
/// a terminal and `NO_COLOR` is unset or empty (no escape codes in a file or a journal); or JSON,
/// one object a line, never coloured. A log line stderr cannot take is dropped.
fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // On a failed write (stderr a pipe whose reader is gone) tracing-subscriber would report
        // it with `eprintln!`, which panics; in the SIGTERM task that panic would keep the
        // gateway from ever shutting down. A lost log line is the lesser harm.
        .log_internal_errors(false);
    match format {
        LogFormat::Text => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
            builder
                .with_ansi(std::io::stderr().is_terminal() && !no_color)
                .init();
        }
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// The exit code for each kind of failure, in one place.
fn exit_code(error: &CliError) -> u8 {
    match error {
        CliError::Config(_)
        | CliError::Run(_)
        | CliError::DevFlags { .. }
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
