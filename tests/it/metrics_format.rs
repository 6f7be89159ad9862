//! `/metrics` is valid Prometheus exposition (checked by `promtool`, as Prometheus itself would
//! parse it) and exports the always-present metrics of the README's Metrics table, with the right values.

use serde_json::json;

use crate::harness::{Gateway, promtool};

/// Metrics of the README's table that every scrape shows, whatever traffic came before.
const METRIC_NAMES: &[&str] = &[
    "switchyard_route_requests_total",
    "switchyard_events_total",
    "switchyard_deliveries_total",
    "switchyard_delivery_latency_seconds",
    "switchyard_path_duration_seconds",
    "switchyard_connections",
    "switchyard_connected_users",
    "switchyard_connections_closed_total",
    "switchyard_auth_failures_total",
    "switchyard_flag_ssot_percent",
    "switchyard_route_effective_ssot_percent",
    "switchyard_flag_shadow",
    "switchyard_kill_switch_engaged",
    "switchyard_flags_version",
    "switchyard_flags_reloads_total",
    "switchyard_rollbacks_total",
    "switchyard_client_drop_connections_total",
    "switchyard_served_connection_seconds_total",
    "switchyard_ramp_step",
    "switchyard_guard_verdict",
    "switchyard_build_info",
    "switchyard_backplane_up",
    "switchyard_backplane_nodes",
    "switchyard_backplane_errors_total",
    "switchyard_process_cpu_seconds_total",
    "switchyard_process_resident_memory_bytes",
    "switchyard_process_open_fds",
    "switchyard_process_start_time_seconds",
];

#[tokio::test]
async fn metrics_pass_promtool_and_count_the_traffic() {
    let gateway = Gateway::start().await;
    let mut client = gateway.connect("mona").await;
    for n in 1..=2 {
        let (status, _, result) = gateway
            .broadcast("mona", json!({"type": "agent_thinking", "data": {"n": n}}))
            .await;
        assert_eq!(status.as_u16(), 200, "{result}");
        assert_eq!(client.next_json().await["data"]["n"], n);
    }
    // The legacy router route starts on its legacy path.
    let published = gateway
        .publish(
            "router_broadcast",
            "mona",
            json!({"type": "tool_executing"}),
        )
        .await;
    assert_eq!((published.status.as_u16(), published.sent()), (200, 1));
    assert_eq!(published.path, "legacy");
    assert_eq!(client.next_json().await["type"], "tool_executing");
    let (status, _, result) = gateway
        .broadcast("nobody-online", json!({"type": "agent_started"}))
        .await;
    assert_eq!(status.as_u16(), 200, "{result}");
    assert_eq!(result["queued"], true, "{result}");
    let (status, _, _) = gateway
        .post_json(
            "/v1/broadcast",
            Some("not-a-producer-token-at-all"),
            json!({"user_id": "mona", "event": {"type": "x"}}).to_string(),
        )
        .await;
    assert_eq!(status.as_u16(), 401);

    // `delivered` is counted after the writer's flush, which may trail the client's read.
    let delivered = r#"outcome="delivered",path="ssot",route="broadcast""#;
    let legacy_delivered = r#"outcome="delivered",path="legacy",route="router_broadcast""#;
    gateway
        .metric_reaches("deliveries_total", delivered, 2.0)
        .await;
    gateway
        .metric_reaches("deliveries_total", legacy_delivered, 1.0)
        .await;
    let text = gateway.metrics().await;

    let missing: Vec<&str> = METRIC_NAMES
        .iter()
        .copied()
        .filter(|name| {
            let type_line = format!("# TYPE {name} ");
            !text.lines().any(|line| line.starts_with(&type_line))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "missing metrics {missing:?} in:\n{text}"
    );

    for (sample, want) in [
        (format!("switchyard_deliveries_total{{{delivered}}}"), 2.0),
        (
            format!("switchyard_deliveries_total{{{legacy_delivered}}}"),
            1.0,
        ),
        (
            r#"switchyard_deliveries_total{outcome="offline_queued",path="ssot",route="broadcast"}"#
                .to_owned(),
            1.0,
        ),
        (
            r#"switchyard_events_total{path="ssot",role="primary",route="broadcast"}"#.to_owned(),
            3.0,
        ),
        (
            r#"switchyard_route_requests_total{route="broadcast",status="200"}"#.to_owned(),
            3.0,
        ),
        (
            r#"switchyard_delivery_latency_seconds_count{path="ssot",route="broadcast"}"#
                .to_owned(),
            2.0,
        ),
        (
            r#"switchyard_auth_failures_total{reason="unknown_producer_token"}"#.to_owned(),
            1.0,
        ),
        (
            r#"switchyard_route_requests_total{route="router_broadcast",status="200"}"#.to_owned(),
            1.0,
        ),
        (
            r#"switchyard_flag_ssot_percent{route="broadcast"}"#.to_owned(),
            100.0,
        ),
        ("switchyard_connections".to_owned(), 1.0),
        ("switchyard_connected_users".to_owned(), 1.0),
        (
            format!(
                r#"switchyard_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            ),
            1.0,
        ),
    ] {
        assert_eq!(sample_value(&text, &sample), Some(want), "{sample} in:\n{text}");
    }

    // The process collector reads this very process: it holds at least the listeners' sockets.
    let open_fds = sample_value(&text, "switchyard_process_open_fds");
    assert!(
        open_fds.is_some_and(|fds| fds >= 2.0),
        "{open_fds:?} in:
{text}"
    );

    let (success, report) = promtool(&["check", "metrics"], Some(&text)).await;
    assert!(
        success,
        "promtool check metrics failed:\n{report}\n--- input ---\n{text}"
    );

    drop(client);
    gateway.stop().await;
}

/// The value of the sample written exactly as `series` (name and labels), if present.
fn sample_value(text: &str, series: &str) -> Option<f64> {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.trim().parse().expect("a sample value is a number"))
}

/// `switchyard_route_effective_ssot_percent` is the share SSOT actually serves: the flag's share,
/// but 0 while a rollback latch or the kill switch holds the route on legacy, while
/// `switchyard_flag_ssot_percent` keeps showing what the flags say.
#[tokio::test]
async fn the_effective_ssot_share_is_0_while_latched_or_killed() {
    use hyper::Method;
    let gateway = Gateway::start().await;
    async fn shares(gateway: &Gateway) -> (f64, f64) {
        let route = r#"route="user_event""#;
        (
            gateway.metric("route_effective_ssot_percent", route).await,
            gateway.metric("flag_ssot_percent", route).await,
        )
    }
    gateway
        .set_route("user_event", json!({"ssot_percent": 40}))
        .await;
    assert_eq!(shares(&gateway).await, (40.0, 40.0), "ramped to 40%");

    let (status, _, answer) = gateway
        .admin(
            Method::POST,
            "/admin/rollback",
            Some(json!({"reason": "drill", "routes": ["user_event"]})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(shares(&gateway).await, (0.0, 40.0), "latched");

    gateway
        .set_route("user_event", json!({"clear_latch": true}))
        .await;
    assert_eq!(shares(&gateway).await, (40.0, 40.0), "latch cleared");

    let (_, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    let version = flags["version"].as_u64().unwrap();
    std::fs::write(
        &gateway.flags_path,
        format!(
            "version = {version}\n[kill_switch]\nengaged = true\nreason = \"drill\"\n\n\
             [routes.user_event]\nssot_percent = 40\n"
        ),
    )
    .unwrap();
    let (status, _, answer) = gateway
        .admin(Method::POST, "/admin/flags/reload", None, None)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(shares(&gateway).await, (0.0, 40.0), "kill switch engaged");
    gateway.stop().await;
}
