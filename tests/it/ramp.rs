//! Automatic ramps end to end (DESIGN §4.8): a ramp started through the admin API climbs its
//! steps on healthy traffic, one audited change per step, each step held for `step_seconds`, the
//! cohort sticky and monotone; on a faulty path it is stopped by the guard's rollback and never
//! reaches 100%. A ramp survives a restart; a hand-set share, the kill switch and a cancel end
//! it; one written into the flags file starts by itself; bad ramps are refused and change
//! nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::harness::{Gateway, Producer, change_of, config};

const WINDOW_SECONDS: u64 = 3;
const ROUTE: &str = "router_broadcast";
/// How long a whole ramp of 3 s steps may take on a loaded machine.
const RAMP_DEADLINE: Duration = Duration::from_secs(40);

async fn ramp_gateway() -> Gateway {
    let config = config(true, &[("SWITCHYARD_ADMIN_ALLOW_FAULT_INJECTION", "true")]);
    std::fs::write(
        &config.server.flags_path,
        format!(
            "[guard]\nwindow_seconds = {WINDOW_SECONDS}\nmin_events = 50\nconsecutive_breaches = 2\n"
        ),
    )
    .unwrap();
    Gateway::start_with(config).await
}

/// Publishes to `users` in turn until `stop`, noting for each user the paths that served it, in
/// order, without repeats: a user whose list reads `["legacy", "ssot"]` moved to SSOT once.
fn traffic(
    gateway: &Gateway,
    users: Vec<String>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<HashMap<String, Vec<String>>> {
    let public = gateway.public;
    tokio::spawn(async move {
        let mut producer = Producer::connect(public).await;
        let mut paths: HashMap<String, Vec<String>> = HashMap::new();
        let mut n = 0;
        while !stop.load(Ordering::Acquire) {
            let user = &users[n % users.len()];
            let published = producer
                .publish(ROUTE, user, json!({"type": "agent_thinking", "seq": n}))
                .await;
            assert_eq!(published.status, 200, "{}", published.body);
            let seen = paths.entry(user.clone()).or_default();
            if seen.last() != Some(&published.path) {
                seen.push(published.path);
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        paths
    })
}

async fn route_flags(gateway: &Gateway) -> Value {
    let (status, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    assert_eq!(status, StatusCode::OK, "{flags}");
    flags["routes"][ROUTE].clone()
}

async fn start_ramp(gateway: &Gateway, steps: &[f64], step_seconds: u64) -> Value {
    let body =
        json!({"ramp": {"steps": steps, "step_seconds": step_seconds}, "reason": "ramp drill"});
    let (status, _, flags) = gateway
        .admin(
            Method::PATCH,
            &format!("/admin/flags/routes/{ROUTE}"),
            Some(body),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{flags}");
    // The answer summarises the change; the live flags show where the ramp stands.
    let started = change_of(&flags, &format!("routes.{ROUTE}.ramp"));
    assert_eq!(started["old"], Value::Null, "{flags}");
    assert_eq!(started["new"]["steps"], json!(steps), "{flags}");
    let (_, _, live) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    live
}

async fn audit(gateway: &Gateway) -> Vec<Value> {
    let (_, _, audit) = gateway
        .admin(Method::GET, "/admin/audit?limit=100", None, None)
        .await;
    audit.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramp_on_healthy_traffic_reaches_100_one_audited_step_at_a_time() {
    let gateway = ramp_gateway().await;
    let (users, readers) = gateway.readers("ramp", 40).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(&gateway, users, Arc::clone(&stop));

    let flags = start_ramp(&gateway, &[10.0, 50.0, 100.0], 3).await;
    let route = &flags["routes"][ROUTE];
    assert_eq!(
        route["ssot_percent"], 10.0,
        "starts at its first step: {flags}"
    );
    let ramp = &route["ramp"];
    assert_eq!(
        (&ramp["steps"], &ramp["step_seconds"], &ramp["step"]),
        (&json!([10.0, 50.0, 100.0]), &json!(3), &json!(1)),
        "{ramp}"
    );
    assert_eq!(ramp["next_percent"], 50.0, "{ramp}");
    assert!(ramp["next_advance_at"].is_string(), "{ramp}");
    assert_eq!(
        gateway
            .metric("ramp_step", r#"route="router_broadcast""#)
            .await,
        1.0
    );

    // Watch it climb.
    let started = Instant::now();
    let mut shares = vec![10.0];
    let mut saw_stats = false;
    loop {
        let route = route_flags(&gateway).await;
        let share = route["ssot_percent"].as_f64().unwrap();
        if shares.last() != Some(&share) {
            shares.push(share);
        }
        if share == 100.0 {
            assert!(route["ramp"].is_null(), "complete: {route}");
            break;
        }
        if !saw_stats {
            let (_, _, stats) = gateway.admin(Method::GET, "/admin/stats", None, None).await;
            let stats = &stats["routes"][ROUTE];
            if stats["guard"]["verdict"] == "pass" {
                assert!(stats["ramp"]["step"].is_u64(), "{stats}");
                saw_stats = true;
            }
        }
        assert!(
            started.elapsed() < RAMP_DEADLINE,
            "the ramp did not finish: {route}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    // A round of events to everyone at 100%.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Release);
    let paths = load.await.unwrap();
    assert_eq!(shares, [10.0, 50.0, 100.0]);
    assert!(
        saw_stats,
        "/admin/stats showed the ramp and a passing verdict"
    );
    assert_eq!(
        gateway
            .metric("ramp_step", r#"route="router_broadcast""#)
            .await,
        0.0
    );
    // Sticky and monotone: no user ever went back from SSOT to legacy, and all ended on SSOT.
    for (user, seen) in &paths {
        assert!(
            seen == &["ssot"] || seen == &["legacy", "ssot"],
            "{user} was served by {seen:?}"
        );
    }
    // One audited change per step: the start (api) and two steps (ramp), each held ≥ 3 s.
    let entries = audit(&gateway).await;
    let start = entries
        .iter()
        .find(|e| e["trigger"] == "api" && e["reason"].as_str().unwrap().starts_with("ramp drill"))
        .unwrap();
    assert!(
        start["reason"]
            .as_str()
            .unwrap()
            .contains("ramp of router_broadcast started at step 1 of 3 (10.00%)"),
        "{start}"
    );
    let steps: Vec<&Value> = entries.iter().filter(|e| e["trigger"] == "ramp").collect();
    assert_eq!(steps.len(), 2, "{entries:#?}");
    let (to_50, to_100) = (steps[1], steps[0]);
    for (entry, change) in [
        (to_50, "routes.router_broadcast.ssot_percent: 10.00 → 50.00"),
        (
            to_100,
            "routes.router_broadcast.ssot_percent: 50.00 → 100.00",
        ),
    ] {
        assert_eq!(entry["actor"], "ramp");
        assert!(
            entry["changes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == change),
            "{entry}"
        );
        assert!(
            entry["reason"].as_str().unwrap().contains("with no breach"),
            "{entry}"
        );
    }
    // The last step completes the ramp in the same change.
    assert!(
        to_100["changes"].as_array().unwrap().iter().any(|c| {
            let c = c.as_str().unwrap();
            c.starts_with("routes.router_broadcast.ramp.steps:") && c.ends_with("→ (none)")
        }),
        "{to_100}"
    );
    let at = |entry: &Value| entry["version"].as_u64().unwrap();
    assert!(at(start) < at(to_50) && at(to_50) < at(to_100));
    println!("ramp 10 → 50 → 100 with 3 s steps took {took:?}");
    assert_eq!(gateway.guard_rollbacks(ROUTE).await, 0.0);
    for reader in readers {
        reader.abort();
    }
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramp_on_a_faulty_path_is_stopped_latched_and_never_reaches_100() {
    let gateway = ramp_gateway().await;
    let (users, readers) = gateway.readers("ramp", 40).await;
    let (status, _, answer) = gateway
        .admin(
            Method::POST,
            "/admin/faults",
            Some(json!({"route": ROUTE, "path": "ssot", "drop_ratio": 0.2, "reason": "drill"})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(&gateway, users, Arc::clone(&stop));
    start_ramp(&gateway, &[10.0, 50.0, 100.0], 3).await;

    let started = Instant::now();
    let mut highest: f64 = 0.0;
    let route = loop {
        let route = route_flags(&gateway).await;
        highest = highest.max(route["ssot_percent"].as_f64().unwrap());
        if route["latch"]["trigger"] == "guard" {
            break route;
        }
        assert!(started.elapsed() < RAMP_DEADLINE, "no rollback: {route}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Keep serving a while longer: nothing moves a latched route's ramp.
    tokio::time::sleep(Duration::from_secs(WINDOW_SECONDS + 1)).await;
    stop.store(true, Ordering::Release);
    let paths = load.await.unwrap();
    let after = route_flags(&gateway).await;
    assert!(highest < 100.0, "the share reached {highest}");
    assert!(
        route["ramp"].is_null(),
        "the rollback ended the ramp: {route}"
    );
    assert_eq!(after["latch"], route["latch"], "{after}");
    assert!(after["ramp"].is_null(), "{after}");
    assert!(
        paths.values().any(|seen| seen.contains(&"ssot".to_owned())),
        "some users were on SSOT: {paths:?}"
    );
    assert!(
        paths
            .values()
            .all(|seen| seen.last().map(String::as_str) == Some("legacy")),
        "everyone ends on legacy: {paths:?}"
    );
    let entries = audit(&gateway).await;
    let rollback = entries.iter().find(|e| e["trigger"] == "guard").unwrap();
    let reason = rollback["reason"].as_str().unwrap();
    assert!(reason.contains("SSOT path delivery ratio"), "{reason}");
    assert!(
        reason.contains("ramp of router_broadcast ended: the route is rolled back"),
        "{reason}"
    );
    assert!(
        entries.iter().all(|e| e["trigger"] != "ramp"
            || !e["changes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c.as_str().unwrap().contains("→ 100.00"))),
        "{entries:#?}"
    );
    println!("ramp on a 20% faulty SSOT path: highest share {highest}%, latched by the guard");
    for reader in readers {
        reader.abort();
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_ramp_survives_a_restart_and_a_hand_set_share_the_kill_switch_or_a_cancel_end_it() {
    let restart_config = config(true, &[]);
    let gateway = Gateway::start_with(restart_config.clone()).await;
    let flags = start_ramp(&gateway, &[1.0, 5.0, 25.0, 50.0, 100.0], 3600).await;
    let ramp = flags["routes"][ROUTE]["ramp"].clone();
    assert_eq!(ramp["step"], 1, "{ramp}");

    // A restart reads the ramp and its progress back from the file.
    let flags_path = gateway.stop_keeping_flags().await;
    let text = std::fs::read_to_string(&flags_path).unwrap();
    assert!(text.contains("[routes.router_broadcast.ramp]"), "{text}");
    let gateway = Gateway::start_with(restart_config).await;
    let route = route_flags(&gateway).await;
    assert_eq!(route["ramp"]["step"], ramp["step"], "{route}");
    assert_eq!(route["ramp"]["since"], ramp["since"], "{route}");
    assert_eq!(route["ssot_percent"], 1.0);
    assert_eq!(
        gateway
            .metric("ramp_step", r#"route="router_broadcast""#)
            .await,
        1.0
    );
    // It holds (an hour per step), saying why.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let route = route_flags(&gateway).await;
        if let Some(waiting) = route["ramp"]["waiting"].as_str() {
            assert!(
                waiting.starts_with("holding step 1 of 5 (1.00%)"),
                "{waiting}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no waiting reason: {route}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A hand-set share ends it, audited.
    let version = gateway.set_route(ROUTE, json!({"ssot_percent": 20})).await;
    let route = route_flags(&gateway).await;
    assert!(route["ramp"].is_null(), "{route}");
    assert_eq!(route["ssot_percent"], 20.0);
    let entries = audit(&gateway).await;
    assert_eq!(entries[0]["version"], version);
    assert!(
        entries[0]["reason"]
            .as_str()
            .unwrap()
            .contains("ramp of router_broadcast ended: ssot_percent was set by hand to 20.00"),
        "{}",
        entries[0]
    );

    // A cancel stops it where it stands.
    start_ramp(&gateway, &[30.0, 60.0], 3600).await;
    gateway.set_route(ROUTE, json!({"ramp": null})).await;
    let route = route_flags(&gateway).await;
    assert!(route["ramp"].is_null(), "{route}");
    assert_eq!(
        route["ssot_percent"], 30.0,
        "the share stays where the ramp was"
    );

    // The kill switch, engaged through the flags file, ends it too; and a ramp written into
    // the file starts by itself.
    start_ramp(&gateway, &[40.0, 60.0], 3600).await;
    let mut text = std::fs::read_to_string(&gateway.flags_path).unwrap();
    text = text.replace("engaged = false", "engaged = true");
    std::fs::write(&gateway.flags_path, &text).unwrap();
    let (status, _, answer) = gateway
        .admin(Method::POST, "/admin/flags/reload", None, None)
        .await;
    assert_eq!(status, 200, "{answer}");
    let ended = wait_for_route(&gateway, |route| route["ramp"].is_null()).await;
    assert_eq!(ended["ssot_percent"], 40.0);
    let entries = audit(&gateway).await;
    let settled = entries.iter().find(|e| e["trigger"] == "ramp").unwrap();
    assert!(
        settled["reason"]
            .as_str()
            .unwrap()
            .contains("ramp of router_broadcast ended: the kill switch is engaged"),
        "{settled}"
    );

    let mut text = std::fs::read_to_string(&gateway.flags_path).unwrap();
    text = text.replace("engaged = true", "engaged = false");
    text.push_str("\n[routes.user_event.ramp]\nsteps = [2, 4]\nstep_seconds = 3600\n");
    std::fs::write(&gateway.flags_path, &text).unwrap();
    let (status, _, answer) = gateway
        .admin(Method::POST, "/admin/flags/reload", None, None)
        .await;
    assert_eq!(status, 200, "{answer}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
        let user_event = &flags["routes"]["user_event"];
        if user_event["ramp"]["step"] == 1 {
            assert_eq!(user_event["ssot_percent"], 2.0, "{user_event}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the declared ramp did not start: {flags}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway.stop().await;
}

async fn wait_for_route(gateway: &Gateway, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let route = route_flags(gateway).await;
        if done(&route) {
            return route;
        }
        assert!(Instant::now() < deadline, "{route}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PATCHes `body` onto `route`, asserting a 422 whose message contains `needle`.
async fn refused(gateway: &Gateway, route: &str, body: Value, needle: &str) {
    let path = format!("/admin/flags/routes/{route}");
    let (status, _, answer) = gateway
        .admin(Method::PATCH, &path, Some(body.clone()), None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains(needle), "{body}: {message}");
}

#[tokio::test]
async fn bad_ramps_are_refused_and_change_nothing() {
    let gateway = Gateway::start().await;
    let version = || async { route_flags_version(&gateway).await };
    let before = version().await;
    for (body, needle) in [
        (
            json!({"ramp": {"steps": [5, 1], "step_seconds": 60}, "reason": "r"}),
            "ramp.steps: steps must rise",
        ),
        (
            json!({"ramp": {"steps": [5], "step_seconds": 60}, "reason": "r"}),
            "ramp.steps: a ramp has 2 to 20 steps",
        ),
        (
            json!({"ramp": {"steps": [1, 5], "step_seconds": 0}, "reason": "r"}),
            "ramp.step_seconds",
        ),
        (
            json!({"ramp": {"steps": [1, 500], "step_seconds": 60}, "reason": "r"}),
            "outside 0..=100",
        ),
        (
            json!({"ramp": {"steps": [1, 5], "step_seconds": 60, "step": 2}, "reason": "r"}),
            "unknown field `step`",
        ),
        (
            json!({"ramp": {"steps": "1,5", "step_seconds": 60}, "reason": "r"}),
            "invalid type",
        ),
        (
            json!({"ramp": {"steps": [1, 5], "step_seconds": 60}, "ssot_percent": 3, "reason": "r"}),
            "cannot change together",
        ),
        (
            json!({"ramp": {"steps": [1, 5], "step_seconds": 60}}),
            "`reason` is required",
        ),
    ] {
        refused(&gateway, ROUTE, body, needle).await;
    }
    assert_eq!(version().await, before, "nothing changed");
    // Not on a rolled-back route, nor under the kill switch.
    let ramp = json!({"ramp": {"steps": [1, 5], "step_seconds": 60}, "reason": "r"});
    let (status, _, _) = gateway
        .admin(
            Method::POST,
            "/admin/rollback",
            Some(json!({"reason": "drill", "routes": [ROUTE]})),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let latched = version().await;
    assert_eq!(latched, before + 1);
    refused(&gateway, ROUTE, ramp.clone(), "clear the latch").await;
    assert_eq!(version().await, latched, "nothing changed");
    let (status, _, killed) = gateway
        .admin(
            Method::PUT,
            "/admin/flags",
            Some(json!({"reason": "stop everything", "flags": {"kill_switch": {"engaged": true}}})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{killed}");
    refused(&gateway, "user_event", ramp, "the kill switch is engaged").await;
    assert_eq!(version().await, latched + 1, "nothing changed");
    gateway.stop().await;
}

async fn route_flags_version(gateway: &Gateway) -> u64 {
    let (_, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    flags["version"].as_u64().unwrap()
}
