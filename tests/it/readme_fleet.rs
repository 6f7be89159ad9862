//! The README's "Run a fleet" walkthrough works as written: its `redis-server` command starts a
//! real Redis, its two gateway commands (with their `SWITCHYARD_BACKPLANE_*` variables as
//! written) start two real `switchyard serve --dev` processes against it, its `/readyz` command
//! prints what it shows, its client connects to the first, its publish command, pasted with the
//! second gateway's `export` lines, prints the answer shown, and the client prints the event
//! shown. Only the ports change: the README's become free loopback ports, wherever they appear.
//!
//! The blocks are found by their `<!-- readme-test: fleet-… -->` markers, as in `readme.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde_json::Value;
use switchyard::Config;
use switchyard::config::Overrides;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use crate::fleet::start_redis_server;
use crate::harness::{PROMPTLY, free_port, http, parse_json, scratch_dir};
use crate::readme::{
    DevBanner, cargo_run_args, dev_banner, next_line, read_readme, readme_block, run_pasted,
    serve_on_loopback, switchyard, terminate, value_after,
};

/// How long a fleet gateway may take to stop after SIGTERM (grace period 10 s, then `depart`).
const SHUTDOWN: Duration = Duration::from_secs(30);

#[tokio::test]
async fn readme_fleet_walkthrough_delivers_from_one_gateway_to_a_client_on_the_other() {
    let readme = read_readme();

    // Redis, as written, on a free port instead of the README's.
    let redis_args = redis_args(&readme_block(&readme, "fleet-redis"));
    let readme_redis_port = value_after(&redis_args, "--port").to_owned();
    let redis_port = free_port();
    let args = replace_value(&redis_args, "--port", &redis_port.to_string());
    let redis_dir = scratch_dir();
    let mut redis = start_redis_server(&args, &redis_dir, redis_port).await;

    // The two gateways, as written, with the README's Redis port and listen addresses replaced.
    let redis_address = (
        format!("127.0.0.1:{readme_redis_port}/"),
        format!("127.0.0.1:{redis_port}/"),
    );
    let a = GatewayCommand::parse(&readme_block(&readme, "fleet-node-a"), &redis_address);
    let b = GatewayCommand::parse(&readme_block(&readme, "fleet-node-b"), &redis_address);
    assert_ne!(a.node_id(), b.node_id(), "two nodes, two node ids");
    let (a_public, a_admin) = a.readme_addresses();
    let (b_public, b_admin) = b.readme_addresses();
    assert!(
        a_public != b_public && a_admin != b_admin,
        "the README's gateways listen on different ports: {a_public} {a_admin}, {b_public} {b_admin}"
    );
    let (mut node_a, _a_out, a_banner) = a.start().await;
    let (mut node_b, _b_out, b_banner) = b.start().await;
    let bound: HashMap<SocketAddr, SocketAddr> = [
        (a_public, a_banner.public),
        (a_admin, a_banner.admin),
        (b_public, b_banner.public),
        (b_admin, b_banner.admin),
    ]
    .into();

    // The README's /readyz command prints what it shows once both have joined the fleet.
    let ready = readme_block(&readme, "fleet-ready");
    for readme_admin in [a_admin, b_admin] {
        assert!(
            ready.contains(&readme_admin.to_string()),
            "the ready command asks both nodes: {ready}"
        );
    }
    let ready = bound.iter().fold(ready, |command, (written, real)| {
        command.replace(&written.to_string(), &real.to_string())
    });
    answers_within(&ready, &readme_block(&readme, "fleet-ready-output")).await;

    // The README's client, on the default URL, which is node a's.
    let client_args = cargo_run_args(&readme_block(&readme, "fleet-client"));
    assert!(
        !client_args.iter().any(|arg| arg == "--url"),
        "the README's client uses the default URL: {client_args:?}"
    );
    assert_eq!(
        a_public,
        defaults().server.listen,
        "the client's default URL is node a's"
    );
    let client_user = value_after(&client_args, "--user-id").to_owned();
    let mut client = switchyard()
        .args(&client_args)
        .args(["--url", &format!("ws://{}/ws", a_banner.public)])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start switchyard client");
    let mut client_out = BufReader::new(client.stdout.take().unwrap()).lines();
    let greeting = parse_json(next_line(&mut client_out, "client").await.as_bytes());
    assert_eq!(greeting["type"], "connection_established", "{greeting}");
    assert_eq!(greeting["data"]["user_id"], client_user.as_str());

    // The README's publish command, pasted with node b's exports: b's answer and a's client
    // print exactly what the README shows.
    let publish = readme_block(&readme, "fleet-publish");
    assert!(
        publish.contains("\"$PRODUCER_URL/") && publish.contains("$PRODUCER_TOKEN"),
        "the publish command uses the printed exports: {publish}"
    );
    let curl = run_pasted(&publish, &b_banner.exports).await;
    assert!(curl.status.success(), "publish command failed: {curl:?}");
    assert_eq!(
        parse_json(&curl.stdout),
        shown_json(&readme, "fleet-answer"),
        "node b's answer"
    );
    let event = parse_json(next_line(&mut client_out, "client").await.as_bytes());
    assert_eq!(
        event,
        shown_json(&readme, "fleet-event"),
        "the client on node a"
    );

    // "GET /admin/stats on either node lists both under fleet.nodes" (within a heartbeat).
    let both = [a.node_id(), b.node_id()];
    for banner in [&a_banner, &b_banner] {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            let nodes = fleet_nodes(banner).await;
            if nodes == both {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/admin/stats on {} lists {nodes:?}, not {both:?}",
                banner.admin
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    for node in [&mut node_a, &mut node_b] {
        let status = terminate(node, SHUTDOWN).await;
        assert_eq!(status.code(), Some(0), "gateway: {status}");
    }
    let client_status = tokio::time::timeout(PROMPTLY, client.wait())
        .await
        .expect("the client exits once its gateway closes it")
        .unwrap();
    assert!(client_status.success(), "client: {client_status}");
    redis.kill().await.expect("stop redis-server");
    let _ = std::fs::remove_dir_all(redis_dir);
}

/// One of the README's gateway commands: `NAME=VALUE … cargo run -- ARGS`.
struct GatewayCommand {
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl GatewayCommand {
    /// Parses `command`, with the README's Redis address (`redis.0`) replaced by the test's.
    fn parse(command: &str, redis: &(String, String)) -> GatewayCommand {
        let words: Vec<&str> = command.split_whitespace().collect();
        let cargo = words
            .iter()
            .position(|word| *word == "cargo")
            .unwrap_or_else(|| panic!("`cargo run` in {command}"));
        let env = words[..cargo]
            .iter()
            .map(|word| {
                let (var, value) = word
                    .split_once('=')
                    .unwrap_or_else(|| panic!("NAME=VALUE before cargo: {word}"));
                (var.to_owned(), value.to_owned())
            })
            .collect();
        let gateway = GatewayCommand {
            env,
            args: cargo_run_args(&words[cargo..].join(" ")),
        };
        assert_eq!(
            gateway.var("SWITCHYARD_BACKPLANE_KIND"),
            "redis",
            "{command}"
        );
        assert!(
            gateway
                .var("SWITCHYARD_BACKPLANE_REDIS_URL")
                .contains(&redis.0),
            "the gateway uses the README's Redis at {}: {command}",
            redis.0
        );
        let env = gateway
            .env
            .iter()
            .map(|(var, value)| (var.clone(), value.replace(&redis.0, &redis.1)))
            .collect();
        GatewayCommand { env, ..gateway }
    }

    fn var(&self, name: &str) -> &str {
        self.env
            .iter()
            .find(|(var, _)| var == name)
            .map(|(_, value)| value.as_str())
            .unwrap_or_else(|| panic!("{name}= in {:?}", self.env))
    }

    fn node_id(&self) -> &str {
        self.var("SWITCHYARD_BACKPLANE_NODE_ID")
    }

    /// Where the README says this gateway listens: its `--listen` and `--admin-listen`, else
    /// the embedded defaults.
    fn readme_addresses(&self) -> (SocketAddr, SocketAddr) {
        let defaults = defaults();
        let given = |flag: &str, default: SocketAddr| {
            if !self.args.iter().any(|arg| arg == flag) {
                return default;
            }
            let value = value_after(&self.args, flag);
            value
                .parse()
                .unwrap_or_else(|e| panic!("{flag} {value}: {e}"))
        };
        (
            given("--listen", defaults.server.listen),
            given("--admin-listen", defaults.server.admin_listen),
        )
    }

    /// Starts it with its listeners on free loopback ports, and reads its banner. Its output
    /// must be kept open while it runs.
    async fn start(&self) -> (Child, Lines<BufReader<ChildStdout>>, DevBanner) {
        let mut args = self.args.clone();
        for flag in ["--listen", "--admin-listen"] {
            args = replace_value(&args, flag, "127.0.0.1:0");
        }
        let mut gateway = serve_on_loopback()
            .args(&args)
            .envs(self.env.iter().map(|(var, value)| (var, value)))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start switchyard serve");
        let mut out = BufReader::new(gateway.stdout.take().unwrap()).lines();
        let banner = dev_banner(&mut out).await;
        (gateway, out, banner)
    }
}

/// The embedded defaults, as `serve --dev` starts with them.
fn defaults() -> Config {
    let dev = Overrides {
        dev: true,
        ..Overrides::default()
    };
    Config::load_from(&dev, Vec::new()).expect("the embedded defaults load")
}

/// The arguments of `redis-server ARGS`, with `''` read as the empty argument a shell passes.
fn redis_args(command: &str) -> Vec<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"redis-server"), "{command}");
    words[1..]
        .iter()
        .map(|word| match *word {
            "''" => String::new(),
            plain => {
                assert!(!plain.contains(['\'', '"', '$', '\\']), "{command}");
                plain.to_owned()
            }
        })
        .collect()
}

/// `args` with the value after `flag`, if there is one, replaced.
fn replace_value(args: &[String], flag: &str, value: &str) -> Vec<String> {
    let mut args = args.to_vec();
    if let Some(at) = args.iter().position(|arg| arg == flag) {
        args[at + 1] = value.to_owned();
    }
    args
}

/// Runs `command` until it prints `shown` (a node joins the fleet a moment after it listens).
async fn answers_within(command: &str, shown: &str) {
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let output = run_pasted(command, &[]).await;
        let printed = String::from_utf8_lossy(&output.stdout);
        if output.status.success() && printed.trim_end() == shown.trim_end() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{command} printed {printed:?}, the README shows {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The one JSON line the README shows in the block after `<!-- readme-test: NAME -->`.
fn shown_json(readme: &str, name: &str) -> Value {
    let shown = readme_block(readme, name);
    assert_eq!(shown.lines().count(), 1, "one line: {shown}");
    parse_json(shown.as_bytes())
}

/// The live nodes `/admin/stats` lists under `fleet.nodes`, sorted by node id.
async fn fleet_nodes(banner: &DevBanner) -> Vec<String> {
    let token = banner.export("ADMIN_TOKEN");
    let auth = [("authorization", format!("Bearer {token}"))];
    let (status, _, body) = http(
        banner.admin,
        Method::GET,
        "/admin/stats",
        &auth,
        Bytes::new(),
    )
    .await;
    assert_eq!(status.as_u16(), 200);
    let stats = parse_json(&body);
    let mut nodes: Vec<String> = stats["fleet"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("fleet.nodes in {stats}"))
        .iter()
        .filter(|node| node["live"] == true)
        .map(|node| node["node_id"].as_str().expect("a node id").to_owned())
        .collect();
    nodes.sort();
    nodes
}
