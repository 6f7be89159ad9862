//! Only an operator clears a rollback latch: an emptied, cut-short, stale or version-less flags
//! file is refused on reload (422, counted) with the latch kept and the version unchanged; a
//! file clears a latch only with `clear_latch`; a PUT can neither forge a latch nor drop one.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::Gateway;

async fn flags(gateway: &Gateway) -> Value {
    let (status, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    assert_eq!(status, StatusCode::OK, "{flags}");
    flags
}

/// A gateway whose `broadcast` route an operator rolled back; returns it with the live version.
pub(crate) async fn rolled_back() -> (Gateway, u64) {
    let gateway = Gateway::start().await;
    gateway
        .set_route("user_event", json!({"ssot_percent": 25}))
        .await;
    let rollback = json!({"reason": "incident 12", "routes": ["broadcast"]});
    let (status, _, answer) = gateway
        .admin(Method::POST, "/admin/rollback", Some(rollback), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_latched(
        &gateway,
        answer["version"].as_u64().unwrap(),
        "after the rollback",
    )
    .await;
    let version = answer["version"].as_u64().unwrap();
    (gateway, version)
}

/// The `broadcast` route is latched, the flags are at `version` and events take legacy.
async fn assert_latched(gateway: &Gateway, version: u64, when: &str) {
    let live = flags(gateway).await;
    assert_eq!(live["version"], version, "{when}: {live}");
    let latch = &live["routes"]["broadcast"]["latch"];
    assert_eq!(latch["reason"], "incident 12", "{when}: {live}");
    assert_eq!(latch["trigger"], "api", "{when}: {live}");
    assert_eq!(live["routes"]["user_event"]["ssot_percent"], 25.0, "{when}");
    let published = gateway
        .publish("broadcast", "anyone", json!({"type": "t"}))
        .await;
    assert_eq!(
        (
            published.status,
            published.path.as_str(),
            published.flags_version
        ),
        (StatusCode::OK, "legacy", version),
        "{when}: {published:?}"
    );
}

#[tokio::test]
async fn an_emptied_cut_short_or_stale_file_leaves_a_rollback_latched() {
    let (gateway, version) = rolled_back().await;
    let written = std::fs::read_to_string(&gateway.flags_path).unwrap();
    assert!(written.contains("[routes.broadcast.latch]"), "{written}");
    let cut_before = |needle: &str| written[..written.find(needle).unwrap()].to_owned();
    let cases = [
        ("empty", String::new(), "empty or only comments"),
        (
            "comment-only",
            "# switchyard flags\n\n# (being rewritten)\n".to_owned(),
            "empty or only comments",
        ),
        (
            "cut short after the latch, still valid TOML",
            cut_before("[guard]"),
            "has lost its",
        ),
        (
            "cut short before the latch, still valid TOML",
            cut_before("[routes.broadcast]"),
            "has lost its",
        ),
        (
            "rewritten by hand without the latch",
            format!("version = {version}\n[routes.user_event]\nssot_percent = 25\n"),
            "would clear the rollback latch of route broadcast",
        ),
        (
            "without a version",
            "[routes.user_event]\nssot_percent = 25\n".to_owned(),
            "has no `version`",
        ),
        (
            "a restored older copy",
            written.replace(&format!("version = {version}\n"), "version = 1\n"),
            "older than the live flags",
        ),
    ];
    for (n, (name, text, reason)) in cases.iter().enumerate() {
        // Written in place, as a careless copy does: the file watcher sees it too.
        std::fs::write(&gateway.flags_path, text).unwrap();
        let (status, _, answer) = gateway
            .admin(Method::POST, "/admin/flags/reload", None, None)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_flags", "{name}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{name}: {message}");
        assert_latched(&gateway, version, name).await;
        assert_eq!(
            gateway
                .metric("flags_reloads_total", r#"result="error",trigger="api""#)
                .await,
            (n + 1) as f64,
            "{name}"
        );
    }
    // The watcher refused them too (at least the last one, once its burst settled).
    gateway
        .metric_at_least(
            "flags_reloads_total",
            r#"result="error",trigger="file""#,
            1.0,
        )
        .await;
    assert_latched(&gateway, version, "after the file watcher").await;

    // Saying so clears it, with the reason in the audit log.
    std::fs::write(
        &gateway.flags_path,
        format!(
            "version = {version}\n[routes.user_event]\nssot_percent = 25\n\n\
             [routes.broadcast]\nclear_latch = \"fix deployed\"\n"
        ),
    )
    .unwrap();
    let (status, _, answer) = gateway
        .admin(Method::POST, "/admin/flags/reload", None, None)
        .await;
    // The watcher may have applied it first; then the API finds nothing new.
    assert_eq!(status, StatusCode::OK, "{answer}");
    let live = flags(&gateway).await;
    assert_eq!(live["routes"]["broadcast"]["latch"], Value::Null, "{live}");
    assert_eq!(live["version"], version + 1, "{live}");
    let (_, _, audit) = gateway.admin(Method::GET, "/admin/audit", None, None).await;
    assert!(
        audit[0]["reason"]
            .as_str()
            .unwrap()
            .contains("latch of broadcast cleared: fix deployed"),
        "{audit}"
    );
    let published = gateway
        .publish("broadcast", "anyone", json!({"type": "t"}))
        .await;
    assert_eq!(published.path, "ssot", "{published:?}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_put_neither_forges_nor_drops_a_latch() {
    let (gateway, version) = rolled_back().await;
    let put = |flags: Value| Some(json!({"reason": "replace", "flags": flags}));
    let latch = json!({"reason": "forged", "trigger": "guard", "actor": "guard", "at": 1});
    for (name, document) in [
        (
            "a latch attributed to the guard",
            json!({"routes": {"user_event": {"latch": latch}}}),
        ),
        (
            "a different latch on the latched route",
            json!({"routes": {"broadcast": {"latch": latch}}}),
        ),
        (
            "clear_latch",
            json!({"routes": {"broadcast": {"clear_latch": "because"}}}),
        ),
    ] {
        let (status, _, answer) = gateway
            .admin(Method::PUT, "/admin/flags", put(document), None)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("a PUT sets no rollback latch and clears none"),
            "{name}: {answer}"
        );
        assert_latched(&gateway, version, name).await;
    }

    // An empty document resets every setting but keeps the latch.
    let (status, _, answer) = gateway
        .admin(Method::PUT, "/admin/flags", put(json!({})), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(
        answer["changes"].as_array().is_some_and(|changes| !changes
            .iter()
            .any(|c| c["key"].as_str().is_some_and(|key| key.ends_with(".latch")))),
        "a PUT changes no latch: {answer}"
    );
    let (_, _, live) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    assert_eq!(live["routes"]["user_event"]["ssot_percent"], 0.0);
    assert_eq!(
        live["routes"]["broadcast"]["latch"]["reason"],
        "incident 12"
    );
    assert_eq!(live["routes"]["user_event"]["latch"], Value::Null, "{live}");

    // Clearing takes a PATCH with clear_latch and a reason.
    let version = gateway
        .set_route("broadcast", json!({"clear_latch": true}))
        .await;
    let live = flags(&gateway).await;
    assert_eq!(live["version"], version);
    assert_eq!(live["routes"]["broadcast"]["latch"], Value::Null, "{live}");
    gateway.stop().await;
}

/// An operator's own flags.toml: comments, a value's comment, blank lines and its own order.
const OPERATOR_FILE: &str = include_str!("../fixtures/operator-flags.toml");

/// The settings of a `GET /admin/flags` answer: what a reload of the file must reproduce.
fn settings(flags: &Value) -> Value {
    json!([
        flags["version"],
        flags["salt"],
        flags["kill_switch"],
        flags["routes"],
        flags["guard"]
    ])
}

#[tokio::test]
async fn a_change_through_the_api_keeps_the_operators_comments_and_layout() {
    let config = crate::harness::config(true, &[]);
    let restart_config = config.clone();
    std::fs::write(&config.server.flags_path, OPERATOR_FILE).unwrap();
    let gateway = Gateway::start_with(config).await;
    let version = gateway
        .set_route("router_broadcast", json!({"ssot_percent": 25}))
        .await;
    assert_eq!(version, 4);
    let written = std::fs::read_to_string(&gateway.flags_path).unwrap();
    // Every line the operator wrote is there, in its place; only the version and the changed
    // value differ, and the value keeps its comment.
    let expected = OPERATOR_FILE
        .replace("version = 3", "version = 4")
        .replace("ssot_percent = 10   #", "ssot_percent = 25.00   #");
    assert!(written.contains(&expected), "{written}");
    assert!(written.ends_with("\n# end of flags\n"), "{written}");
    let live = flags(&gateway).await;
    let router = &live["routes"]["router_broadcast"];
    assert_eq!(router["ssot_percent"], 25.0, "{live}");
    assert_eq!(router["pin_ssot"], json!(["internal-tester-1"]), "{live}");
    assert_eq!(live["guard"]["min_events"], 50, "{live}");
    assert_eq!(live["routes"]["user_event"]["shadow"], true, "{live}");

    // Reading the file back gives the same flags: on a reload, and after a restart.
    let (status, _, answer) = gateway
        .admin(Method::POST, "/admin/flags/reload", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["outcome"], "unchanged", "{answer}");
    assert_eq!(answer["version"], 4, "{answer}");
    assert_eq!(answer["changes"], json!([]), "{answer}");
    let flags_path = gateway.stop_keeping_flags().await;
    assert_eq!(restart_config.server.flags_path, flags_path);
    let gateway = Gateway::start_with(restart_config).await;
    assert_eq!(settings(&flags(&gateway).await), settings(&live));
    gateway.stop().await;
}
