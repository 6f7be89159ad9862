//! The operator commands: `serve` once the configuration is loaded, `client`, checking a flags
//! file, reading and changing the live flags through the admin API (ramps included), and showing
//! where a user lands. Each returns a [`CliError`]; the binary maps it to an exit code.

mod args;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub use self::args::{AdminArgs, Cli, Command, FlagsCommand};
use crate::client::ClientError;
use crate::config::{Config, ConfigError};
use crate::flags::{FlagSet, FlagsError};
use crate::route::Route;
use crate::routing::{cohort_bucket, decide};
use crate::{BindError, Listeners, RunError};

/// Why a command failed. Its message is what the operator sees after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Dev mode's own flags file could not be prepared.
    #[error("dev mode's flags file {path}: {source}")]
    DevFlags {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading bound addresses: {0}")]
    LocalAddrs(std::io::Error),
    /// The gateway refused to start: a key, the flags file.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A flags file that does not validate (`flags check`, `cohort`).
    #[error(transparent)]
    Flags(#[from] FlagsError),
    /// The admin API answered, but not with a success.
    #[error("HTTP {status}\n{body}")]
    Rejected { status: u16, body: String },
    /// The admin API could not be reached or did not answer.
    #[error(transparent)]
    Admin(#[from] AdminCallError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Why an admin call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AdminCallError {
    #[error("{url}: only http:// admin URLs are supported")]
    Url { url: String },
    #[error("connecting to {authority}: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error("HTTP handshake with {authority}: {source}")]
    Handshake {
        authority: String,
        source: hyper::Error,
    },
    #[error("building the request: {0}")]
    Request(hyper::http::Error),
    #[error("calling {path}: {source}")]
    Send { path: String, source: hyper::Error },
    #[error("reading the answer: {0}")]
    Answer(hyper::Error),
}

/// Binds the listeners, prints where the gateway listens (and the dev tokens), and serves until
/// SIGTERM or SIGINT.
pub async fn serve(config: Config) -> Result<(), CliError> {
    if config.server.flags_path_is_dev_scratch {
        start_dev_flags_file(&config.server.flags_path)?;
    }
    let listeners = Listeners::bind(&config).await?;
    let (public, admin) = listeners.local_addrs().map_err(CliError::LocalAddrs)?;
    println!(
        "switchyard listening: clients and producers on http://{public}, admin on http://{admin}"
    );
    if config.dev {
        print_dev_banner(&config, public, admin);
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    // `run` fails only on what it finds at start (a key, the flags file); once serving, it ends
    // when asked to and exits 0, even when the grace period had to cut connections short.
    crate::run(config, listeners, shutdown).await?;
    Ok(())
}

/// Writes dev mode's flags file for this run: `version = 0`, the defaults on purpose (a missing
/// file would be the defaults too, but is worth a warning everywhere else).
fn start_dev_flags_file(path: &Path) -> Result<(), CliError> {
    let dev_flags_error = |source| CliError::DevFlags {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(dev_flags_error)?;
    }
    std::fs::write(
        path,
        "# switchyard serve --dev: this run's routing flags, the defaults to start with.\n\
         # `serve --dev --flags FILE` keeps them in FILE instead, across restarts.\n\
         version = 0\n",
    )
    .map_err(dev_flags_error)
}

/// What a developer pastes into another terminal: the URLs and the tokens made up for this run,
/// as `export` lines the README's commands and the CLI read.
fn print_dev_banner(config: &Config, public: SocketAddr, admin: SocketAddr) {
    println!(
        "dev mode: clients may connect with ws://{public}/ws?user_id=NAME; flags file {}",
        config.server.flags_path.display()
    );
    println!("paste these into another terminal:");
    println!("export PRODUCER_URL=http://{public}");
    println!("export ADMIN_URL=http://{admin}");
    for (name, secret) in &config.auth.producer_tokens {
        println!("export PRODUCER_TOKEN={secret}   # producer {name:?}");
    }
    for (name, secret) in &config.auth.admin_tokens {
        println!("export ADMIN_TOKEN={secret}   # admin {name:?}");
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

/// Connects as a client and prints every frame received until the gateway closes.
pub async fn client(
    url: String,
    user_id: Option<String>,
    token: Option<String>,
) -> Result<(), CliError> {
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
    let closed = crate::client::listen(&url, tokio::io::stdout()).await?;
    eprintln!(
        "connection closed: code {} {}",
        closed
            .code
            .map_or_else(|| "none".to_owned(), |c| c.to_string()),
        closed.reason
    );
    Ok(())
}

/// Prints where `user_id` lands on every route (`switchyard cohort`).
pub fn cohort(flags_path: &Path, user_id: &str) -> Result<(), CliError> {
    println!("{}", cohort_report(flags_path, user_id)?.trim_end());
    Ok(())
}

/// Runs a `flags` subcommand: checks a file locally, or calls the admin API and prints its
/// answer.
pub async fn flags(command: FlagsCommand) -> Result<(), CliError> {
    let call = match flags_action(command) {
        FlagsAction::Check(file) => {
            println!("{}", check_flags_file(&file)?.trim_end());
            return Ok(());
        }
        FlagsAction::Call(call) => call,
    };
    let (status, text) = admin_request(call).await?;
    if !(200..300).contains(&status) {
        return Err(CliError::Rejected { status, body: text });
    }
    println!("{text}");
    Ok(())
}

/// What a `flags` subcommand does: check a file here, or make one call to the admin API.
enum FlagsAction {
    Check(PathBuf),
    Call(AdminCall),
}

fn flags_action(command: FlagsCommand) -> FlagsAction {
    let route_path = |route: &str| format!("/admin/flags/routes/{route}");
    let call = match command {
        FlagsCommand::Check { file } => return FlagsAction::Check(file),
        FlagsCommand::Show { admin } => AdminCall::new(admin, Method::GET, "/admin/flags".into()),
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
            let fields = [
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
            let mut patch = serde_json::Map::new();
            patch.insert("reason".into(), json!(reason));
            patch.extend(
                fields
                    .into_iter()
                    .filter_map(|(key, value)| Some((key.to_owned(), value?))),
            );
            AdminCall::new(admin, Method::PATCH, route_path(&route))
                .with_body(Value::Object(patch))
                .with_if_match(if_match)
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
            AdminCall::new(admin, Method::PATCH, route_path(&route))
                .with_body(json!({ "reason": reason, "ramp": ramp }))
                .with_if_match(if_match)
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
            AdminCall::new(admin, Method::POST, "/admin/rollback".into()).with_body(body)
        }
        FlagsCommand::Reload { admin } => {
            AdminCall::new(admin, Method::POST, "/admin/flags/reload".into())
        }
        FlagsCommand::Audit { limit, admin } => {
            AdminCall::new(admin, Method::GET, format!("/admin/audit?limit={limit}"))
        }
    };
    FlagsAction::Call(call)
}

/// Validates a flags file; `Ok` carries a one-line summary, `Err` the error naming file, line
/// and key.
pub fn check_flags_file(path: &Path) -> Result<String, FlagsError> {
    let text = std::fs::read_to_string(path).map_err(|error| read_error(path, &error))?;
    let document = FlagSet::parse_document(&text, &path.display().to_string())?;
    let flags = document.flags;
    let routes: Vec<String> = Route::ALL
        .into_iter()
        .map(|route| {
            let r = flags.route(route);
            format!(
                "{} {:.2}%{}{}",
                route.as_str(),
                r.ssot_percent.as_f64(),
                if r.shadow { " shadow" } else { "" },
                if r.latch.is_some() { " LATCHED" } else { "" }
            )
        })
        .collect();
    let version = match document.declared_version {
        Some(version) => version.to_string(),
        // Valid as a first file at startup, but a running gateway refuses to reload it.
        None => "none: give the live version before reloading".to_owned(),
    };
    Ok(format!(
        "{}: ok (version {}{}); ssot share: {}",
        path.display(),
        version,
        if flags.kill_switch.engaged {
            ", KILL SWITCH ENGAGED"
        } else {
            ""
        },
        routes.join(", ")
    ))
}

/// Where `user_id` lands on every route under the flags in `flags_path` (the defaults when the
/// file does not exist).
pub fn cohort_report(flags_path: &Path, user_id: &str) -> Result<String, FlagsError> {
    let flags = match std::fs::read_to_string(flags_path) {
        Ok(text) => FlagSet::parse(&text, &flags_path.display().to_string())?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => FlagSet::defaults(),
        Err(error) => return Err(read_error(flags_path, &error)),
    };
    let bucket = cohort_bucket(&flags.salt, user_id.trim());
    let mut report = format!(
        "user {user_id:?}: bucket {bucket} of 10000 (salt {:?}, flags version {})\n",
        flags.salt, flags.version
    );
    for route in Route::ALL {
        let decision = decide(&flags, route, user_id);
        report.push_str(&format!(
            "  {:<17} {:<6} ({}; ssot_percent {:.2}){}\n",
            route.as_str(),
            decision.primary.as_str(),
            decision.reason.as_str(),
            flags.route(route).ssot_percent.as_f64(),
            decision
                .shadow
                .map_or(String::new(), |s| format!(", shadowed by {}", s.as_str()))
        ));
    }
    Ok(report)
}

/// Parses a duration given on the command line into seconds: whole seconds (`300`, `300s`),
/// minutes (`5m`) or hours (`1h`).
pub fn parse_duration_seconds(text: &str) -> Result<u64, String> {
    let invalid = || format!("{text:?} is not a duration like 300, 30s, 5m or 1h");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(invalid()),
    };
    number.checked_mul(scale).ok_or_else(invalid)
}

/// A call to the admin API: method, path and optional JSON body, with the admin token.
pub struct AdminCall {
    /// `http://host:port` of the admin listener.
    pub base_url: String,
    pub token: String,
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
    pub if_match: Option<u64>,
}

impl AdminCall {
    fn new(admin: AdminArgs, method: Method, path: String) -> AdminCall {
        AdminCall {
            base_url: admin.admin_url,
            token: admin.token,
            method,
            path,
            body: None,
            if_match: None,
        }
    }

    fn with_body(self, body: Value) -> AdminCall {
        AdminCall {
            body: Some(body),
            ..self
        }
    }

    fn with_if_match(self, if_match: Option<u64>) -> AdminCall {
        AdminCall { if_match, ..self }
    }
}

/// Performs an admin call; returns the status and the pretty-printed JSON answer.
pub async fn admin_request(call: AdminCall) -> Result<(u16, String), AdminCallError> {
    let authority = call
        .base_url
        .strip_prefix("http://")
        .ok_or_else(|| AdminCallError::Url {
            url: call.base_url.clone(),
        })?
        .trim_end_matches('/')
        .to_owned();
    let stream =
        TcpStream::connect(&authority)
            .await
            .map_err(|source| AdminCallError::Connect {
                authority: authority.clone(),
                source,
            })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|source| AdminCallError::Handshake {
                authority: authority.clone(),
                source,
            })?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(call.method)
        .uri(&call.path)
        .header("host", &authority)
        .header("authorization", format!("Bearer {}", call.token));
    if let Some(version) = call.if_match {
        request = request.header("if-match", format!("\"{version}\""));
    }
    let body = match call.body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    let request = request
        .body(Full::new(body))
        .map_err(AdminCallError::Request)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|source| AdminCallError::Send {
            path: call.path.clone(),
            source,
        })?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(AdminCallError::Answer)?
        .to_bytes();
    let text = match serde_json::from_slice::<Value>(&bytes) {
        Ok(value) => serde_json::to_string_pretty(&value).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
    };
    Ok((status, text))
}

fn read_error(path: &Path, error: &std::io::Error) -> FlagsError {
    FlagsError::Read {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_on_the_command_line() {
        for (text, expected) in [
            ("300", Ok(300)),
            ("30s", Ok(30)),
            ("5m", Ok(300)),
            ("1h", Ok(3600)),
            (" 2m ", Ok(120)),
            ("5 m", Err(())),
            ("5min", Err(())),
            ("-5", Err(())),
            ("m", Err(())),
            ("", Err(())),
            ("99999999999999999999h", Err(())),
        ] {
            assert_eq!(
                parse_duration_seconds(text).map_err(|_| ()),
                expected,
                "{text:?}"
            );
        }
    }

    /// The admin call `switchyard ARGS…` makes: method, path, body and if-match.
    fn call_for(args: &[&str]) -> (Method, String, Option<Value>, Option<u64>) {
        use clap::Parser as _;
        let cli = Cli::try_parse_from(
            ["switchyard", "flags"]
                .iter()
                .chain(args)
                .chain(&["--token", "t"]),
        )
        .unwrap();
        let Command::Flags { command } = cli.command else {
            panic!("not a flags command");
        };
        match flags_action(command) {
            FlagsAction::Call(call) => (call.method, call.path, call.body, call.if_match),
            FlagsAction::Check(file) => panic!("check {}", file.display()),
        }
    }

    #[test]
    fn flags_commands_send_only_what_was_given() {
        let (method, path, body, if_match) = call_for(&[
            "set",
            "broadcast",
            "--reason",
            "r",
            "--ssot-percent",
            "5",
            "--clear-latch",
            "--if-match",
            "7",
        ]);
        assert_eq!(method, Method::PATCH);
        assert_eq!(path, "/admin/flags/routes/broadcast");
        assert_eq!(
            body,
            Some(json!({ "reason": "r", "ssot_percent": 5.0, "clear_latch": true }))
        );
        assert_eq!(if_match, Some(7));
        let (_, _, body, _) = call_for(&["ramp", "user_event", "--cancel", "--reason", "r"]);
        assert_eq!(body, Some(json!({ "reason": "r", "ramp": null })));
        let (method, path, body, _) = call_for(&["rollback", "--reason", "r"]);
        assert_eq!((method, path.as_str()), (Method::POST, "/admin/rollback"));
        assert_eq!(body, Some(json!({ "reason": "r" })));
    }

    #[test]
    fn cohort_report_names_every_route() {
        let report = cohort_report(Path::new("/nonexistent/flags.toml"), "alice").unwrap();
        for route in Route::ALL {
            assert!(report.contains(route.as_str()), "{report}");
        }
        assert!(report.contains(&format!("bucket {}", cohort_bucket("switchyard", "alice"))));
    }
}
