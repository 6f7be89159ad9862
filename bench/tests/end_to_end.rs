//! The load generator works end to end, so it cannot rot: against a real gateway started
//! in-process on port 0, a short run delivers everything, to the right users, and measures it;
//! flips are seen by the next event on the very route flipped; the binary takes its options and
//! prints what `bench/measure.sh` reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use switchyard::config::{Config, Overrides};
use switchyard::{Listeners, RunError};
use switchyard_bench::{Admin, BenchConfig, Route, flip_latency, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A `--dev` gateway on loopback port 0, with the tokens dev mode made up for it.
struct Gateway {
    public: SocketAddr,
    admin: Admin,
    producer_token: String,
    scratch: PathBuf,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), RunError>>,
}

impl Gateway {
    async fn start(name: &str) -> Gateway {
        let scratch =
            std::env::temp_dir().join(format!("switchyard-bench-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&scratch).unwrap();
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let overrides = Overrides {
            dev: true,
            listen: Some(loopback),
            admin_listen: Some(loopback),
            flags_path: Some(scratch.join("flags.toml")),
            ..Default::default()
        };
        let config = Config::load_from(&overrides, std::iter::empty()).unwrap();
        let token = |tokens: &std::collections::BTreeMap<String, String>| tokens["dev"].clone();
        let producer_token = token(&config.auth.producer_tokens);
        let admin_token = token(&config.auth.admin_tokens);
        let listeners = Listeners::bind(&config).await.expect("bind port 0");
        let (public, admin) = listeners.local_addrs().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(switchyard::run(config, listeners, shutdown.clone()));
        Gateway {
            public,
            admin: Admin {
                url: format!("http://{admin}"),
                token: admin_token,
            },
            producer_token,
            scratch,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("gateway stops within its grace period")
            .expect("gateway task did not panic")
            .expect("gateway ran without error");
        let _ = std::fs::remove_dir_all(&self.scratch);
    }

    /// `switchyard_events_total` for one route, path and role 'primary'.
    async fn events(&self, route: Route, path: &str) -> u64 {
        let authority = self.admin.url.trim_start_matches("http://");
        let mut socket = tokio::net::TcpStream::connect(authority).await.unwrap();
        socket
            .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        socket.read_to_string(&mut text).await.unwrap();
        let sample = format!(
            "switchyard_events_total{{path=\"{path}\",role=\"primary\",route=\"{route}\"}} "
        );
        text.lines()
            .find_map(|line| line.strip_prefix(&sample))
            .unwrap_or_else(|| panic!("no {sample} in /metrics"))
            .trim()
            .parse()
            .unwrap()
    }

    fn load(&self, route: Route) -> BenchConfig {
        BenchConfig {
            target: self.public.to_string(),
            producer_token: self.producer_token.clone(),
            route,
            users: 8,
            connections_per_user: 2,
            producers: 2,
            duration: Duration::from_millis(500),
            padding: 100,
            batch: 1,
            rate: None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_delivers_every_event_to_the_right_users() {
    let gateway = Gateway::start("run").await;
    for route in [Route::Broadcast, Route::ScopedBroadcast] {
        let report = run(&BenchConfig {
            batch: if route == Route::Broadcast { 1 } else { 10 },
            ..gateway.load(route)
        })
        .await
        .unwrap();
        assert!(report.events_published > 0, "{report:?}");
        assert_eq!(
            report.frames_received,
            report.events_published * 2,
            "{report:?}"
        );
        assert_eq!((report.lost, report.duplicated, report.foreign), (0, 0, 0));
        assert!(report.latency_us.max >= report.latency_us.p50, "{report:?}");
        assert!(report.latency_us.max > 0, "{report:?}");
    }
    // Open loop at a fixed rate.
    let report = run(&BenchConfig {
        users: 4,
        connections_per_user: 1,
        padding: 10,
        rate: Some(200.0),
        ..gateway.load(Route::Broadcast)
    })
    .await
    .unwrap();
    assert!(
        (60..=110).contains(&report.events_published),
        "about 100 events at 200/s for 0.5 s: {report:?}"
    );
    assert_eq!((report.lost, report.duplicated, report.foreign), (0, 0, 0));
    gateway.stop().await;
}

#[tokio::test]
async fn flip_latency_sees_every_flip_on_the_next_event() {
    let gateway = Gateway::start("flips").await;
    let report = flip_latency(
        &gateway.public.to_string(),
        &gateway.admin,
        &gateway.producer_token,
        Route::RouterBroadcast,
        6,
    )
    .await
    .unwrap();
    assert_eq!(report.stale, 0);
    let round_trips = report.round_trip_us;
    assert!(round_trips.max >= round_trips.p50 && round_trips.p50 > 0);
    gateway.stop().await;
}

/// `--flips --route user_event` once probed `/v1/broadcast`, whose flags the flips never touched.
/// Every route's probes must go to that route: half on SSOT, half on legacy, none elsewhere.
#[tokio::test]
async fn flips_probe_the_route_they_flip() {
    let gateway = Gateway::start("flip-routes").await;
    let n = 4;
    for (done, flipped) in Route::ALL.into_iter().enumerate() {
        let report = flip_latency(
            &gateway.public.to_string(),
            &gateway.admin,
            &gateway.producer_token,
            flipped,
            n,
        )
        .await
        .unwrap();
        assert_eq!(report.stale, 0, "{flipped}");
        for route in Route::ALL {
            let probes = (
                gateway.events(route, "ssot").await,
                gateway.events(route, "legacy").await,
            );
            let expected = if Route::ALL[..=done].contains(&route) {
                (n as u64 / 2, n as u64 / 2)
            } else {
                (0, 0)
            };
            assert_eq!(
                probes, expected,
                "{route} (ssot, legacy) after flipping {flipped}"
            );
        }
    }
    gateway.stop().await;
}

/// The binary, as `bench/measure.sh` calls it: a JSON load run and a series of flips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_the_bench_options_and_prints_json() {
    let gateway = Gateway::start("binary").await;
    let bench = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard-bench"));
        command
            .args(["--target", &gateway.public.to_string()])
            .args(["--producer-token", &gateway.producer_token])
            .args(["--admin-url", &gateway.admin.url])
            .args(["--admin-token", &gateway.admin.token])
            .args(args)
            .kill_on_drop(true);
        command
    };
    let output = bench(&[
        "--route",
        "user_event",
        "--users",
        "4",
        "--connections",
        "2",
        "--producers",
        "2",
        "--batch",
        "5",
        "--seconds",
        "1",
        "--rounds",
        "1",
        "--json",
    ])
    .output()
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let runs: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let report = &runs[0]["report"];
    assert_eq!(runs[0]["label"], "run 1", "{runs}");
    assert_eq!(report["route"], "user_event", "{runs}");
    assert!(report["events_published"].as_u64().unwrap() > 0, "{runs}");
    assert_eq!(
        report["frames_received"].as_u64(),
        report["events_published"].as_u64().map(|n| n * 2),
        "{runs}"
    );
    assert!(report["latency_us"]["p99"].as_u64().unwrap() > 0, "{runs}");

    let output = bench(&["--route", "user_event", "--flips", "2"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains("2 flips of user_event") && stdout.contains("old path: 0"),
        "{stdout}"
    );

    let output = bench(&["--route", "user-event"]).output().await.unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "clap's usage error: {output:?}"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("user_event"),
        "{output:?}"
    );
    gateway.stop().await;
}
