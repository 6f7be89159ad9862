//! The admin API's contract (DESIGN §4.4, §4.5): authentication, the live snapshot, every way to
//! change it (PATCH, PUT, reload from the file, the file watcher) and what each does to the next
//! event, the audit log, optimistic concurrency with `If-Match`, and write-back to `flags.toml`,
//! including when the file is read-only. Bad input gets its documented status and changes
//! nothing: the version stays and producers keep getting the previous path.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use hyper::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{
    ADMIN_TOKEN, Client, Gateway, PRODUCER_TOKEN, PROMPTLY, ROUTES, change_of, config, http,
    json_or_null, scratch_dir, thinking,
};

const ROUTER_PATCH: &str = "/admin/flags/routes/router_broadcast";

/// Problems found across the rows of a table, reported together so that one broken row does
/// not hide the others. Each is prefixed with the row being checked.
#[derive(Default)]
struct Problems {
    row: String,
    found: Vec<String>,
}

impl Problems {
    fn row(&mut self, name: impl Into<String>) {
        self.row = name.into();
    }

    fn note(&mut self, problem: String) {
        self.found.push(format!("{}: {problem}", self.row));
    }

    /// Checks an error answer: `status` and `{"error": {"code", "message"}}` with non-empty
    /// strings, the message mentioning every one of `fragments`.
    fn error(&mut self, got: StatusCode, answer: &Value, status: StatusCode, fragments: &[&str]) {
        if got != status {
            self.note(format!("{got}, expected {status}: {answer}"));
        }
        let code = answer["error"]["code"].as_str().unwrap_or("");
        let message = answer["error"]["message"].as_str().unwrap_or("");
        if code.is_empty() || message.is_empty() {
            self.note(format!("not a JSON error body: {answer}"));
            return;
        }
        for fragment in fragments {
            if !message.contains(fragment) {
                self.note(format!(
                    "the message does not mention {fragment:?}: {message}"
                ));
            }
        }
    }

    /// Publishes for `user` on `route` and notes a problem unless the event was served by `path`
    /// under flags `version`.
    async fn path(&mut self, gateway: &Gateway, route: &str, user: &str, path: &str, version: u64) {
        let published = gateway.publish(route, user, thinking(0)).await;
        let got = (published.status, published.path.as_str());
        if got != (StatusCode::OK, path) || published.flags_version != version {
            self.note(format!(
                "{route} for {user:?} answered {} on {} at version {}, expected 200 on {path} at \
                 version {version}",
                published.status, published.path, published.flags_version
            ));
        }
    }

    fn assert_none(&self) {
        assert!(
            self.found.is_empty(),
            "{} problem(s):\n{}",
            self.found.len(),
            self.found.join("\n")
        );
    }
}

/// An admin call with a raw body and any headers (the harness's `admin` always sends JSON and a
/// well-formed `If-Match`).
async fn admin_raw(
    gateway: &Gateway,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (StatusCode, HeaderMap, Value) {
    let body = Bytes::from(body.to_owned());
    let (status, headers, body) = http(gateway.admin, method, path, headers, body).await;
    let value = json_or_null(&body);
    (status, headers, value)
}

fn admin_headers(content_type: &str) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("Bearer {ADMIN_TOKEN}")),
        ("content-type", content_type.to_owned()),
    ]
}

async fn get_flags(gateway: &Gateway) -> Value {
    let (status, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    assert_eq!(status, StatusCode::OK, "{flags}");
    flags
}

async fn live_version(gateway: &Gateway) -> u64 {
    get_flags(gateway).await["version"].as_u64().unwrap()
}

async fn audit(gateway: &Gateway) -> Vec<Value> {
    let (status, _, entries) = gateway.admin(Method::GET, "/admin/audit", None, None).await;
    assert_eq!(status, StatusCode::OK, "{entries}");
    entries
        .as_array()
        .expect("the audit is a JSON array")
        .clone()
}

async fn reload(gateway: &Gateway) -> (StatusCode, Value) {
    let (status, _, answer) = gateway
        .admin(Method::POST, "/admin/flags/reload", None, None)
        .await;
    (status, answer)
}

fn etag(headers: &HeaderMap) -> &str {
    headers
        .get("etag")
        .expect("flags answers carry an ETag")
        .to_str()
        .unwrap()
}

/// The path and flags version that served `user`'s next event on `route`.
async fn served(gateway: &Gateway, route: &str, user: &str) -> (String, u64) {
    let published = gateway.publish(route, user, thinking(0)).await;
    assert_eq!(published.status, StatusCode::OK, "{:?}", published.body);
    (published.path, published.flags_version)
}

/// Writes `text` to a temporary file beside `path` and renames it over `path`, the way editors
/// and config management save files.
fn write_then_rename(path: &Path, text: &str) {
    let temp = path.with_extension("toml.new");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

#[tokio::test]
async fn admin_endpoints_need_an_admin_token_and_health_does_not() {
    let gateway = Gateway::start().await;
    let sneaky = |body: Value| Some(body.to_string());
    let endpoints = [
        (Method::GET, "/admin/flags", None),
        (
            Method::PATCH,
            ROUTER_PATCH,
            sneaky(json!({"reason": "sneaky", "ssot_percent": 100})),
        ),
        (
            Method::PUT,
            "/admin/flags",
            sneaky(json!({"reason": "sneaky", "flags": {"kill_switch": {"engaged": true}}})),
        ),
        (Method::POST, "/admin/flags/reload", None),
        (
            Method::POST,
            "/admin/rollback",
            sneaky(json!({"reason": "sneaky"})),
        ),
        (Method::GET, "/admin/audit", None),
        (Method::GET, "/admin/shadow/mismatches", None),
        (Method::GET, "/admin/stats", None),
        (Method::GET, "/admin", None),
        (Method::DELETE, "/admin/no-such-endpoint", None),
    ];
    let credentials = [
        ("no token", None),
        (
            "a wrong token",
            Some("Bearer not-the-admin-token".to_owned()),
        ),
        ("a longer token", Some(format!("Bearer {ADMIN_TOKEN}x"))),
        ("a producer token", Some(format!("Bearer {PRODUCER_TOKEN}"))),
        ("another scheme", Some(format!("Basic {ADMIN_TOKEN}"))),
        ("an empty bearer", Some("Bearer ".to_owned())),
    ];
    let mut problems = Problems::default();
    for (method, path, body) in &endpoints {
        for (credential, authorization) in &credentials {
            problems.row(format!("{method} {path} with {credential}"));
            let mut headers = vec![("content-type", "application/json".to_owned())];
            if let Some(authorization) = authorization {
                headers.push(("authorization", authorization.clone()));
            }
            let body = body.as_deref().unwrap_or("");
            let (status, response_headers, answer) =
                admin_raw(&gateway, method.clone(), path, &headers, body).await;
            problems.error(status, &answer, StatusCode::UNAUTHORIZED, &[]);
            if answer["error"]["code"] != "unauthorized" {
                problems.note(format!("error code is not \"unauthorized\": {answer}"));
            }
            let content_type = response_headers.get("content-type");
            if !content_type.is_some_and(|v| v.as_bytes().starts_with(b"application/json")) {
                problems.note(format!("the 401 is not JSON: {content_type:?}"));
            }
        }
    }
    // With the token, the same endpoints answer (so the 401s above are about the token).
    for path in ["/admin/flags", "/admin/audit"] {
        problems.row(format!("GET {path} with the admin token"));
        let (status, _, answer) = gateway.admin(Method::GET, path, None, None).await;
        if status != StatusCode::OK {
            problems.note(format!("{status}: {answer}"));
        }
    }
    // None of the refused calls changed anything.
    problems.row("after the refused calls");
    let flags = get_flags(&gateway).await;
    if flags["version"] != 0 || flags["kill_switch"]["engaged"] != false {
        problems.note(format!("the flags changed: {flags}"));
    }
    for route in ROUTES {
        if !flags["routes"][route]["latch"].is_null() {
            problems.note(format!("{route} is latched: {flags}"));
        }
    }
    let entries = audit(&gateway).await;
    if !entries.is_empty() {
        problems.note(format!("audited: {entries:?}"));
    }
    // Scraping and health checks need no token.
    for path in ["/metrics", "/healthz", "/readyz"] {
        problems.row(format!("GET {path} without a token"));
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        let status = loop {
            let (status, _, _) = http(gateway.admin, Method::GET, path, &[], Bytes::new()).await;
            // Readiness is set once both listeners serve, a moment after they are bound.
            if status == StatusCode::OK || tokio::time::Instant::now() > deadline {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if status != StatusCode::OK {
            problems.note(format!("{status}"));
        }
    }
    problems.assert_none();
    gateway.stop().await;
}

#[tokio::test]
async fn get_flags_shows_the_live_snapshot_with_an_etag() {
    let gateway = Gateway::start().await;
    let (status, headers, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    assert_eq!(status, StatusCode::OK, "{flags}");
    assert_eq!(etag(&headers), "\"0\"");
    assert_eq!(flags["version"], 0, "{flags}");
    assert_eq!(flags["source"], "startup", "{flags}");
    // No file yet: the defaults are live and nothing on disk says so.
    assert_eq!(flags["persisted"], gateway.flags_path.exists(), "{flags}");
    let kill_switch = json!({"engaged": false, "reason": ""});
    assert_eq!(flags["kill_switch"], kill_switch, "{flags}");
    let routes = flags["routes"].as_object().expect("routes is an object");
    let mut names: Vec<&str> = routes.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "broadcast",
            "router_broadcast",
            "scoped_broadcast",
            "user_event"
        ]
    );
    for route in ROUTES {
        let ssot_percent = if route == "broadcast" { 100.0 } else { 0.0 };
        let mut view = routes[route].clone();
        // Compared as numbers: `100` and `100.0` are the same percentage.
        for key in ["ssot_percent", "shadow_sample_percent"] {
            view[key] = json!(view[key].as_f64());
        }
        let expected = json!({
            "ssot_percent": ssot_percent,
            "shadow": false,
            "shadow_sample_percent": 100.0,
            "pin_ssot": [],
            "pin_legacy": [],
            "ignore_fields": [],
            "latch": null,
            "ramp": null,
        });
        assert_eq!(view, expected, "{route}");
    }

    // The ETag follows the version, on the answer to a change and on GET.
    let (status, headers, changed) = gateway
        .admin(
            Method::PATCH,
            "/admin/flags/routes/scoped_broadcast",
            Some(json!({"reason": "etag", "ssot_percent": 1})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(etag(&headers), "\"1\"");
    // The answer is the change summary: the one setting that moved, not the whole set.
    assert_eq!(
        changed,
        json!({
            "old_version": 0,
            "version": 1,
            "persisted": true,
            "changes": [{
                "key": "routes.scoped_broadcast.ssot_percent",
                "route": "scoped_broadcast",
                "old": 0.0,
                "new": 1.0,
            }],
        })
    );
    let (_, headers, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    assert_eq!(etag(&headers), "\"1\"");
    assert_eq!(flags["source"], "api", "{flags}");
    assert_eq!(flags["actor"], "ops", "{flags}");
    assert_eq!(flags["persisted"], true, "{flags}");
    gateway.stop().await;
}

/// One PATCH on `user_event` and what must follow: the route's view, and the path each user's
/// next event takes.
struct PatchStep {
    patch: Value,
    view: Value,
    paths: &'static [(&'static str, &'static str)],
}

#[tokio::test]
async fn patch_changes_each_route_setting() {
    let gateway = Gateway::start().await;
    let steps = [
        PatchStep {
            patch: json!({"ssot_percent": 100}),
            view: json!({"ssot_percent": 100.0, "pin_ssot": [], "pin_legacy": []}),
            paths: &[("anyone", "ssot"), ("holdout", "ssot")],
        },
        PatchStep {
            patch: json!({"pin_legacy": ["holdout"]}),
            view: json!({"ssot_percent": 100.0, "pin_legacy": ["holdout"]}),
            paths: &[("anyone", "ssot"), ("holdout", "legacy")],
        },
        PatchStep {
            patch: json!({"ssot_percent": 0, "pin_ssot": ["vip"]}),
            view: json!({"ssot_percent": 0.0, "pin_ssot": ["vip"], "pin_legacy": ["holdout"]}),
            paths: &[("anyone", "legacy"), ("holdout", "legacy"), ("vip", "ssot")],
        },
        PatchStep {
            patch: json!({"shadow": true, "shadow_sample_percent": 12.5}),
            view: json!({"shadow": true, "shadow_sample_percent": 12.5, "pin_ssot": ["vip"]}),
            paths: &[("anyone", "legacy"), ("vip", "ssot")],
        },
        PatchStep {
            patch: json!({"ssot_percent": 33.33, "pin_ssot": [], "pin_legacy": []}),
            view: json!({"ssot_percent": 33.33, "pin_ssot": [], "pin_legacy": [], "shadow": true}),
            paths: &[],
        },
        PatchStep {
            patch: json!({"shadow": false}),
            view: json!({"shadow": false, "shadow_sample_percent": 12.5}),
            paths: &[],
        },
    ];
    let mut problems = Problems::default();
    for (n, step) in steps.iter().enumerate() {
        let expected_version = n as u64 + 1;
        problems.row(format!("step {expected_version} {}", step.patch));
        let version = gateway.set_route("user_event", step.patch.clone()).await;
        if version != expected_version {
            problems.note(format!("version {version}, expected {expected_version}"));
        }
        let flags = get_flags(&gateway).await;
        let view = &flags["routes"]["user_event"];
        for (key, want) in step.view.as_object().unwrap() {
            if &view[key] != want {
                problems.note(format!("{key} is {}, expected {want}", view[key]));
            }
        }
        // The other routes are untouched.
        for route in ["router_broadcast", "scoped_broadcast"] {
            let other = &flags["routes"][route];
            if other["ssot_percent"] != 0.0 || other["shadow"] != false {
                problems.note(format!("{route} changed: {other}"));
            }
        }
        for (user, path) in step.paths {
            problems
                .path(&gateway, "user_event", user, path, version)
                .await;
        }
    }
    // The flag gauges follow.
    problems.row("metrics");
    for (name, want) in [("flag_ssot_percent", 33.33), ("flag_shadow", 0.0)] {
        let got = gateway.metric(name, "route=\"user_event\"").await;
        if got != want {
            problems.note(format!(
                "{name}{{route=\"user_event\"}} is {got}, expected {want}"
            ));
        }
    }
    problems.assert_none();
    gateway.stop().await;
}

/// A PATCH that must be refused.
struct BadPatch {
    name: &'static str,
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
    status: StatusCode,
    /// What the error message must mention.
    fragment: &'static str,
}

/// A PATCH of `router_broadcast` with `body` as JSON, which must get `status`.
fn bad_patch(
    name: &'static str,
    body: &'static str,
    status: u16,
    fragment: &'static str,
) -> BadPatch {
    BadPatch {
        name,
        path: ROUTER_PATCH,
        content_type: "application/json",
        body,
        status: StatusCode::from_u16(status).unwrap(),
        fragment,
    }
}

#[tokio::test]
async fn invalid_patches_change_nothing() {
    let gateway = Gateway::start().await;
    // "vip" is pinned to SSOT. Each bad call also tries to unpin "vip" (or pin it to legacy),
    // so a partly applied change would show in the path of vip's next event.
    let pinned_version = gateway
        .set_route("router_broadcast", json!({"pin_ssot": ["vip"]}))
        .await;
    let cases = [
        bad_patch("no reason", r#"{"pin_ssot": []}"#, 422, "reason"),
        bad_patch(
            "an empty reason",
            r#"{"reason": "", "pin_ssot": []}"#,
            422,
            "reason",
        ),
        bad_patch(
            "a blank reason",
            r#"{"reason": "  ", "pin_ssot": []}"#,
            422,
            "reason",
        ),
        bad_patch(
            "ssot_percent 150",
            r#"{"reason": "r", "pin_ssot": [], "ssot_percent": 150}"#,
            422,
            "ssot_percent",
        ),
        bad_patch(
            "ssot_percent with three decimals",
            r#"{"reason": "r", "pin_ssot": [], "ssot_percent": 10.005}"#,
            422,
            "ssot_percent",
        ),
        bad_patch(
            "a negative ssot_percent",
            r#"{"reason": "r", "pin_ssot": [], "ssot_percent": -1}"#,
            422,
            "ssot_percent",
        ),
        bad_patch(
            "shadow_sample_percent 100.5",
            r#"{"reason": "r", "pin_ssot": [], "shadow_sample_percent": 100.5}"#,
            422,
            "shadow_sample_percent",
        ),
        bad_patch(
            "an unknown field",
            r#"{"reason": "r", "pin_ssot": [], "colour": "red"}"#,
            422,
            "colour",
        ),
        bad_patch(
            "a string for shadow",
            r#"{"reason": "r", "pin_ssot": [], "shadow": "yes"}"#,
            422,
            "boolean",
        ),
        bad_patch(
            "a user pinned both ways",
            r#"{"reason": "r", "pin_legacy": ["vip"]}"#,
            422,
            "vip",
        ),
        bad_patch(
            "a padded user id in a pin",
            r#"{"reason": "r", "pin_ssot": [" vip "]}"#,
            422,
            "pin_ssot",
        ),
        bad_patch(
            "a body that is not an object",
            r#"[{"reason": "r", "pin_ssot": []}]"#,
            422,
            "",
        ),
        BadPatch {
            path: "/admin/flags/routes/nope",
            ..bad_patch(
                "an unknown route",
                r#"{"reason": "r", "pin_ssot": []}"#,
                404,
                "nope",
            )
        },
        bad_patch(
            "malformed JSON",
            r#"{"reason": "r", "pin_ssot": ["#,
            400,
            "JSON",
        ),
        bad_patch("an empty body", "", 400, "JSON"),
        BadPatch {
            content_type: "text/plain",
            ..bad_patch(
                "not JSON",
                r#"{"reason": "r", "pin_ssot": []}"#,
                415,
                "application/json",
            )
        },
    ];
    let mut problems = Problems::default();
    for case in cases {
        problems.row(case.name);
        let headers = admin_headers(case.content_type);
        let (status, _, answer) =
            admin_raw(&gateway, Method::PATCH, case.path, &headers, case.body).await;
        problems.error(status, &answer, case.status, &[case.fragment]);
        let now = live_version(&gateway).await;
        if now != pinned_version {
            problems.note(format!("the version moved from {pinned_version} to {now}"));
        }
        problems
            .path(&gateway, "router_broadcast", "vip", "ssot", pinned_version)
            .await;
    }
    problems.row("afterwards");
    let entries = audit(&gateway).await;
    if entries.len() != 1 {
        problems.note(format!("bad calls were audited: {entries:?}"));
    }
    problems.assert_none();
    gateway.stop().await;
}

#[tokio::test]
async fn a_change_takes_effect_on_the_next_event_and_is_written_back() {
    let gateway = Gateway::start().await;
    let before = served(&gateway, "router_broadcast", "u-1").await;
    assert_eq!(before, ("legacy".to_owned(), 0));

    let version = gateway
        .set_route("router_broadcast", json!({"ssot_percent": 100}))
        .await;
    assert_eq!(version, 1);
    let after = served(&gateway, "router_broadcast", "u-1").await;
    assert_eq!(after, ("ssot".to_owned(), 1));

    // The file now says so, in a form the file parser (and `flags check`) accepts.
    let text = std::fs::read_to_string(&gateway.flags_path).expect("the change is written back");
    let document: toml::Table = toml::from_str(&text).expect("flags.toml is TOML");
    assert_eq!(document["version"].as_integer(), Some(1), "{text}");
    let written = document["routes"]["router_broadcast"]["ssot_percent"].as_float();
    assert_eq!(written, Some(100.0), "{text}");
    let check = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["flags", "check"])
        .arg(&gateway.flags_path)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("version 1") && stdout.contains("router_broadcast 100.00%"),
        "{stdout}"
    );
    let flags = get_flags(&gateway).await;
    assert_eq!(flags["persisted"], true, "{flags}");
    assert_eq!(gateway.metric("flags_persisted", "").await, 1.0);
    assert_eq!(gateway.metric("flags_version", "").await, 1.0);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_with_the_same_if_match_let_exactly_one_win() {
    let gateway = Gateway::start().await;
    let patch =
        |reason: &str, percent: u64| Some(json!({"reason": reason, "ssot_percent": percent}));
    for round in 0..5u64 {
        let current = live_version(&gateway).await;
        assert_eq!(current, round);
        let (first, second) = tokio::join!(
            gateway.admin(
                Method::PATCH,
                ROUTER_PATCH,
                patch("race", 10 + round),
                Some(current)
            ),
            gateway.admin(
                Method::PATCH,
                ROUTER_PATCH,
                patch("race", 50 + round),
                Some(current)
            ),
        );
        let (winner, loser, winning_percent) = match (first.0, second.0) {
            (StatusCode::OK, StatusCode::CONFLICT) => (first, second, 10 + round),
            (StatusCode::CONFLICT, StatusCode::OK) => (second, first, 50 + round),
            (a, b) => panic!(
                "round {round}: expected one 200 and one 409, got {a} ({}) and {b} ({})",
                first.2, second.2
            ),
        };
        assert_eq!(winner.2["version"], current + 1, "{}", winner.2);
        assert_eq!(loser.2["error"]["code"], "stale_version", "{}", loser.2);
        let message = loser.2["error"]["message"].as_str().unwrap();
        assert!(message.contains(&current.to_string()), "{message}");
        let flags = get_flags(&gateway).await;
        assert_eq!(flags["version"], current + 1);
        assert_eq!(
            flags["routes"]["router_broadcast"]["ssot_percent"].as_f64(),
            Some(winning_percent as f64),
            "round {round}: the loser's value must not be live: {flags}"
        );
    }

    // A stale If-Match is refused, on PATCH and on PUT.
    let current = live_version(&gateway).await;
    let stale = Some(current - 1);
    let (status, _, answer) = gateway
        .admin(Method::PATCH, ROUTER_PATCH, patch("stale", 99), stale)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "stale_version", "{answer}");
    let put = Some(json!({"reason": "stale", "flags": {}}));
    let (status, _, answer) = gateway.admin(Method::PUT, "/admin/flags", put, stale).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(live_version(&gateway).await, current);

    // A malformed If-Match is a bad request, and changes nothing.
    let mut problems = Problems::default();
    let body = json!({"reason": "malformed", "ssot_percent": 99}).to_string();
    for if_match in [
        "abc",
        "\"abc\"",
        "\"1.5\"",
        "\"-1\"",
        "\"\"",
        "\"1\", \"2\"",
    ] {
        problems.row(format!("If-Match: {if_match}"));
        let mut headers = admin_headers("application/json");
        headers.push(("if-match", if_match.to_owned()));
        let (status, _, answer) =
            admin_raw(&gateway, Method::PATCH, ROUTER_PATCH, &headers, &body).await;
        problems.error(status, &answer, StatusCode::BAD_REQUEST, &["If-Match"]);
    }
    problems.assert_none();
    assert_eq!(live_version(&gateway).await, current);

    // The current version is accepted.
    let (status, _, answer) = gateway
        .admin(
            Method::PATCH,
            ROUTER_PATCH,
            patch("current", 99),
            Some(current),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["version"], current + 1);
    gateway.stop().await;
}

#[tokio::test]
async fn the_audit_log_shows_each_change_newest_first() {
    let gateway = Gateway::start().await;
    for body in [
        json!({"reason": "ramp to 100", "ssot_percent": 100}),
        json!({"reason": "watch it", "shadow": true}),
    ] {
        let (status, _, answer) = gateway
            .admin(Method::PATCH, ROUTER_PATCH, Some(body), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let entries = audit(&gateway).await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    let expected = [
        (
            "watch it",
            1,
            2,
            "routes.router_broadcast.shadow: false → true",
        ),
        (
            "ramp to 100",
            0,
            1,
            "routes.router_broadcast.ssot_percent: 0.00 → 100.00",
        ),
    ];
    for (entry, (reason, old_version, version, change)) in entries.iter().zip(expected) {
        assert_eq!(entry["actor"], "ops", "{entry}");
        assert_eq!(entry["trigger"], "api", "{entry}");
        assert_eq!(entry["reason"], reason, "{entry}");
        assert_eq!(entry["old_version"], old_version, "{entry}");
        assert_eq!(entry["version"], version, "{entry}");
        assert_eq!(entry["changes"], json!([change]), "{entry}");
        let at = entry["at"].as_str().unwrap_or("");
        assert!(at.len() == 20 && at.ends_with('Z'), "RFC 3339 UTC: {entry}");
    }
    let (status, _, newest) = gateway
        .admin(Method::GET, "/admin/audit?limit=1", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(newest, json!([entries[0]]));
    gateway.stop().await;
}

#[tokio::test]
async fn put_replaces_the_whole_flag_set() {
    let gateway = Gateway::start().await;
    let before = json!({"ssot_percent": 30, "pin_ssot": ["vip"], "shadow": true});
    gateway.set_route("router_broadcast", before).await;
    let vip = served(&gateway, "router_broadcast", "vip").await;
    assert_eq!(vip, ("ssot".to_owned(), 1));

    // The document's version is managed by the gateway: it is ignored.
    let body = json!({
        "reason": "start over",
        "flags": {"version": 99, "routes": {"user_event": {"ssot_percent": 50}}},
    });
    let (status, headers, flags) = gateway
        .admin(Method::PUT, "/admin/flags", Some(body), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{flags}");
    assert_eq!(flags["version"], 2, "{flags}");
    assert_eq!(etag(&headers), "\"2\"");
    let live = get_flags(&gateway).await;
    assert_eq!(live["version"], 2);
    let routes = &live["routes"];
    assert_eq!(routes["user_event"]["ssot_percent"], 50.0, "{live}");
    // Not mentioned: back to the defaults.
    let router = &routes["router_broadcast"];
    assert_eq!(router["ssot_percent"], 0.0, "{live}");
    assert_eq!(router["pin_ssot"], json!([]), "{live}");
    assert_eq!(router["shadow"], false, "{live}");
    assert_eq!(routes["broadcast"]["ssot_percent"], 100.0, "{live}");
    let vip = served(&gateway, "router_broadcast", "vip").await;
    assert_eq!(vip, ("legacy".to_owned(), 2));
    let entries = audit(&gateway).await;
    assert_eq!(entries[0]["reason"], "start over", "{entries:?}");
    for change in [
        "routes.router_broadcast.ssot_percent: 30.00 → 0.00",
        "routes.user_event.ssot_percent: 0.00 → 50.00",
    ] {
        let changes = entries[0]["changes"].as_array().unwrap();
        assert!(
            changes.contains(&json!(change)),
            "{change} missing: {changes:?}"
        );
    }

    // Invalid documents are refused with the key named, and change nothing.
    let route = |route: &str, flags: Value| json!({"routes": {route: flags}});
    let cases = [
        (
            "ssot_percent 150",
            route("user_event", json!({"ssot_percent": 150})),
            "routes.user_event.ssot_percent",
        ),
        (
            "ssot_percent with three decimals",
            route("user_event", json!({"ssot_percent": 1.005})),
            "routes.user_event.ssot_percent",
        ),
        (
            "an unknown route",
            route("nope", json!({"ssot_percent": 1})),
            "routes.nope",
        ),
        (
            "an unknown route key",
            route("user_event", json!({"colour": "red"})),
            "colour",
        ),
        (
            "a user pinned both ways",
            route(
                "user_event",
                json!({"pin_ssot": ["a"], "pin_legacy": ["a"]}),
            ),
            "routes.user_event.pin_ssot",
        ),
        (
            "an unknown top-level key",
            json!({"colour": "red"}),
            "colour",
        ),
        (
            "an empty salt",
            json!({"rollout": {"salt": ""}}),
            "rollout.salt",
        ),
        (
            "a delivery ratio above 1",
            json!({"guard": {"min_delivery_ratio": 2}}),
            "guard.min_delivery_ratio",
        ),
        (
            "a string for a flag",
            json!({"kill_switch": {"engaged": "yes"}}),
            "engaged",
        ),
    ];
    let with_reason = |flags: Value| json!({"reason": "r", "flags": flags});
    let shapes = [
        ("no reason", json!({"flags": {}}), "reason"),
        ("no flags", json!({"reason": "r"}), "flags"),
        (
            "flags that are not a table",
            json!({"reason": "r", "flags": [1]}),
            "",
        ),
    ];
    let mut problems = Problems::default();
    let all = cases.into_iter().map(|(n, f, k)| (n, with_reason(f), k));
    for (name, body, key) in all.chain(shapes) {
        problems.row(name);
        let (status, _, answer) = gateway
            .admin(Method::PUT, "/admin/flags", Some(body), None)
            .await;
        problems.error(status, &answer, StatusCode::UNPROCESSABLE_ENTITY, &[key]);
        let now = get_flags(&gateway).await;
        let unchanged = now["version"] == 2
            && now["routes"] == live["routes"]
            && now["kill_switch"] == live["kill_switch"];
        if !unchanged {
            problems.note(format!("the flags changed: {now}"));
        }
        problems
            .path(&gateway, "router_broadcast", "vip", "legacy", 2)
            .await;
    }
    problems.assert_none();
    gateway.stop().await;
}

/// `GET /admin/flags` without what the guard reports beside a ramp, which changes by itself.
fn without_waiting(mut flags: Value) -> Value {
    if let Some(routes) = flags["routes"].as_object_mut() {
        for route in routes.values_mut() {
            if let Some(ramp) = route["ramp"].as_object_mut() {
                ramp.remove("waiting");
            }
        }
    }
    flags
}

#[tokio::test]
async fn get_flags_goes_back_through_put_unchanged() {
    let gateway = Gateway::start().await;
    let pins = json!({"ssot_percent": 30, "pin_ssot": ["vip"], "pin_legacy": ["old"], "ignore_fields": ["/meta/ts"], "shadow": true});
    gateway.set_route("router_broadcast", pins).await;
    let ramp = json!({"ramp": {"steps": [10, 50, 100], "step_seconds": 3600}});
    gateway.set_route("scoped_broadcast", ramp).await;
    let rollback = json!({"reason": "drill", "routes": ["user_event"]});
    let (status, _, answer) = gateway
        .admin(Method::POST, "/admin/rollback", Some(rollback), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let before = get_flags(&gateway).await;
    assert_eq!(
        before["routes"]["scoped_broadcast"]["ramp"]["step"], 1,
        "{before}"
    );
    assert!(
        before["routes"]["user_event"]["latch"].is_object(),
        "{before}"
    );
    let entries = audit(&gateway).await.len();

    // The answer, sent back as it is, is accepted and changes nothing.
    let body = json!({"reason": "round trip", "flags": before.clone()});
    let (status, _, answer) = gateway
        .admin(Method::PUT, "/admin/flags", Some(body), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["changes"], json!([]), "{answer}");
    assert_eq!(answer["version"], before["version"], "{answer}");
    let after = get_flags(&gateway).await;
    assert_eq!(without_waiting(after), without_waiting(before.clone()));
    assert_eq!(
        audit(&gateway).await.len(),
        entries,
        "no change, no audit entry"
    );

    // Edited, it replaces the set: the edit is in force, the latch and the ramp are kept.
    let mut edited = before.clone();
    edited["kill_switch"]["reason"] = json!("ready when needed");
    edited["routes"]["router_broadcast"]["ssot_percent"] = json!(40);
    let body = json!({"reason": "round trip, edited", "flags": edited});
    let (status, _, answer) = gateway
        .admin(Method::PUT, "/admin/flags", Some(body), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["version"], before["version"].as_u64().unwrap() + 1);
    let keys: Vec<&str> = answer["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|change| change["key"].as_str())
        .collect();
    assert_eq!(
        keys,
        ["kill_switch.reason", "routes.router_broadcast.ssot_percent"],
        "{answer}"
    );
    let answer = get_flags(&gateway).await;
    assert_eq!(answer["kill_switch"]["reason"], "ready when needed");
    assert_eq!(answer["routes"]["router_broadcast"]["ssot_percent"], 40.0);
    let routes = |flags: &Value| {
        let mut routes = without_waiting(flags.clone())["routes"].clone();
        routes["router_broadcast"]["ssot_percent"] = json!(null);
        routes
    };
    assert_eq!(routes(&answer), routes(&before));
    assert_eq!(answer["guard"], before["guard"]);
    assert_eq!(answer["salt"], before["salt"]);
    gateway.stop().await;
}

/// A flags document that fails to load, the line it fails on and what the error must name.
struct BadFile {
    name: &'static str,
    text: &'static str,
    line: usize,
    names: &'static [&'static str],
}

/// Every bad file keeps "vip" pinned to SSOT on `router_broadcast`, as [`GOOD_FILE`] does, so
/// that applying one by mistake would not show in vip's path.
const BAD_FILES: [BadFile; 7] = [
    BadFile {
        name: "an unknown key",
        text: "version = 3\n\n[routes.router_broadcast]\npin_ssot = [\"vip\"]\nbogus = 1\n",
        line: 5,
        names: &["bogus"],
    },
    BadFile {
        name: "ssot_percent 150",
        text: "version = 3\n\n[routes.router_broadcast]\npin_ssot = [\"vip\"]\n\
               ssot_percent = 150\n",
        line: 5,
        names: &["routes.router_broadcast.ssot_percent", "150"],
    },
    BadFile {
        name: "an unknown route",
        text: "version = 3\n\n[routes.router_broadcast]\npin_ssot = [\"vip\"]\n\n\
               [routes.nope]\nssot_percent = 1\n",
        line: 6,
        names: &["routes.nope"],
    },
    BadFile {
        name: "a TOML syntax error",
        text: "version = 3\n\n[routes.router_broadcast\npin_ssot = [\"vip\"]\n",
        line: 3,
        names: &[],
    },
    BadFile {
        name: "a string for a boolean",
        text: "version = 3\n\n[routes.router_broadcast]\npin_ssot = [\"vip\"]\n\
               shadow = \"yes\"\n",
        line: 5,
        names: &["shadow"],
    },
    BadFile {
        name: "an unknown key in a section",
        text: "version = 3\n\n[rollout]\nsalt = \"s\"\ncolour = \"red\"\n",
        line: 5,
        names: &["colour"],
    },
    BadFile {
        name: "a guard ratio above 1",
        text: "version = 3\n\n[guard]\nmax_mismatch_ratio = 1.5\n",
        line: 4,
        names: &["guard.max_mismatch_ratio"],
    },
];

/// The flags the reload tests start from: version 3, "vip" pinned to SSOT on `router_broadcast`.
const GOOD_FILE: &str = "version = 3\n\n[routes.router_broadcast]\npin_ssot = [\"vip\"]\n";

/// A good change to [`GOOD_FILE`]: everyone on SSOT on `router_broadcast`, nobody pinned.
const RAMPED_FILE: &str = "version = 3\n\n[routes.router_broadcast]\nssot_percent = 100\n";

#[tokio::test]
async fn reload_rejects_a_bad_file_and_keeps_the_previous_flags() {
    // `flags_path` is a symlink to a file in another directory: the gateway watches the link's
    // directory, so writes through the link are seen only by `POST /admin/flags/reload`, and the
    // watcher cannot apply the good file before the API does.
    let target_dir = scratch_dir();
    let target = target_dir.join("flags.toml");
    std::fs::write(&target, GOOD_FILE).unwrap();
    let config = config(true, &[]);
    std::os::unix::fs::symlink(&target, &config.server.flags_path).unwrap();
    let gateway = Gateway::start_with(config).await;
    assert_eq!(live_version(&gateway).await, 3);

    let mut problems = Problems::default();
    for (n, bad) in BAD_FILES.iter().enumerate() {
        problems.row(bad.name);
        std::fs::write(&gateway.flags_path, bad.text).unwrap();
        let (status, answer) = reload(&gateway).await;
        let position = format!("{}:{}:", gateway.flags_path.display(), bad.line);
        let names: Vec<&str> = bad
            .names
            .iter()
            .copied()
            .chain([position.as_str()])
            .collect();
        problems.error(status, &answer, StatusCode::UNPROCESSABLE_ENTITY, &names);
        let now = live_version(&gateway).await;
        if now != 3 {
            problems.note(format!("the version moved to {now}"));
        }
        problems
            .path(&gateway, "router_broadcast", "vip", "ssot", 3)
            .await;
        let labels = "result=\"error\",trigger=\"api\"";
        let errors = gateway.metric("flags_reloads_total", labels).await;
        if errors != (n + 1) as f64 {
            problems.note(format!(
                "{errors} reload errors counted, expected {}",
                n + 1
            ));
        }
    }
    problems.assert_none();

    // A good file applies, with a new version, on the next event.
    std::fs::write(&gateway.flags_path, RAMPED_FILE).unwrap();
    let (status, answer) = reload(&gateway).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (
            &answer["outcome"],
            &answer["old_version"],
            &answer["version"]
        ),
        (&json!("applied"), &json!(3), &json!(4)),
        "{answer}"
    );
    let keys: Vec<&str> = answer["changes"]
        .as_array()
        .expect("a reload answers with its changes")
        .iter()
        .filter_map(|change| change["key"].as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "routes.router_broadcast.pin_ssot",
            "routes.router_broadcast.ssot_percent"
        ],
        "{answer}"
    );
    let anyone = served(&gateway, "router_broadcast", "anyone").await;
    assert_eq!(anyone, ("ssot".to_owned(), 4));
    let flags = get_flags(&gateway).await;
    assert_eq!(flags["source"], "api", "{flags}");
    assert_eq!(flags["routes"]["router_broadcast"]["pin_ssot"], json!([]));
    let labels = "result=\"ok\",trigger=\"api\"";
    assert_eq!(gateway.metric("flags_reloads_total", labels).await, 1.0);
    // Reloading the same file again is not a change.
    let (status, answer) = reload(&gateway).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!({"old_version": 4, "version": 4, "persisted": true, "outcome": "unchanged", "changes": []})
    );
    gateway.stop().await;
    let _ = std::fs::remove_dir_all(target_dir);
}

#[tokio::test]
async fn the_file_watcher_applies_a_good_file_and_counts_a_bad_one() {
    let config = config(true, &[]);
    std::fs::write(&config.server.flags_path, GOOD_FILE).unwrap();
    let gateway = Gateway::start_with(config).await;
    assert_eq!(live_version(&gateway).await, 3);

    let errors = "result=\"error\",trigger=\"file\"";
    write_then_rename(&gateway.flags_path, BAD_FILES[1].text);
    gateway
        .metric_reaches("flags_reloads_total", errors, 1.0)
        .await;
    let flags = get_flags(&gateway).await;
    assert_eq!(flags["version"], 3, "{flags}");
    let router = &flags["routes"]["router_broadcast"];
    assert_eq!(router["pin_ssot"], json!(["vip"]), "{flags}");
    let mut problems = Problems::default();
    problems.row("after the bad file");
    problems
        .path(&gateway, "router_broadcast", "vip", "ssot", 3)
        .await;
    problems
        .path(&gateway, "router_broadcast", "anyone", "legacy", 3)
        .await;
    problems.assert_none();

    write_then_rename(&gateway.flags_path, RAMPED_FILE);
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    let flags = loop {
        let flags = get_flags(&gateway).await;
        if flags["version"] != 3 {
            break flags;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the good file was not applied: {flags}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(flags["version"], 4, "{flags}");
    assert_eq!(flags["source"], "file", "{flags}");
    assert_eq!(flags["routes"]["router_broadcast"]["ssot_percent"], 100.0);
    let anyone = served(&gateway, "router_broadcast", "anyone").await;
    assert_eq!(anyone, ("ssot".to_owned(), 4));
    assert_eq!(gateway.metric("flags_reloads_total", errors).await, 1.0);
    let entries = audit(&gateway).await;
    assert_eq!(
        (&entries[0]["trigger"], &entries[0]["version"]),
        (&json!("file"), &json!(4)),
        "{entries:?}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn the_kill_switch_sends_every_route_to_legacy() {
    let gateway = Gateway::start().await;
    // "vip" is pinned to SSOT on two routes; `broadcast` is on SSOT for everyone by default.
    let routes = json!({
        "router_broadcast": {"pin_ssot": ["vip"]},
        "scoped_broadcast": {"ssot_percent": 100},
        "user_event": {"ssot_percent": 100, "pin_ssot": ["vip"]},
    });
    let put = |engaged: bool| {
        let kill_switch = json!({"engaged": engaged, "reason": "incident 7"});
        let flags = json!({"kill_switch": kill_switch, "routes": routes.clone()});
        Some(json!({"reason": "kill switch test", "flags": flags}))
    };
    // vip is online throughout, so every event must reach it whichever path serves it.
    let mut client: Client = gateway.connect("vip").await;
    let mut seq = 0;
    let mut problems = Problems::default();
    for (phase, engaged, path, version) in [
        ("before", false, "ssot", 1),
        ("kill switch engaged", true, "legacy", 2),
        ("released", false, "ssot", 3),
    ] {
        problems.row(phase);
        let (status, _, answer) = gateway
            .admin(Method::PUT, "/admin/flags", put(engaged), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let flags = get_flags(&gateway).await;
        if flags["kill_switch"]["engaged"] != engaged {
            problems.note(format!("kill_switch is {}", flags["kill_switch"]));
        }
        let gauge = gateway.metric("kill_switch_engaged", "").await;
        if gauge != f64::from(u8::from(engaged)) {
            problems.note(format!("switchyard_kill_switch_engaged is {gauge}"));
        }
        for route in ROUTES {
            seq += 1;
            let published = gateway.publish(route, "vip", thinking(seq)).await;
            let got = (published.path.as_str(), published.flags_version);
            if published.status != StatusCode::OK || got != (path, version) {
                problems.note(format!("{route} for vip: {published:?}"));
            }
            let frame = client.next_json().await;
            if frame["seq"] != seq {
                problems.note(format!("{route}: vip received {frame}, expected seq {seq}"));
            }
            if engaged {
                problems
                    .path(&gateway, route, "someone-else", "legacy", version)
                    .await;
            }
        }
    }
    problems.assert_none();
    gateway.stop().await;
}

#[tokio::test]
async fn a_read_only_flags_file_keeps_the_change_live_but_unpersisted() {
    let config = config(true, &[]);
    let flags_path = config.server.flags_path.clone();
    std::fs::write(&flags_path, "version = 3\n").unwrap();
    // Read-only before the gateway starts, so the permission change is not itself a file event.
    let mut permissions = std::fs::metadata(&flags_path).unwrap().permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(&flags_path, permissions).unwrap();
    let gateway = Gateway::start_with(config).await;
    let flags = get_flags(&gateway).await;
    assert_eq!(
        (&flags["version"], &flags["persisted"]),
        (&json!(3), &json!(true))
    );
    assert_eq!(gateway.metric("flags_persisted", "").await, 1.0);

    let version = gateway
        .set_route("router_broadcast", json!({"ssot_percent": 100}))
        .await;
    assert_eq!(version, 4);
    let flags = get_flags(&gateway).await;
    assert_eq!(flags["version"], 4, "{flags}");
    assert_eq!(flags["persisted"], false, "{flags}");
    assert_eq!(flags["routes"]["router_broadcast"]["ssot_percent"], 100.0);
    let anyone = served(&gateway, "router_broadcast", "anyone").await;
    assert_eq!(anyone, ("ssot".to_owned(), 4));
    assert_eq!(gateway.metric("flags_persisted", "").await, 0.0);
    assert_eq!(
        gateway.metric("flags_persist_failures_total", "").await,
        1.0
    );
    assert_eq!(
        std::fs::read_to_string(&flags_path).unwrap(),
        "version = 3\n"
    );
    gateway.stop().await;
}

/// `POST /admin/kill-switch`: the kill switch and nothing else changes — the issue's case was a
/// minimal PUT that reset another route's `ssot_percent 1 → 0`, `shadow true → false` and
/// `ignore_fields ["timestamp"] → []`. It is audited with the token's name, honours `If-Match`,
/// and refuses what is not `{"engaged": bool, "reason": string}`.
#[tokio::test]
async fn the_kill_switch_endpoint_changes_the_kill_switch_and_nothing_else() {
    let gateway = Gateway::start().await;
    gateway
        .set_route(
            "user_event",
            json!({"ssot_percent": 1, "shadow": true, "ignore_fields": ["timestamp"], "pin_ssot": ["vip"]}),
        )
        .await;
    let version = gateway
        .set_route("scoped_broadcast", json!({"ssot_percent": 37}))
        .await;
    let before = get_flags(&gateway).await;
    let kill = |engaged: bool, reason: &str| Some(json!({"engaged": engaged, "reason": reason}));

    // A stale If-Match is refused and changes nothing.
    let (status, _, answer) = gateway
        .admin(
            Method::POST,
            "/admin/kill-switch",
            kill(true, "incident 9"),
            Some(version - 1),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "stale_version", "{answer}");
    assert_eq!(get_flags(&gateway).await, before);

    let (status, headers, answer) = gateway
        .admin(
            Method::POST,
            "/admin/kill-switch",
            kill(true, "incident 9"),
            Some(version),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(etag(&headers), format!("\"{}\"", version + 1));
    assert_eq!(
        answer,
        json!({
            "old_version": version,
            "version": version + 1,
            "persisted": true,
            "changes": [
                {"key": "kill_switch.engaged", "old": false, "new": true},
                {"key": "kill_switch.reason", "old": "", "new": "incident 9"},
            ],
        })
    );
    let after = get_flags(&gateway).await;
    assert_eq!(after["routes"], before["routes"], "no route setting moved");
    assert_eq!(after["salt"], before["salt"]);
    assert_eq!(after["guard"], before["guard"]);
    assert_eq!(
        after["kill_switch"],
        json!({"engaged": true, "reason": "incident 9"})
    );
    let user_event = &after["routes"]["user_event"];
    assert_eq!(
        (
            &user_event["ssot_percent"],
            &user_event["shadow"],
            &user_event["ignore_fields"]
        ),
        (&json!(1.0), &json!(true), &json!(["timestamp"])),
        "{after}"
    );
    // Every route, a pinned user's included, is on legacy; and the file says so after a restart.
    let published = gateway.publish("user_event", "vip", thinking(1)).await;
    assert_eq!(
        (published.path.as_str(), published.flags_version),
        ("legacy", version + 1)
    );
    let entry = &audit(&gateway).await[0];
    assert_eq!(
        (&entry["actor"], &entry["trigger"], &entry["reason"]),
        (&json!("ops"), &json!("api"), &json!("incident 9")),
        "{entry}"
    );

    // Bad requests are refused and change nothing.
    let mut problems = Problems::default();
    for (name, body, status, fragment) in [
        (
            "no reason",
            json!({"engaged": false}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason",
        ),
        (
            "a blank reason",
            json!({"engaged": false, "reason": " "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason",
        ),
        (
            "engaged as a string",
            json!({"engaged": "no", "reason": "r"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "expected a boolean",
        ),
        (
            "no engaged",
            json!({"reason": "r"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "engaged",
        ),
        (
            "another field",
            json!({"engaged": false, "reason": "r", "routes": {}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "routes",
        ),
    ] {
        problems.row(name);
        let (got, _, answer) = gateway
            .admin(Method::POST, "/admin/kill-switch", Some(body), None)
            .await;
        problems.error(got, &answer, status, &[fragment]);
    }
    let (got, _, answer) = admin_raw(
        &gateway,
        Method::POST,
        "/admin/kill-switch",
        &[("content-type", "application/json".to_owned())],
        r#"{"engaged": false, "reason": "no token"}"#,
    )
    .await;
    problems.row("no token");
    problems.error(got, &answer, StatusCode::UNAUTHORIZED, &[]);
    problems.assert_none();
    assert_eq!(get_flags(&gateway).await, after);

    // Released: the routes' own flags serve again, and the kill switch's reason is cleared.
    let (status, _, answer) = gateway
        .admin(
            Method::POST,
            "/admin/kill-switch",
            kill(false, "incident 9 over"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["changes"],
        json!([
            {"key": "kill_switch.engaged", "old": true, "new": false},
            {"key": "kill_switch.reason", "old": "incident 9", "new": ""},
        ])
    );
    let released = get_flags(&gateway).await;
    assert_eq!(released["routes"], before["routes"]);
    let published = gateway.publish("user_event", "vip", thinking(2)).await;
    assert_eq!(published.path, "ssot");
    // The same again is no change: no new version.
    let (status, _, answer) = gateway
        .admin(
            Method::POST,
            "/admin/kill-switch",
            kill(false, "again"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (&answer["version"], &answer["changes"]),
        (&json!(version + 2), &json!([]))
    );
    gateway.stop().await;
}

/// The audit log lasts: it is appended to `audit.jsonl` beside the flags file and read back when
/// a gateway starts on the same file; `GET /admin/audit` filters it by route, time and count.
#[tokio::test]
async fn the_audit_survives_a_restart_and_filters_by_route_since_and_limit() {
    let config = config(true, &[("SWITCHYARD_ADMIN_ALLOW_FAULT_INJECTION", "true")]);
    let gateway = Gateway::start_with(config.clone()).await;
    gateway
        .set_route("user_event", json!({"ssot_percent": 5}))
        .await;
    gateway
        .set_route("broadcast", json!({"shadow": true}))
        .await;
    let (status, _, answer) = gateway
        .admin(
            Method::POST,
            "/admin/faults",
            Some(json!({"route": "user_event", "path": "ssot", "drop_ratio": 0.5, "reason": "drill"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        change_of(&answer, "faults.user_event.ssot")["new"]["drop_ratio"],
        0.5,
        "{answer}"
    );
    let before = audit(&gateway).await;
    assert_eq!(before.len(), 3, "{before:?}");
    let flags_path = gateway.stop_keeping_flags().await;
    let audit_file = flags_path.with_file_name("audit.jsonl");
    let lines = std::fs::read_to_string(&audit_file).unwrap();
    assert_eq!(lines.lines().count(), 3, "{lines}");
    for line in lines.lines() {
        let entry: Value = serde_json::from_str(line).expect("each line is one JSON entry");
        assert_eq!(entry["actor"], "ops", "{line}");
    }

    let gateway = Gateway::start_with(config).await;
    assert_eq!(audit(&gateway).await, before, "read back after the restart");
    gateway
        .set_route("user_event", json!({"shadow": true}))
        .await;
    let live = &gateway;
    let query = |query: &'static str| async move {
        let (status, _, entries) = live
            .admin(Method::GET, &format!("/admin/audit?{query}"), None, None)
            .await;
        (status, entries)
    };
    let reasons = |entries: &Value| -> Vec<String> {
        entries
            .as_array()
            .unwrap_or_else(|| panic!("not an array: {entries}"))
            .iter()
            .map(|e| e["changes"][0].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let (status, entries) = query("route=user_event").await;
    assert_eq!(status, StatusCode::OK, "{entries}");
    assert_eq!(
        reasons(&entries),
        [
            "routes.user_event.shadow: false → true",
            "faults.user_event.ssot: drop_ratio 0.5 delay_ms 0",
            "routes.user_event.ssot_percent: 0.00 → 5.00",
        ]
    );
    let (_, entries) = query("route=broadcast&limit=5").await;
    assert_eq!(reasons(&entries), ["routes.broadcast.shadow: false → true"]);
    let (_, entries) = query("limit=2").await;
    assert_eq!(entries.as_array().map(Vec::len), Some(2), "{entries}");
    let (_, entries) = query("since=4102444800").await;
    assert_eq!(entries, json!([]), "nothing after 2100");
    let (_, entries) = query("since=2000-01-01T00:00:00Z").await;
    assert_eq!(entries.as_array().map(Vec::len), Some(4), "{entries}");
    let (status, answer) = query("since=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = query("route=nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    gateway.stop().await;
}

/// `GET /admin/openapi.json` is the OpenAPI 3.1 document of both listeners (behind the admin
/// token), and every operation it describes is served: called on a live gateway, each path and
/// method is found (whatever else the call lacks), on the listener it belongs to.
#[tokio::test]
async fn the_openapi_document_is_served_and_every_operation_in_it_exists() {
    let gateway = Gateway::start().await;
    let (status, _, unauthenticated) =
        admin_raw(&gateway, Method::GET, "/admin/openapi.json", &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{unauthenticated}");
    let (status, _, document) = gateway
        .admin(Method::GET, "/admin/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{document}");
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    let mut called = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let listener = operation["tags"][0].as_str().unwrap();
            let addr = if listener == "public" {
                gateway.public
            } else {
                gateway.admin
            };
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let url = path.replace("{route}", "user_event");
            let headers = [
                ("authorization", format!("Bearer {ADMIN_TOKEN}")),
                ("content-type", "application/json".to_owned()),
            ];
            let (status, _, body) =
                http(addr, method.clone(), &url, &headers, Bytes::from("{}")).await;
            assert!(
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {url} on the {listener} listener: {status} {body:?}"
            );
            called += 1;
        }
    }
    assert!(called >= 26, "{called} operations");
    // None of those calls changed the flags.
    assert_eq!(live_version(&gateway).await, 0);
    gateway.stop().await;
}
