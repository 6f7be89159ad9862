//! The load generator works end to end, so it cannot rot: a short run against a real gateway
//! delivers everything, to the right users, and measures it.

use std::time::Duration;

use switchyard::bench::{BenchConfig, run};

use crate::harness::{Gateway, PRODUCER_TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_delivers_every_event_to_the_right_users() {
    let gateway = Gateway::start().await;
    for route in ["broadcast", "scoped_broadcast"] {
        let report = run(&BenchConfig {
            target: gateway.public.to_string(),
            producer_token: PRODUCER_TOKEN.to_owned(),
            route: route.to_owned(),
            users: 8,
            connections_per_user: 2,
            producers: 2,
            duration: Duration::from_millis(500),
            padding: 100,
            batch: if route == "broadcast" { 1 } else { 10 },
            rate: None,
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
        target: gateway.public.to_string(),
        producer_token: PRODUCER_TOKEN.to_owned(),
        route: "broadcast".to_owned(),
        users: 4,
        connections_per_user: 1,
        producers: 2,
        duration: Duration::from_millis(500),
        padding: 10,
        batch: 1,
        rate: Some(200.0),
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
    let gateway = Gateway::start().await;
    let (round_trips, stale) = switchyard::bench::flip_latency(
        &gateway.public.to_string(),
        &format!("http://{}", gateway.admin),
        crate::harness::ADMIN_TOKEN,
        PRODUCER_TOKEN,
        "router_broadcast",
        6,
    )
    .await
    .unwrap();
    assert_eq!(stale, 0);
    assert!(round_trips.max >= round_trips.p50 && round_trips.p50 > 0);
    gateway.stop().await;
}
