//! The operator commands: `serve` once the configuration is loaded, `client`, checking a flags
//! file, and the commands that read and change a running gateway through its admin API (flags,
//! ramps, rollbacks, the kill switch, the audit, stats, mismatches, faults, where a user lands).
//! Each prints human-readable text, or the API's JSON with `--json`, and returns a [`CliError`];
//! the binary maps it to an exit code.

mod args;
mod render;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub use self::args::{
    AdminArgs, ChangeArgs, Cli, Command, FaultsCommand, FlagsCommand, KillSwitchAction,
};
use self::render::Render;
use crate::client::ClientError;
use crate::config::{Config, ConfigError};
use crate::flags::{FlagSet, FlagsError};
use crate::route::Route;
use crate::routing::decide;
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
    /// A flags file that does not validate (`flags check`, `cohort --file`).
    #[error(transparent)]
    Flags(#[from] FlagsError),
    /// A route name no route has (`cohort --file --route`).
    #[error("no route {0:?}; routes are router_broadcast, scoped_broadcast, user_event, broadcast")]
    UnknownRoute(String),
    /// A command that talks to the gateway was given no admin token.
    #[error(
        "no admin token: set ADMIN_TOKEN (as `serve --dev` prints it) or pass --token; the \
         gateway is ADMIN_URL ({admin_url}) or --admin-url"
    )]
    MissingToken { admin_url: String },
    /// The admin API answered, but not with a success: its status, error code and message.
    #[error("HTTP {status} {code}: {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    /// The admin API could not be reached or did not answer.
    #[error(transparent)]
    Admin(#[from] AdminCallError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Why an admin call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AdminCallError {
    #[error("ADMIN_URL (or --admin-url) {url:?} is not an http:// or https:// URL")]
    Url { url: String },
    #[error("connecting to {authority} (ADMIN_URL, or --admin-url): {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error("HTTP handshake with {authority}: {source}")]
    Handshake {
        authority: String,
        source: hyper::Error,
    },
    #[error("TLS with {authority}: {message}")]
    Tls { authority: String, message: String },
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

/// Prints a completion script for `shell` (`switchyard completions bash`).
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    use clap::CommandFactory as _;
    clap_complete::generate(shell, &mut Cli::command(), "switchyard", out);
}

/// Runs a command that checks a file or talks to a running gateway, and prints its answer:
/// human-readable, or the admin API's JSON with `json`.
pub async fn operate(command: Command, json: bool) -> Result<(), CliError> {
    let (call, render) = match admin_action(command) {
        Action::Check(file) => {
            let report = check_flags_file(&file)?;
            if json {
                println!("{}", json!({ "file": file, "ok": true, "summary": report }));
            } else {
                println!("{}", report.trim_end());
            }
            return Ok(());
        }
        Action::CohortFile {
            file,
            user_id,
            route,
        } => {
            let answer = cohort_file(&file, &user_id, route.as_deref())?;
            print_answer(&answer, Render::Cohort, json);
            return Ok(());
        }
        Action::Local(text) => {
            print!("{text}");
            return Ok(());
        }
        Action::Call(call, render) => (call, render),
    };
    let (status, answer) = admin_request(call?).await?;
    if !(200..300).contains(&status) {
        let text = |key: &str| answer["error"][key].as_str().unwrap_or_default().to_owned();
        return Err(CliError::Rejected {
            status,
            code: text("code"),
            message: match text("message") {
                message if message.is_empty() => answer.to_string(),
                message => message,
            },
        });
    }
    print_answer(&answer, render, json);
    Ok(())
}

fn print_answer(answer: &Value, render: Render, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(answer).unwrap_or_default()
        );
    } else {
        println!("{}", render.text(answer).trim_end());
    }
}

/// Where `user_id` lands under the flags in `file`, decided here as the gateway decides, in the
/// shape of `GET /admin/cohort`. The file must exist: deciding from the defaults when it is
/// missing would answer for flags no gateway has.
fn cohort_file(file: &Path, user_id: &str, route: Option<&str>) -> Result<Value, CliError> {
    let text = std::fs::read_to_string(file).map_err(|error| read_error(file, &error))?;
    let flags = FlagSet::parse(&text, &file.display().to_string())?;
    let routes = match route {
        None => Route::ALL.to_vec(),
        Some(name) => {
            vec![Route::from_name(name).ok_or_else(|| CliError::UnknownRoute(name.to_owned()))?]
        }
    };
    let view = crate::server::admin::cohort_view(&flags, user_id, &routes, |route| {
        decide(&flags, route, user_id)
    });
    Ok(serde_json::to_value(view).unwrap_or_default())
}

/// What a command does: check a file or decide a cohort here, print something made here, or
/// make one call to the admin API (an error when it has no token) and render its answer.
enum Action {
    Check(PathBuf),
    CohortFile {
        file: PathBuf,
        user_id: String,
        route: Option<String>,
    },
    Local(String),
    Call(Result<AdminCall, CliError>, Render),
}

fn admin_action(command: Command) -> Action {
    let query = query_string;
    let (call, render) = match command {
        Command::Flags { command } => return flags_action(command),
        Command::Cohort {
            user_id,
            route,
            file: Some(file),
            ..
        } => {
            return Action::CohortFile {
                file,
                user_id,
                route,
            };
        }
        Command::Cohort {
            user_id,
            route,
            file: None,
            admin,
        } => {
            let path = format!(
                "/admin/cohort{}",
                query(&[("user_id", Some(user_id)), ("route", route)])
            );
            (AdminCall::new(admin, Method::GET, path), Render::Cohort)
        }
        Command::Stats { admin } => (
            AdminCall::new(admin, Method::GET, "/admin/stats".into()),
            Render::Stats,
        ),
        Command::Mismatches {
            route,
            limit,
            admin,
        } => {
            let path = format!(
                "/admin/shadow/mismatches{}",
                query(&[("route", route), ("limit", Some(limit.to_string()))])
            );
            (AdminCall::new(admin, Method::GET, path), Render::Mismatches)
        }
        Command::KillSwitch { action, change } => {
            let engaged = action == KillSwitchAction::Engage;
            let body = json!({ "engaged": engaged, "reason": change.reason });
            let path = "/admin/kill-switch".to_owned();
            change_call(change.admin, Method::POST, path, body, change.if_match)
        }
        Command::Faults { command } => faults_call(command),
        Command::Serve { .. } | Command::Client { .. } | Command::Defaults => {
            return Action::Local(String::new());
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            completions(shell, &mut out);
            return Action::Local(String::from_utf8_lossy(&out).into_owned());
        }
    };
    Action::Call(call, render)
}

fn faults_call(command: FaultsCommand) -> (Result<AdminCall, CliError>, Render) {
    match command {
        FaultsCommand::List { admin } => (
            AdminCall::new(admin, Method::GET, "/admin/faults".into()),
            Render::Faults,
        ),
        FaultsCommand::Set {
            route,
            path,
            drop_ratio,
            delay_ms,
            reason,
            admin,
        } => {
            let body = json!({
                "route": route, "path": path, "drop_ratio": drop_ratio,
                "delay_ms": delay_ms, "reason": reason,
            });
            change_call(admin, Method::POST, "/admin/faults".into(), body, None)
        }
        FaultsCommand::Clear { admin } => (
            AdminCall::new(admin, Method::DELETE, "/admin/faults".into()),
            Render::Summary,
        ),
    }
}

/// A query string value, percent-encoded but for the characters that never need it.
fn query_escape(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn flags_action(command: FlagsCommand) -> Action {
    // `flags set` and `flags ramp`: a PATCH of one route, with the change's If-Match.
    let patch_route = |route: &str, body: Value, change: ChangeArgs| {
        let path = format!("/admin/flags/routes/{route}");
        change_call(change.admin, Method::PATCH, path, body, change.if_match)
    };
    let (call, render) = match command {
        FlagsCommand::Check { file } => return Action::Check(file),
        FlagsCommand::Show { admin } => (
            AdminCall::new(admin, Method::GET, "/admin/flags".into()),
            Render::Flags,
        ),
        FlagsCommand::Set {
            route,
            ssot_percent,
            shadow,
            shadow_sample_percent,
            pin_ssot,
            pin_legacy,
            ignore_fields,
            clear_latch,
            change,
        } => {
            let patch = only_given(
                change.reason.clone(),
                [
                    ("ssot_percent", given(ssot_percent)),
                    ("shadow", given(shadow)),
                    ("shadow_sample_percent", given(shadow_sample_percent)),
                    ("pin_ssot", given(pin_ssot)),
                    ("pin_legacy", given(pin_legacy)),
                    ("ignore_fields", given(ignore_fields.map(non_empty))),
                    ("clear_latch", clear_latch.then_some(Value::Bool(true))),
                ],
            );
            patch_route(&route, patch, change)
        }
        FlagsCommand::Ramp {
            route,
            steps,
            step_seconds,
            cancel,
            change,
        } => {
            let ramp = ramp_request(cancel, steps, step_seconds);
            let body = json!({ "reason": &change.reason, "ramp": ramp });
            patch_route(&route, body, change)
        }
        FlagsCommand::Rollback {
            reason,
            routes,
            admin,
        } => {
            let routes = (!routes.is_empty()).then(|| json!(routes));
            let body = only_given(reason, [("routes", routes)]);
            change_call(admin, Method::POST, "/admin/rollback".into(), body, None)
        }
        FlagsCommand::Reload { admin } => (
            AdminCall::new(admin, Method::POST, "/admin/flags/reload".into()),
            Render::Summary,
        ),
        FlagsCommand::Audit {
            limit,
            route,
            since,
            admin,
        } => {
            let pairs = [
                ("limit", Some(limit.to_string())),
                ("route", route),
                ("since", since),
            ];
            let path = format!("/admin/audit{}", query_string(&pairs));
            (AdminCall::new(admin, Method::GET, path), Render::Audit)
        }
    };
    Action::Call(call, render)
}

/// A call that changes something, answered with a change summary.
fn change_call(
    admin: AdminArgs,
    method: Method,
    path: String,
    body: Value,
    if_match: Option<u64>,
) -> (Result<AdminCall, CliError>, Render) {
    let call = AdminCall::new(admin, method, path)
        .map(|call| call.with_body(body).with_if_match(if_match));
    (call, Render::Summary)
}

/// `"ramp"`: the steps and their time, or `null` to cancel.
fn ramp_request(cancel: bool, steps: Option<Vec<f64>>, step_seconds: Option<u64>) -> Value {
    match (cancel, steps, step_seconds) {
        (false, Some(steps), Some(step_seconds)) => {
            json!({ "steps": steps, "step_seconds": step_seconds })
        }
        // clap requires both unless --cancel, which excludes them.
        _ => Value::Null,
    }
}

/// A field's value, when it was given.
fn given<T: Into<Value>>(value: Option<T>) -> Option<Value> {
    value.map(Into::into)
}

/// A request body: the reason and the fields that were given.
fn only_given<const N: usize>(reason: String, fields: [(&str, Option<Value>); N]) -> Value {
    let mut patch = serde_json::Map::new();
    patch.insert("reason".into(), json!(reason));
    patch.extend(
        fields
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_owned(), value?))),
    );
    Value::Object(patch)
}

/// `?key=value&…` for the pairs that have a value (escaped), or nothing.
fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let pairs: Vec<String> = pairs
        .iter()
        .filter_map(|(key, value)| Some(format!("{key}={}", query_escape(value.as_ref()?))))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

/// `--ignore-fields ""` clears the list: clap reads it as one empty field.
fn non_empty(fields: Vec<String>) -> Vec<String> {
    fields.into_iter().filter(|f| !f.is_empty()).collect()
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
    /// A call with the admin token; an error naming `ADMIN_TOKEN` when there is none.
    fn new(admin: AdminArgs, method: Method, path: String) -> Result<AdminCall, CliError> {
        let Some(token) = admin.token.filter(|token| !token.is_empty()) else {
            return Err(CliError::MissingToken {
                admin_url: admin.admin_url,
            });
        };
        Ok(AdminCall {
            base_url: admin.admin_url,
            token,
            method,
            path,
            body: None,
            if_match: None,
        })
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

/// Performs an admin call over `http://` or `https://`; returns the status and the answer (a
/// JSON string value when the answer is not JSON).
pub async fn admin_request(call: AdminCall) -> Result<(u16, Value), AdminCallError> {
    let url_error = || AdminCallError::Url {
        url: call.base_url.clone(),
    };
    let (tls, rest) = match call.base_url.split_once("://") {
        Some(("http", rest)) => (false, rest),
        Some(("https", rest)) => (true, rest),
        _ => return Err(url_error()),
    };
    let authority = rest.trim_end_matches('/').to_owned();
    if authority.is_empty() || authority.contains('/') {
        return Err(url_error());
    }
    let stream = TcpStream::connect(with_default_port(&authority, tls))
        .await
        .map_err(|source| AdminCallError::Connect {
            authority: authority.clone(),
            source,
        })?;
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
    let (status, bytes) = if tls {
        let stream = tls_connect(&authority, stream).await?;
        send(&authority, stream, request, &call.path).await?
    } else {
        send(&authority, stream, request, &call.path).await?
    };
    let answer = serde_json::from_slice::<Value>(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, answer))
}

/// `host:port`, with the scheme's port when the URL names none.
fn with_default_port(authority: &str, tls: bool) -> String {
    let has_port = if authority.starts_with('[') {
        authority.contains("]:")
    } else {
        authority.contains(':')
    };
    if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    }
}

/// One HTTP/1 request on `stream`; the status and the whole answer body.
async fn send<S>(
    authority: &str,
    stream: S,
    request: Request<Full<Bytes>>,
    path: &str,
) -> Result<(u16, Bytes), AdminCallError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|source| AdminCallError::Handshake {
                authority: authority.to_owned(),
                source,
            })?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|source| AdminCallError::Send {
            path: path.to_owned(),
            source,
        })?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(AdminCallError::Answer)?
        .to_bytes();
    Ok((status, bytes))
}

/// TLS over `stream` to the host of `authority`, verified against the system's roots (or the
/// bundle `SSL_CERT_FILE` names).
async fn tls_connect(
    authority: &str,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, AdminCallError> {
    use tokio_rustls::rustls;
    let tls_error = |message: String| AdminCallError::Tls {
        authority: authority.to_owned(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // A certificate the store cannot take is skipped, as browsers and curl do.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(tls_error(format!(
            "no trusted root certificates found (set SSL_CERT_FILE to a PEM bundle): {:?}",
            found.errors
        )));
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| tls_error(error.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|error| tls_error(error.to_string()))?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(server_name, stream)
        .await
        .map_err(|error| tls_error(error.to_string()))
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
            Action::Call(Ok(call), _) => (call.method, call.path, call.body, call.if_match),
            _ => panic!("not an admin call: {args:?}"),
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
    fn cohort_offline_needs_the_file_it_names() {
        // Deciding from the defaults for a file that is not there would answer for flags no
        // gateway has.
        let missing = Path::new("/nonexistent/flags.toml");
        let error = cohort_file(missing, "alice", None).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/flags.toml"),
            "{error}"
        );
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(query_escape("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(query_escape("user-1.x_y~"), "user-1.x_y~");
    }
}
