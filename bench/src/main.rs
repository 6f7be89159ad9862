//! The `switchyard-bench` binary: loads a running `--dev` gateway with real clients and
//! producers and reports what they saw. Exit codes: 1 when a frame was lost, duplicated or
//! foreign (or an event missed a flip), 64 for a wrong command line, 69 when the gateway could not
//! be reached or refused a call.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use switchyard_bench::{Admin, BenchConfig, BenchError, Peer, Route, Shape};

const EXIT_CONFIG: u8 = 64;
const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Parser)]
#[command(
    name = "switchyard-bench",
    version,
    about = "Load a running --dev switchyard gateway with real clients and producers and report what they saw"
)]
struct Cli {
    /// The gateway's public listener, host:port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    target: String,
    /// Another node of the same fleet as --target (repeat it): clients connect round-robin over
    /// --target and these, each request goes to one of them at random.
    #[arg(long = "node", value_name = "HOST:PORT")]
    nodes: Vec<String>,
    #[arg(long, env = "PRODUCER_TOKEN")]
    producer_token: String,
    /// router_broadcast, scoped_broadcast, user_event or broadcast.
    #[arg(long, default_value = "broadcast")]
    route: Route,
    #[arg(long, default_value_t = 100)]
    users: usize,
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Concurrent keep-alive producer connections.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Length of each run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Padding bytes per event (about 120 makes a ~200-byte frame).
    #[arg(long, default_value_t = 120)]
    padding: usize,
    /// Events per request (more than 1 uses the batch endpoint).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Open loop: events per second in all, on a fixed schedule (default: closed loop, as
    /// fast as answers come back).
    #[arg(long)]
    rate: Option<f64>,
    /// Instead of a load run: open this many idle connections and report the gateway's RSS
    /// per connection (needs --gateway-pid).
    #[arg(long)]
    idle_connections: Option<usize>,
    /// The gateway's process: needed by --idle-connections; on a load run, its CPU time is
    /// reported too.
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// Instead of a load run: the loopback reference, one thread writing ~200-byte frames
    /// round-robin over --users × --connections loopback connections, one `write()` per frame,
    /// read by this generator's tasks, for --seconds; --rounds times.
    #[arg(long)]
    loopback_reference: bool,
    /// Instead of a load run: flip the route's flags this many times and report how long a
    /// flip takes and whether the next event on the route saw it (needs --admin-token).
    #[arg(long)]
    flips: Option<usize>,
    /// Instead of one target: compare servers of the same API side by side, in interleaved
    /// rounds, as NAME=HOST:PORT[,token=TOKEN][,pid=PID] (repeat it; the first is the one the
    /// others are measured against; the token defaults to --producer-token, the pid adds the
    /// server's CPU time to the report).
    #[arg(long = "peer", value_name = "NAME=HOST:PORT")]
    peers: Vec<String>,
    /// With --peer: the load shapes, CxB or CxB@RATE (connections per user, events per request,
    /// events/s in an open loop); repeat it. Default: issue 16's six, 1x1 3x1 1x50 3x50 1x1@10000
    /// 1x1@20000.
    #[arg(long = "shape", value_name = "CxB[@RATE]")]
    shapes: Vec<String>,
    /// Compare `shadow` off and on, alternating runs on the same gateway.
    #[arg(long)]
    compare: Option<Compare>,
    /// Runs to make (with --compare: rounds of off and on; medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[arg(long, env = "ADMIN_URL", default_value = "http://127.0.0.1:9090")]
    admin_url: String,
    /// Needed for --flips and --compare, which change flags through the admin API.
    #[arg(long, env = "ADMIN_TOKEN")]
    admin_token: Option<String>,
}

/// What `--compare` switches between runs.
#[derive(Clone, Copy, ValueEnum)]
enum Compare {
    Shadow,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the async runtime: {error}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let admin = cli.admin_token.clone().map(|token| Admin {
        url: cli.admin_url.clone(),
        token,
    });
    let result = if let Some(n) = cli.flips {
        let Some(admin) = admin else {
            return usage("--flips needs --admin-token");
        };
        runtime.block_on(flips(&cli, &admin, n))
    } else if let Some(n) = cli.idle_connections {
        let Some(pid) = cli.gateway_pid else {
            return usage("--idle-connections needs --gateway-pid");
        };
        runtime.block_on(idle(&cli, pid, n))
    } else if cli.loopback_reference {
        runtime.block_on(reference(&cli))
    } else if !cli.peers.is_empty() {
        runtime.block_on(compare_peers(&cli))
    } else {
        let compare = match (cli.compare, admin) {
            (None, _) => None,
            (Some(Compare::Shadow), Some(admin)) => Some(admin),
            (Some(Compare::Shadow), None) => {
                return usage(
                    "--compare shadow flips flags through the admin API: give --admin-token",
                );
            }
        };
        runtime.block_on(load(&cli, compare.as_ref()))
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(match error {
                BenchError::Config(_) => EXIT_CONFIG,
                _ => EXIT_UNAVAILABLE,
            })
        }
    }
}

/// A command line that cannot run: says why.
fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_CONFIG)
}

async fn flips(cli: &Cli, admin: &Admin, n: usize) -> Result<ExitCode, BenchError> {
    let report =
        switchyard_bench::flip_latency(&cli.target, admin, &cli.producer_token, cli.route, n)
            .await?;
    let p = report.round_trip_us;
    println!(
        "{n} flips of {}: round trip p50 {} µs, p99 {} µs, max {} µs; next event on the old path: {}",
        cli.route, p.p50, p.p99, p.max, report.stale
    );
    Ok(if report.stale == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn idle(cli: &Cli, pid: u32, n: usize) -> Result<ExitCode, BenchError> {
    let (before, after) = switchyard_bench::idle_rss(&cli.target, pid, n, cli.users).await?;
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "gateway RSS {before} KiB before, {after} KiB with {n} idle connections: {per:.2} KiB per connection"
    );
    Ok(ExitCode::SUCCESS)
}

async fn reference(cli: &Cli) -> Result<ExitCode, BenchError> {
    let connections = cli.users * cli.connections;
    for round in 1..=cli.rounds {
        let report =
            switchyard_bench::loopback_reference(connections, Duration::from_secs(cli.seconds))
                .await?;
        if cli.json {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
        } else {
            println!(
                "round {round} loopback reference, {connections} connections: {:.0} deliveries/s, {:.2} cores",
                report.deliveries_per_second, report.cores
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The load a command line describes, against `--target`.
fn config(cli: &Cli) -> BenchConfig {
    BenchConfig {
        target: cli.target.clone(),
        producer_token: cli.producer_token.clone(),
        route: cli.route,
        users: cli.users,
        connections_per_user: cli.connections,
        producers: cli.producers,
        duration: Duration::from_secs(cli.seconds),
        padding: cli.padding,
        batch: cli.batch,
        rate: cli.rate,
        target_pid: cli.gateway_pid,
        nodes: cli.nodes.clone(),
    }
}

async fn compare_peers(cli: &Cli) -> Result<ExitCode, BenchError> {
    let peers = cli
        .peers
        .iter()
        .map(|spec| Peer::parse(spec, &cli.producer_token))
        .collect::<Result<Vec<_>, _>>()?;
    let shapes = if cli.shapes.is_empty() {
        Shape::issue16()
    } else {
        cli.shapes
            .iter()
            .map(|spec| spec.parse())
            .collect::<Result<Vec<Shape>, _>>()?
    };
    let comparison =
        switchyard_bench::compare_peers(&config(cli), &peers, &shapes, cli.rounds, |run| {
            eprintln!(
                "round {} {} {}: {:.0} deliveries/s, p99 {} µs, generator {:.2} cores, answer p99 {} µs{}{}",
                run.round,
                run.shape,
                run.peer,
                run.report.deliveries_per_second,
                run.report.latency_us.p99,
                run.report.generator_cores,
                run.report.answer_us.p99,
                run.report
                    .send_lag_us
                    .as_ref()
                    .map_or(String::new(), |lag| format!(", send lag p99 {} µs", lag.p99)),
                run.report
                    .latency_from_sent_us
                    .as_ref()
                    .map_or(String::new(), |p| format!(", p99 from sent {} µs", p.p99)),
            );
        })
        .await?;
    if cli.json {
        let summaries = comparison.summaries();
        let out = serde_json::json!({"comparison": comparison, "summaries": summaries});
        println!("{out}");
    } else {
        print!("{}", comparison.table());
    }
    if comparison.failed() {
        eprintln!("error: frames were lost, duplicated or delivered to the wrong user");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn load(cli: &Cli, compare_shadow: Option<&Admin>) -> Result<ExitCode, BenchError> {
    let config = config(cli);
    let runs = switchyard_bench::measure(&config, cli.rounds, compare_shadow, |run| {
        eprintln!(
            "{}: {:.0} deliveries/s",
            run.label, run.report.deliveries_per_second
        );
    })
    .await?;
    if cli.json {
        println!("{}", serde_json::to_string(&runs).unwrap_or_default());
    } else {
        print!("{}", switchyard_bench::table(&runs));
        if compare_shadow.is_some() {
            let (off, on) = switchyard_bench::shadow_medians(&runs);
            println!(
                "median deliveries/s: shadow off {off:.0}, shadow on {on:.0}; on/off = {:.3}",
                on / off
            );
        }
    }
    if runs.iter().any(|run| run.report.failed()) {
        eprintln!("error: frames were lost, duplicated or delivered to the wrong user");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
