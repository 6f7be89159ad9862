//! The load generator works end to end, so it cannot rot: against a real gateway started
//! in-process on port 0, a short run delivers everything, to the right users, and measures it;
//! flips are seen by the next event on the very route flipped; the binary takes its options and
//! prints what `bench/measure.sh` reads.

// The harness's items are `pub` for the test modules of tests/it; nothing leaves this binary.
#![allow(unreachable_pub, reason = "a test binary has no public API")]

use std::time::Duration;

use switchyard_bench::{Admin, BenchConfig, Route, flip_latency, run};

use crate::harness::{ADMIN_TOKEN, Gateway, PRODUCER_TOKEN};

/// The gateway harness of the gateway's own integration tests (`tests/it/`), shared rather than
/// copied: a gateway started in-process through `switchyard::run` on loopback port 0.
#[path = "../../tests/it/harness.rs"]
#[allow(dead_code, reason = "this binary uses a few of the harness's helpers")]
mod harness;

/// The Node and Bun peers, against the same gateway (in this binary rather than a test binary of
/// its own: one link of the gateway fewer on CI's two cores).
#[path = "end_to_end/peers.rs"]
mod peers;

fn admin(gateway: &Gateway) -> Admin {
    Admin {
        url: format!("http://{}", gateway.admin),
        token: ADMIN_TOKEN.to_owned(),
    }
}

/// `switchyard_events_total` served on `path` as primary for `route`.
async fn events(gateway: &Gateway, route: Route, path: &str) -> u64 {
    let labels = format!("path=\"{path}\",role=\"primary\",route=\"{route}\"");
    gateway.metric("events_total", &labels).await as u64
}

/// A short closed-loop run on `route`: 8 users × 2 connections, 2 producers, single events.
fn load(gateway: &Gateway, route: Route) -> BenchConfig {
    BenchConfig {
        target: gateway.public.to_string(),
        producer_token: PRODUCER_TOKEN.to_owned(),
        route,
        users: 8,
        connections_per_user: 2,
        producers: 2,
        duration: Duration::from_millis(500),
        padding: 100,
        batch: 1,
        rate: None,
        target_pid: None,
        nodes: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_delivers_every_event_to_the_right_users() {
    let gateway = Gateway::start().await;
    for route in [Route::Broadcast, Route::ScopedBroadcast] {
        let report = run(&BenchConfig {
            batch: if route == Route::Broadcast { 1 } else { 10 },
            ..load(&gateway, route)
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
        assert!(report.answer_us.max > 0, "{report:?}");
        assert!(
            report.send_lag_us.is_none(),
            "a closed loop has no due times"
        );
        assert!(report.latency_from_sent_us.is_none(), "{report:?}");
    }
    // Open loop at a fixed rate.
    let report = run(&BenchConfig {
        users: 4,
        connections_per_user: 1,
        padding: 10,
        rate: Some(200.0),
        ..load(&gateway, Route::Broadcast)
    })
    .await
    .unwrap();
    assert!(
        (60..=110).contains(&report.events_published),
        "about 100 events at 200/s for 0.5 s: {report:?}"
    );
    assert_eq!((report.lost, report.duplicated, report.foreign), (0, 0, 0));
    // An event reaches its client after its request was sent, so no request can have been sent
    // later against its due time than the latest delivery arrived.
    let lag = report
        .send_lag_us
        .as_ref()
        .expect("an open loop measures its lag");
    assert!(lag.max <= report.latency_us.max, "{report:?}");
    // Sent at or after it was due, every event's latency from its sending is no longer, so no
    // quantile of it is either.
    let from_sent = report
        .latency_from_sent_us
        .as_ref()
        .expect("stamped when sent");
    let latency = &report.latency_us;
    assert!(from_sent.max > 0, "{report:?}");
    assert!(
        from_sent.p50 <= latency.p50
            && from_sent.p99 <= latency.p99
            && from_sent.max <= latency.max,
        "{report:?}"
    );
    assert!(report.answer_us.max > 0, "{report:?}");
    gateway.stop().await;
}

/// `nodes`: connections round-robin over the target and the other nodes, each request to one
/// of them at random. Two gateways *without* a backplane make that visible: each delivers only
/// to its own connections, so both take requests, and every event is either delivered (it went
/// to its user's node) or counted lost, never both, never twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_connections_round_robin_and_requests_at_random() {
    let (a, b) = (Gateway::start().await, Gateway::start().await);
    let report = run(&BenchConfig {
        users: 8,
        connections_per_user: 1,
        nodes: vec![b.public.to_string()],
        ..load(&a, Route::Broadcast)
    })
    .await
    .unwrap();
    let requests = "route=\"broadcast\",status=\"200\"";
    let taken = (
        a.metric("route_requests_total", requests).await as u64,
        b.metric("route_requests_total", requests).await as u64,
    );
    assert!(
        taken.0 > 0 && taken.1 > 0,
        "both nodes take requests: {taken:?}"
    );
    assert_eq!(taken.0 + taken.1, report.events_published, "{report:?}");
    assert!(
        report.frames_received > 0 && report.lost > 0,
        "users on both nodes, events on the wrong one: {report:?}"
    );
    assert_eq!(
        report.frames_received + report.lost,
        report.events_published,
        "{report:?}"
    );
    assert_eq!((report.duplicated, report.foreign), (0, 0));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn flip_latency_sees_every_flip_on_the_next_event() {
    let gateway = Gateway::start().await;
    let report = flip_latency(
        &gateway.public.to_string(),
        &admin(&gateway),
        PRODUCER_TOKEN,
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
    let gateway = Gateway::start().await;
    let n = 4;
    for (done, flipped) in Route::ALL.into_iter().enumerate() {
        let report = flip_latency(
            &gateway.public.to_string(),
            &admin(&gateway),
            PRODUCER_TOKEN,
            flipped,
            n,
        )
        .await
        .unwrap();
        assert_eq!(report.stale, 0, "{flipped}");
        for route in Route::ALL {
            let probes = (
                events(&gateway, route, "ssot").await,
                events(&gateway, route, "legacy").await,
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
    let gateway = Gateway::start().await;
    let bench = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard-bench"));
        command
            .args(["--target", &gateway.public.to_string()])
            .args(["--producer-token", PRODUCER_TOKEN])
            .args(["--admin-url", &format!("http://{}", gateway.admin)])
            .args(["--admin-token", ADMIN_TOKEN])
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
    assert!(report["answer_us"]["p99"].as_u64().unwrap() > 0, "{runs}");
    assert!(report["send_lag_us"].is_null(), "{runs}");

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
