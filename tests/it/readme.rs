//! The README's walkthrough works as written, top to bottom: its run, client and publish commands,
//! taken from the README itself, start the real binary, connect the built-in client and deliver
//! the published event to it; then the runbook's commands run against that gateway with only the
//! `export` lines it printed (and the installed binary on `PATH`), and never touch the tracked
//! `flags.toml`. Also the README's claims about refusing to start, its metric names, and that its
//! test command is the one CI runs.
//!
//! Commands are found by the HTML comment `<!-- readme-test: NAME -->` right before their fenced
//! block, so rewording the prose around them cannot silently unhook this test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::harness::{PROMPTLY, Raw, http, parse_json};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
pub const BINARY: &str = env!("CARGO_BIN_EXE_switchyard");
/// How long the gateway may take to stop after SIGTERM (its default grace period is 10 s).
const SHUTDOWN: Duration = Duration::from_secs(30);
/// What the README's commands read from the environment: the `export` lines `serve --dev`
/// prints, and nothing the test's own environment might hold.
const EXPORTED: [&str; 4] = ["PRODUCER_URL", "ADMIN_URL", "PRODUCER_TOKEN", "ADMIN_TOKEN"];

#[tokio::test]
async fn readme_walkthrough_delivers_the_published_event_to_the_client() {
    let readme = read_readme();
    let run_args = cargo_run_args(&readme_block(&readme, "run"));
    let client_args = cargo_run_args(&readme_block(&readme, "client"));
    let publish = readme_block(&readme, "publish");
    assert_eq!(run_args, ["serve", "--dev"], "the README's run command");
    assert!(
        !client_args.iter().any(|arg| arg == "--url"),
        "the README's client command uses the default URL: {client_args:?}"
    );
    let client_user = value_after(&client_args, "--user-id");
    assert!(
        publish.contains("\"$PRODUCER_URL/"),
        "the publish command uses the printed PRODUCER_URL: {publish}"
    );
    let body = publish_body(&publish);
    assert_eq!(
        body["user_id"], client_user,
        "the README publishes to the user its client connects as"
    );

    // The gateway, on port 0 instead of the README's 8080, from the repository root.
    let tracked_flags = std::fs::read(Path::new(MANIFEST_DIR).join("flags.toml")).ok();
    let mut gateway = serve_on_loopback()
        .args(&run_args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start switchyard serve");
    let mut gateway_out = BufReader::new(gateway.stdout.take().unwrap()).lines();
    let banner = dev_banner(&mut gateway_out).await;
    let (public, admin) = (banner.public, banner.admin);
    assert!(
        !banner.flags_file.starts_with(MANIFEST_DIR),
        "serve --dev keeps its flags outside the repository: {}",
        banner.flags_file.display()
    );

    // The README's client, pointed at the bound address.
    let mut client = switchyard()
        .args(&client_args)
        .args(["--url", &format!("ws://{public}/ws")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchyard client");
    let mut client_out = BufReader::new(client.stdout.take().unwrap()).lines();
    let greeting = parse_json(next_line(&mut client_out, "client").await.as_bytes());
    assert_eq!(greeting["type"], "connection_established", "{greeting}");
    assert_eq!(greeting["data"]["user_id"], client_user, "{greeting}");

    // The README's curl command, verbatim, with the printed exports pasted.
    let curl = run_pasted(&publish, &banner.exports).await;
    assert!(curl.status.success(), "publish command failed: {curl:?}");
    let result = parse_json(&curl.stdout);
    assert_eq!(result["successful_sends"], 1, "{result}");
    assert_eq!(result["user_id"], client_user, "{result}");

    let frame = parse_json(next_line(&mut client_out, "client").await.as_bytes());
    assert_eq!(
        frame, body["event"],
        "the client prints the published event"
    );

    // Every metric the README names is one the gateway exports.
    let (status, _, metrics) = http(admin, Method::GET, "/metrics", &[], Bytes::new()).await;
    assert_eq!(status.as_u16(), 200);
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    let unknown: Vec<String> = metric_names_in(&readme)
        .into_iter()
        .filter(|name| !is_exported(&metrics, name))
        .collect();
    assert!(
        unknown.is_empty(),
        "the README names metrics /metrics does not export: {unknown:?}"
    );

    run_the_runbook(&readme, &banner).await;

    // SIGTERM: the gateway closes the client with 1001 and exits 0; the client exits 0 too.
    let gateway_status = terminate(&mut gateway, SHUTDOWN).await;
    assert_eq!(gateway_status.code(), Some(0), "gateway: {gateway_status}");
    let mut client_err = String::new();
    client
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut client_err)
        .await
        .unwrap();
    let client_status = tokio::time::timeout(PROMPTLY, client.wait())
        .await
        .expect("the client exits once the gateway closes it")
        .unwrap();
    assert!(
        client_status.success(),
        "client: {client_status}, {client_err}"
    );
    assert!(
        client_err.contains("code 1001"),
        "client stderr: {client_err}"
    );
    assert_eq!(
        std::fs::read(Path::new(MANIFEST_DIR).join("flags.toml")).ok(),
        tracked_flags,
        "the walkthrough left the tracked flags.toml as it was"
    );
    assert_eq!(
        tokio::time::timeout(PROMPTLY, client_out.next_line())
            .await
            .expect("client output ends")
            .unwrap(),
        None,
        "the client prints nothing after the event"
    );
}

#[tokio::test]
async fn sigterm_with_a_half_sent_request_open_exits_0_within_the_grace_period() {
    let mut gateway = serve_on_loopback()
        .args(["serve", "--dev"])
        .env(
            "SWITCHYARD_SERVER_FLAGS_PATH",
            "/nonexistent/switchyard/flags.toml",
        )
        .env("SWITCHYARD_SERVER_SHUTDOWN_GRACE_MS", "1000")
        // Only the grace period can end the requests below.
        .env("SWITCHYARD_LIMITS_HTTP_HEADER_READ_TIMEOUT_MS", "600000")
        .env("SWITCHYARD_LIMITS_HTTP_BODY_TIMEOUT_MS", "600000")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start switchyard serve");
    let mut out = BufReader::new(gateway.stdout.take().unwrap()).lines();
    let banner = dev_banner(&mut out).await;
    let (public, admin) = (banner.public, banner.admin);
    let producer_token = banner.export("PRODUCER_TOKEN");
    let mut half_head = Raw::connect(public).await;
    half_head
        .send(b"POST /v1/broadcast HTTP/1.1\r\nhost: switchyard\r\ncontent-le")
        .await
        .unwrap();
    let mut half_body = Raw::connect(public).await;
    half_body
        .send(
            format!(
                "POST /v1/broadcast HTTP/1.1\r\nhost: switchyard\r\ncontent-type: application/json\r\n\
                 authorization: Bearer {producer_token}\r\ncontent-length: 100\r\n\r\n{{\"user_id\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Both are being served before the signal.
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let (_, _, metrics) = http(admin, Method::GET, "/metrics", &[], Bytes::new()).await;
        let metrics = String::from_utf8(metrics.to_vec()).unwrap();
        if metrics.contains("switchyard_http_connections{listener=\"public\"} 2") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The grace period is 1 s; every other timeout is ten minutes.
    let status = terminate(&mut gateway, PROMPTLY).await;
    assert_eq!(status.code(), Some(0), "{status}");
    for raw in [&mut half_head, &mut half_body] {
        raw.read_until_closed(PROMPTLY).await;
    }
}

#[tokio::test]
async fn serve_without_dev_or_secrets_exits_64_naming_the_missing_key() {
    let readme = read_readme();
    let run_args = cargo_run_args(&readme_block(&readme, "run"));
    let args: Vec<&String> = run_args.iter().filter(|arg| *arg != "--dev").collect();
    assert_eq!(args, ["serve"]);
    let output = exit_output(serve_on_loopback().args(args)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(stderr.contains("auth.jwt_secret"), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "nothing served: {output:?}");
}

#[tokio::test]
async fn serve_refuses_an_emptied_flags_file_with_64() {
    let dir = crate::harness::scratch_dir();
    let flags = dir.join("flags.toml");
    std::fs::write(&flags, "# emptied by a bad copy\n").unwrap();
    let output = exit_output(
        serve_on_loopback()
            .args(["serve", "--dev", "--flags"])
            .arg(&flags),
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(
        stderr.contains("empty or only comments"),
        "stderr: {stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&flags).unwrap(),
        "# emptied by a bad copy\n"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn dev_mode_refuses_a_non_loopback_address() {
    let output = exit_output(
        switchyard()
            .args(["serve", "--dev", "--listen", "0.0.0.0:0"])
            .env("SWITCHYARD_SERVER_ADMIN_LISTEN", "127.0.0.1:0"),
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(stderr.contains("0.0.0.0:0"), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "nothing served: {output:?}");
}

#[tokio::test]
async fn readme_test_command_is_what_ci_runs() {
    let readme = read_readme();
    let test_command = readme_block(&readme, "test");
    assert_eq!(
        test_command.lines().count(),
        1,
        "one test command: {test_command}"
    );
    let ci = std::fs::read_to_string(Path::new(MANIFEST_DIR).join(".ci/run")).expect(".ci/run");
    let commands: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter(|line| !line.starts_with("set ") && !line.starts_with("cd "))
        .map(|line| line.strip_prefix("exec ").unwrap_or(line))
        .collect();
    assert_eq!(
        commands,
        [test_command.as_str()],
        ".ci/run runs exactly the README's test command"
    );
    let script = test_command.split_whitespace().next().expect("a command");
    let mode = std::fs::metadata(Path::new(MANIFEST_DIR).join(script))
        .unwrap_or_else(|e| panic!("{script}: {e}"))
        .permissions();
    assert!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o111 != 0,
        "{script} is executable"
    );
}

/// The runbook of "Operating a migration", line by line as an operator pastes it: after the
/// README's install step (here: the binary under test, first on `PATH`, as no test makes a
/// release build), with only the printed exports set. Every command succeeds, and they leave
/// the route where the runbook says: shadowed, unlatched, ramping; audited; in dev mode's own
/// flags file.
async fn run_the_runbook(readme: &str, banner: &DevBanner) {
    let install = readme_block(readme, "install");
    assert_eq!(
        install, "cargo install --path .",
        "the README's install step"
    );
    let runbook = readme_block(readme, "runbook");
    let position = |marker: &str| readme.find(marker).expect(marker);
    assert!(
        position("<!-- readme-test: install -->") < position("<!-- readme-test: runbook -->"),
        "the README installs `switchyard` before the runbook uses it"
    );
    let commands: Vec<&str> = runbook.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(commands.len() >= 5, "{runbook}");
    for command in &commands {
        assert!(
            command.starts_with("switchyard ") || command.starts_with("curl "),
            "{command}"
        );
        let output = run_pasted(command, &banner.exports).await;
        assert!(
            output.status.success(),
            "runbook command failed: {command}\n{output:?}"
        );
        assert!(!output.stdout.is_empty(), "{command} printed nothing");
    }
    let token = banner.export("ADMIN_TOKEN");
    let auth = [("authorization", format!("Bearer {token}"))];
    let (status, _, flags) = http(
        banner.admin,
        Method::GET,
        "/admin/flags",
        &auth,
        Bytes::new(),
    )
    .await;
    assert_eq!(status.as_u16(), 200);
    let flags = parse_json(&flags);
    let route = &flags["routes"]["user_event"];
    assert_eq!(route["shadow"], true, "{route}");
    assert!(route["latch"].is_null(), "the latch was cleared: {route}");
    assert!(route["ramp"].is_object(), "the ramp runs: {route}");
    let written = std::fs::read_to_string(&banner.flags_file).unwrap_or_default();
    assert!(
        written.contains("[routes.user_event"),
        "dev mode's flags file holds the changes: {written}"
    );
}

/// Runs one README command with `sh -c` from the repository root, as pasted into a terminal
/// where the gateway's `export` lines were pasted first and `switchyard` is installed.
pub async fn run_pasted(command: &str, exports: &[(String, String)]) -> Output {
    let bin_dir = Path::new(BINARY).parent().expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut shell = Command::new("sh");
    shell
        .args(["-c", command])
        .current_dir(MANIFEST_DIR)
        .env("PATH", path)
        .kill_on_drop(true);
    for var in EXPORTED {
        shell.env_remove(var);
    }
    shell.envs(exports.iter().map(|(var, value)| (var, value)));
    tokio::time::timeout(PROMPTLY, shell.output())
        .await
        .unwrap_or_else(|_| panic!("{command} finishes promptly"))
        .unwrap_or_else(|e| panic!("sh -c {command}: {e}"))
}

pub fn read_readme() -> String {
    let path = Path::new(MANIFEST_DIR).join("README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The contents of the fenced block right after `<!-- readme-test: NAME -->`.
pub fn readme_block(readme: &str, name: &str) -> String {
    let marker = format!("<!-- readme-test: {name} -->");
    let mut found = readme.match_indices(&marker);
    let (at, _) = found
        .next()
        .unwrap_or_else(|| panic!("README.md has no {marker}"));
    assert!(found.next().is_none(), "README.md has {marker} twice");
    let mut lines = readme[at + marker.len()..]
        .lines()
        .skip(1)
        .skip_while(|line| line.trim().is_empty());
    let fence = lines.next().unwrap_or_default();
    assert!(
        fence.starts_with("```"),
        "a fenced block follows {marker}, found {fence:?}"
    );
    let mut block = Vec::new();
    for line in lines {
        if line.starts_with("```") {
            let block = block.join("\n");
            assert!(
                !block.trim().is_empty(),
                "the block after {marker} is empty"
            );
            return block;
        }
        block.push(line);
    }
    panic!("the block after {marker} is not closed");
}

/// The program arguments of `cargo run [cargo options] -- ARGS`.
pub fn cargo_run_args(command: &str) -> Vec<String> {
    assert!(
        !command.contains(['"', '\'', '\\', '$', '\n']),
        "a plain one-line command: {command:?}"
    );
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words[..2], ["cargo", "run"], "{command}");
    let separator = words
        .iter()
        .position(|word| *word == "--")
        .unwrap_or_else(|| panic!("`--` before the program's arguments: {command}"));
    words[separator + 1..]
        .iter()
        .map(|word| word.to_string())
        .collect()
}

pub fn value_after<'a>(args: &'a [String], flag: &str) -> &'a str {
    let at = args
        .iter()
        .position(|arg| arg == flag)
        .unwrap_or_else(|| panic!("{flag} in {args:?}"));
    args.get(at + 1)
        .unwrap_or_else(|| panic!("a value after {flag}"))
}

/// The JSON body of the publish command: its `-d '...'` argument.
fn publish_body(command: &str) -> Value {
    let (_, rest) = command
        .split_once("-d '")
        .unwrap_or_else(|| panic!("a -d '<json>' body in {command}"));
    let (body, _) = rest.split_once('\'').expect("the body's closing quote");
    parse_json(body.as_bytes())
}

/// The `switchyard` binary, run from the repository root as the README's commands are, with no
/// `SWITCHYARD_*` variables from the test's environment, and killed if the test ends early.
/// `switchyard` with both listeners on free loopback ports instead of the README's.
pub fn serve_on_loopback() -> Command {
    let mut command = switchyard();
    command
        .env("SWITCHYARD_SERVER_LISTEN", "127.0.0.1:0")
        .env("SWITCHYARD_SERVER_ADMIN_LISTEN", "127.0.0.1:0");
    command
}

pub fn switchyard() -> Command {
    let mut command = Command::new(BINARY);
    command.current_dir(MANIFEST_DIR).kill_on_drop(true);
    for (var, _) in std::env::vars().filter(|(var, _)| var.starts_with("SWITCHYARD_")) {
        command.env_remove(var);
    }
    for var in EXPORTED {
        command.env_remove(var);
    }
    command
}

/// Runs a command that should exit at once, with its output.
async fn exit_output(command: &mut Command) -> Output {
    tokio::time::timeout(PROMPTLY, command.output())
        .await
        .expect("the process exits promptly")
        .expect("run switchyard")
}

pub async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>, who: &str) -> String {
    tokio::time::timeout(PROMPTLY, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("{who} prints a line promptly"))
        .unwrap_or_else(|e| panic!("reading {who}'s output: {e}"))
        .unwrap_or_else(|| panic!("{who}'s output ended early"))
}

/// What a `serve --dev` gateway prints at start.
pub struct DevBanner {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// Its `export NAME=VALUE` lines, in order.
    pub exports: Vec<(String, String)>,
    /// The flags file dev mode chose.
    pub flags_file: PathBuf,
}

impl DevBanner {
    pub fn export(&self, name: &str) -> String {
        self.exports
            .iter()
            .find(|(var, _)| var == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_else(|| panic!("serve --dev printed no `export {name}=`"))
    }
}

/// Reads a `serve --dev` gateway's first lines: its addresses, its flags file and its exports,
/// which must name the URLs and tokens the README's commands use, with the bound addresses.
pub async fn dev_banner(out: &mut Lines<BufReader<ChildStdout>>) -> DevBanner {
    let (mut addresses, mut flags_file, mut exports) = (None, None, Vec::new());
    while addresses.is_none() || flags_file.is_none() || exports.len() < EXPORTED.len() {
        let line = next_line(out, "gateway").await;
        if line.starts_with("switchyard listening:") {
            addresses = Some(parse_listening(&line));
        } else if let Some((_, path)) = line.split_once("; flags file ") {
            flags_file = Some(PathBuf::from(path));
        } else if let Some(rest) = line.strip_prefix("export ") {
            let (var, value) = rest.split_once('=').expect("export NAME=VALUE");
            let value = value.split_whitespace().next().expect("a value");
            exports.push((var.to_owned(), value.to_owned()));
        }
    }
    let (public, admin) = addresses.unwrap();
    let banner = DevBanner {
        public,
        admin,
        exports,
        flags_file: flags_file.unwrap(),
    };
    assert_eq!(banner.export("PRODUCER_URL"), format!("http://{public}"));
    assert_eq!(banner.export("ADMIN_URL"), format!("http://{admin}"));
    banner
}

/// Sends SIGTERM to `process` and waits up to `within` for it to exit.
pub async fn terminate(process: &mut Child, within: Duration) -> ExitStatus {
    let pid = process.id().expect("still running").to_string();
    // The shell's own `kill`, so the test needs no procps.
    let kill = Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .await
        .expect("run kill");
    assert!(kill.success(), "kill -TERM {pid}: {kill}");
    tokio::time::timeout(within, process.wait())
        .await
        .unwrap_or_else(|_| panic!("the process exits within {within:?} of SIGTERM"))
        .unwrap()
}

/// The public and admin addresses from `switchyard listening: clients and producers on
/// http://ADDR, admin on http://ADDR`.
pub fn parse_listening(line: &str) -> (SocketAddr, SocketAddr) {
    let address_after = |label: &str| -> SocketAddr {
        let (_, rest) = line
            .split_once(label)
            .unwrap_or_else(|| panic!("{label:?} in {line:?}"));
        let address = rest.split([',', ' ']).next().unwrap_or_default();
        address
            .parse()
            .unwrap_or_else(|e| panic!("{address:?} in {line:?}: {e}"))
    };
    (
        address_after("clients and producers on http://"),
        address_after("admin on http://"),
    )
}

/// Every `switchyard_…` metric name the text mentions, without repeats.
fn metric_names_in(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("switchyard_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Whether `/metrics` declares `name` (a histogram's `_bucket`, `_sum`, `_count` included).
fn is_exported(metrics: &str, name: &str) -> bool {
    let declared = |name: &str| {
        let type_line = format!("# TYPE {name} ");
        metrics.lines().any(|line| line.starts_with(&type_line))
    };
    declared(name)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| name.strip_suffix(suffix).is_some_and(declared))
}
