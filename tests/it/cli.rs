//! The operator commands of the real `switchyard` binary: `flags check` (what CI runs on a flag
//! change), `cohort` (where a user lands), `flags show|set|rollback|audit|reload`, `kill-switch`,
//! `stats`, `mismatches`, `faults` and `completions` against a gateway running in this process:
//! their human output, their `--json` output, and their exit codes; `https://` admin URLs
//! through a TLS proxy with a certificate made here.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, Gateway, ROUTES, change_of, config, scratch_dir};

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn succeeded(&self) -> bool {
        self.code == Some(0)
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Runs `switchyard ARGS`, without any admin settings from the environment.
async fn switchyard<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env_remove("ADMIN_TOKEN")
        .env_remove("ADMIN_URL")
        .env_remove("SSL_CERT_FILE")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("the command finishes")
        .expect("the binary runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `switchyard flags COMMAND ARGS --json --admin-url … --token …` against `gateway`.
async fn admin_command(gateway: &Gateway, command: &str, args: &[&str], token: &str) -> Run {
    let mut full = vec!["flags", command];
    full.extend_from_slice(args);
    full.push("--json");
    operate(gateway, &full, token).await
}

/// `switchyard ARGS --admin-url … --token …` against `gateway`.
async fn operate(gateway: &Gateway, args: &[&str], token: &str) -> Run {
    let url = format!("http://{}", gateway.admin);
    let mut full = args.to_vec();
    full.extend_from_slice(&["--admin-url", &url, "--token", token]);
    switchyard(&full).await
}

async fn live_flags(gateway: &Gateway) -> Value {
    let (status, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    assert_eq!(status, StatusCode::OK, "{flags}");
    flags
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A flags document `flags check` must refuse: the line it must name and the key, if any.
struct BadDocument {
    name: &'static str,
    text: &'static str,
    /// The line of the offending key (either one, when two keys clash).
    lines: &'static [usize],
    key: Option<&'static str>,
}

const BAD_DOCUMENTS: [BadDocument; 12] = [
    BadDocument {
        name: "an unknown key",
        text: "version = 1\n\n[routes.router_broadcast]\nssot_percent = 1\nbogus = 1\n",
        lines: &[5],
        key: Some("bogus"),
    },
    BadDocument {
        name: "an unknown top-level key",
        text: "version = 1\ncolour = \"red\"\n",
        lines: &[2],
        key: Some("colour"),
    },
    BadDocument {
        name: "ssot_percent 150",
        text: "version = 1\n\n[routes.router_broadcast]\nssot_percent = 150\n",
        lines: &[4],
        key: Some("routes.router_broadcast.ssot_percent"),
    },
    BadDocument {
        name: "ssot_percent with three decimals",
        text: "version = 1\n\n[routes.user_event]\nshadow = true\nssot_percent = 10.005\n",
        lines: &[5],
        key: Some("routes.user_event.ssot_percent"),
    },
    BadDocument {
        name: "an unknown route",
        text: "version = 1\n\n[routes.router_broadcast]\nssot_percent = 1\n\n[routes.nope]\nshadow = true\n",
        lines: &[6],
        key: Some("routes.nope"),
    },
    BadDocument {
        name: "a TOML syntax error",
        text: "version = 1\n\n[routes.router_broadcast\nssot_percent = 1\n",
        lines: &[3],
        key: None,
    },
    BadDocument {
        name: "a string for a boolean",
        text: "version = 1\n\n[routes.router_broadcast]\nshadow = \"yes\"\n",
        lines: &[4],
        key: Some("shadow"),
    },
    BadDocument {
        name: "a user pinned both ways",
        text: "version = 1\n\n[routes.scoped_broadcast]\nssot_percent = 1\npin_ssot = [\"a\"]\npin_legacy = [\"a\"]\n",
        lines: &[5, 6],
        key: Some("routes.scoped_broadcast.pin_ssot"),
    },
    BadDocument {
        name: "a padded user id in a pin",
        text: "version = 1\n\n[routes.broadcast]\npin_legacy = [\" a \"]\n",
        lines: &[4],
        key: Some("routes.broadcast.pin_legacy"),
    },
    BadDocument {
        name: "an empty salt",
        text: "version = 1\n\n[rollout]\nsalt = \"\"\n",
        lines: &[4],
        key: Some("rollout.salt"),
    },
    BadDocument {
        name: "a file switchyard wrote, cut short",
        text: "# switchyard routing flags, written by switchyard; keep the `# end of flags` line: a file without it is taken as cut short.\n\
               version = 4\n\n[routes.broadcast]\nssot_percent = 100.00\n",
        lines: &[5],
        key: None,
    },
    BadDocument {
        name: "a guard window of 0 seconds",
        text: "version = 1\n\n[guard]\nenabled = true\nwindow_seconds = 0\n",
        lines: &[5],
        key: Some("guard.window_seconds"),
    },
];

#[tokio::test]
async fn flags_check_accepts_a_good_file_and_names_file_line_and_key_of_a_bad_one() {
    let dir = scratch_dir();
    let good = write(
        &dir,
        "good.toml",
        "version = 7\n\n[routes.router_broadcast]\nssot_percent = 12.5\nshadow = true\n\
         pin_ssot = [\"internal-tester-1\"]\n",
    );
    let run = switchyard(&["flags", "check", good.to_str().unwrap()]).await;
    assert!(run.succeeded(), "{run:?}");
    assert!(run.stdout.contains("ok"), "{run:?}");
    assert!(
        run.stdout.contains("version 7") && run.stdout.contains("router_broadcast 12.50% shadow"),
        "{run:?}"
    );

    // Valid, but a running gateway would not reload it: check says so.
    let versionless = write(
        &dir,
        "versionless.toml",
        "[routes.user_event]\nshadow = true\n",
    );
    let run = switchyard(&["flags", "check", versionless.to_str().unwrap()]).await;
    assert!(run.succeeded(), "{run:?}");
    assert!(
        run.stdout.contains("version none: give the live version"),
        "{run:?}"
    );

    let mut problems = Vec::new();
    for (n, bad) in BAD_DOCUMENTS.iter().enumerate() {
        let path = write(&dir, &format!("bad-{n}.toml"), bad.text);
        let run = switchyard(&["flags", "check", path.to_str().unwrap()]).await;
        if run.code != Some(65) {
            problems.push(format!(
                "{}: exit {:?}, expected 65 (invalid input)",
                bad.name, run.code
            ));
        }
        let positions: Vec<String> = bad
            .lines
            .iter()
            .map(|line| format!("{}:{line}:", path.display()))
            .collect();
        if !positions.iter().any(|p| run.stderr.contains(p.as_str())) {
            problems.push(format!(
                "{}: stderr does not name {}: {}",
                bad.name,
                positions.join(" or "),
                run.stderr.trim()
            ));
        }
        if let Some(key) = bad.key
            && !run.stderr.contains(key)
        {
            problems.push(format!(
                "{}: stderr does not name {key:?}: {}",
                bad.name,
                run.stderr.trim()
            ));
        }
        if run.stdout.contains("ok") {
            problems.push(format!("{}: stdout says ok: {}", bad.name, run.stdout));
        }
    }
    let missing = dir.join("missing.toml");
    let run = switchyard(&["flags", "check", missing.to_str().unwrap()]).await;
    if run.succeeded() || !run.stderr.contains(missing.to_str().unwrap()) {
        problems.push(format!("a missing file: {run:?}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// `switchyard cohort USER --flags FILE`: the bucket, and per route the path and the reason.
async fn cohort(user: &str, flags: &Path) -> (u32, BTreeMap<String, (String, String)>) {
    let run = switchyard(&["cohort", user, "--flags", flags.to_str().unwrap()]).await;
    assert!(run.succeeded(), "{run:?}");
    let bucket = run
        .stdout
        .split("bucket ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no bucket in {}", run.stdout));
    let routes = run
        .stdout
        .lines()
        .skip(1)
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let reason = words
                .get(2)
                .map_or("", |w| w.trim_start_matches('(').trim_end_matches(';'));
            (
                words[0].to_owned(),
                (words[1].to_owned(), reason.to_owned()),
            )
        })
        .collect();
    (bucket, routes)
}

#[tokio::test]
async fn cohort_shows_where_a_user_lands_as_the_gateway_decides() {
    let dir = scratch_dir();
    let text = "version = 2\n\n[rollout]\nsalt = \"cli-salt\"\n\n\
                [routes.router_broadcast]\nssot_percent = 100\n\n\
                [routes.scoped_broadcast]\nssot_percent = 0\npin_ssot = [\"vip\"]\n\n\
                [routes.user_event]\nssot_percent = 50\npin_legacy = [\"holdout\"]\n";
    let flags = write(&dir, "flags.toml", text);

    let (bucket, routes) = cohort("vip", &flags).await;
    assert!(bucket < 10_000);
    let user_event_path = if bucket < 5000 { "ssot" } else { "legacy" };
    let expected: BTreeMap<String, (String, String)> = [
        ("router_broadcast", "ssot", "cohort"),
        ("scoped_broadcast", "ssot", "pinned_ssot"),
        ("user_event", user_event_path, "cohort"),
        ("broadcast", "ssot", "cohort"),
    ]
    .into_iter()
    .map(|(route, path, reason)| (route.to_owned(), (path.to_owned(), reason.to_owned())))
    .collect();
    assert_eq!(routes, expected, "vip");
    // The bucket is sticky and shared by every route; a different user is not pinned.
    assert_eq!(cohort("vip", &flags).await.0, bucket);
    let (_, routes) = cohort("someone", &flags).await;
    assert_eq!(
        routes["scoped_broadcast"],
        ("legacy".into(), "cohort".into())
    );
    let (_, routes) = cohort("holdout", &flags).await;
    assert_eq!(
        routes["user_event"],
        ("legacy".into(), "pinned_legacy".into())
    );

    // The gateway, on the same file, serves each user by the path `cohort` names.
    let config = config(true, &[]);
    std::fs::copy(&flags, &config.server.flags_path).unwrap();
    let gateway = Gateway::start_with(config).await;
    let mut seen = BTreeMap::new();
    for n in 0..16 {
        let user = format!("user-{n}");
        let (bucket, routes) = cohort(&user, &flags).await;
        let (path, _) = &routes["user_event"];
        let published = gateway
            .publish("user_event", &user, json!({"type": "agent_started"}))
            .await;
        assert_eq!(
            (published.path.as_str(), published.flags_version),
            (path.as_str(), 2),
            "{user} (bucket {bucket})"
        );
        *seen.entry(path.clone()).or_insert(0) += 1;
    }
    assert_eq!(
        seen.len(),
        2,
        "16 users at 50% fall on both paths: {seen:?}"
    );
    gateway.stop().await;

    // With the kill switch engaged, everyone is on legacy, pins included.
    let killed = write(
        &dir,
        "killed.toml",
        &text.replace(
            "version = 2\n",
            "version = 2\n\n[kill_switch]\nengaged = true\n",
        ),
    );
    let (_, routes) = cohort("vip", &killed).await;
    for route in ROUTES {
        assert_eq!(
            routes[route],
            ("legacy".into(), "kill_switch".into()),
            "{route}"
        );
    }
    // A bad file is an error naming it.
    let bad = write(&dir, "bad.toml", "[routes.nope]\n");
    let run = switchyard(&["cohort", "vip", "--flags", bad.to_str().unwrap()]).await;
    assert!(!run.succeeded(), "{run:?}");
    assert!(
        run.stderr.contains(&format!("{}:1:", bad.display())),
        "{run:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn flags_commands_read_and_change_a_running_gateway() {
    let gateway = Gateway::start().await;

    let run = admin_command(&gateway, "show", &[], ADMIN_TOKEN).await;
    assert!(run.succeeded(), "{run:?}");
    assert_eq!(run.json()["version"], 0, "{run:?}");

    let run = admin_command(
        &gateway,
        "set",
        &[
            "router_broadcast",
            "--reason",
            "cli ramp",
            "--ssot-percent",
            "25",
            "--shadow",
            "true",
            "--pin-ssot",
            "vip,tester",
        ],
        ADMIN_TOKEN,
    )
    .await;
    assert!(run.succeeded(), "{run:?}");
    assert_eq!(run.json()["version"], 1, "{run:?}");
    let flags = live_flags(&gateway).await;
    let router = &flags["routes"]["router_broadcast"];
    assert_eq!(flags["version"], 1, "{flags}");
    assert_eq!(router["ssot_percent"].as_f64(), Some(25.0), "{flags}");
    assert_eq!(router["shadow"], true, "{flags}");
    assert_eq!(router["pin_ssot"], json!(["tester", "vip"]), "{flags}");
    let published = gateway
        .publish("router_broadcast", "vip", json!({"type": "agent_started"}))
        .await;
    assert_eq!(
        (published.path.as_str(), published.flags_version),
        ("ssot", 1)
    );

    // A stale --if-match is refused and changes nothing; the current one applies.
    let stale = [
        "router_broadcast",
        "--reason",
        "stale",
        "--ssot-percent",
        "50",
        "--if-match",
        "0",
    ];
    let run = admin_command(&gateway, "set", &stale, ADMIN_TOKEN).await;
    assert_eq!(run.code, Some(75), "a conflict: {run:?}");
    assert!(run.stderr.contains("HTTP 409 stale_version"), "{run:?}");
    let flags = live_flags(&gateway).await;
    assert_eq!(flags["version"], 1, "{flags}");
    assert_eq!(
        flags["routes"]["router_broadcast"]["ssot_percent"].as_f64(),
        Some(25.0)
    );
    let current = [
        "router_broadcast",
        "--reason",
        "current",
        "--ssot-percent",
        "50",
        "--if-match",
        "1",
    ];
    let run = admin_command(&gateway, "set", &current, ADMIN_TOKEN).await;
    assert!(run.succeeded(), "{run:?}");
    assert_eq!(run.json()["version"], 2, "{run:?}");

    // Refusals exit with their documented code and the answer on stderr.
    for (name, args, token, status, code) in [
        (
            "an unknown route",
            &["nope", "--reason", "r", "--ssot-percent", "1"][..],
            ADMIN_TOKEN,
            "HTTP 404 unknown_route",
            65,
        ),
        (
            "ssot_percent 150",
            &["router_broadcast", "--reason", "r", "--ssot-percent", "150"][..],
            ADMIN_TOKEN,
            "HTTP 422 invalid_flags",
            65,
        ),
        (
            "a wrong token",
            &["router_broadcast", "--reason", "r", "--ssot-percent", "1"][..],
            "not-the-admin-token",
            "HTTP 401 unauthorized",
            77,
        ),
    ] {
        let run = admin_command(&gateway, "set", args, token).await;
        assert!(
            run.code == Some(code) && run.stderr.contains(status),
            "{name}: {run:?}"
        );
    }
    assert_eq!(live_flags(&gateway).await["version"], 2);

    let run = admin_command(&gateway, "audit", &["--limit", "5"], ADMIN_TOKEN).await;
    assert!(run.succeeded(), "{run:?}");
    let entries = run.json();
    let entries = entries.as_array().expect("the audit is an array");
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(
        (&entries[0]["reason"], &entries[1]["reason"]),
        (&json!("current"), &json!("cli ramp"))
    );
    assert!(
        entries
            .iter()
            .all(|e| e["actor"] == "ops" && e["trigger"] == "api")
    );

    // The file holds what the gateway wrote: a reload changes nothing.
    let run = admin_command(&gateway, "reload", &[], ADMIN_TOKEN).await;
    assert!(run.succeeded(), "{run:?}");
    assert_eq!(
        run.json(),
        json!({"old_version": 2, "version": 2, "persisted": true, "outcome": "unchanged", "changes": []})
    );

    // Rollback latches every route: even the canonical route is served by legacy.
    let run = admin_command(
        &gateway,
        "rollback",
        &["--reason", "cli rollback"],
        ADMIN_TOKEN,
    )
    .await;
    assert!(run.succeeded(), "{run:?}");
    let flags = live_flags(&gateway).await;
    assert_eq!(flags["version"], 3, "{flags}");
    for route in ROUTES {
        let latch = &flags["routes"][route]["latch"];
        assert_eq!(latch["reason"], "cli rollback", "{route}: {flags}");
        assert_eq!(latch["actor"], "ops", "{route}: {flags}");
        assert_eq!(latch["trigger"], "api", "{route}: {flags}");
    }
    for (route, user) in [("broadcast", "anyone"), ("router_broadcast", "vip")] {
        let published = gateway
            .publish(route, user, json!({"type": "agent_completed"}))
            .await;
        assert_eq!(published.status, StatusCode::OK, "{:?}", published.body);
        assert_eq!(
            (published.path.as_str(), published.flags_version),
            ("legacy", 3),
            "{route} for {user}"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn flags_commands_without_a_gateway_exit_unavailable() {
    // A port that was free a moment ago: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let run = switchyard(&["flags", "show", "--admin-url", &url, "--token", ADMIN_TOKEN]).await;
    assert_eq!(run.code, Some(69), "{run:?}");
    assert!(
        run.stderr.contains("connecting") && run.stderr.contains("ADMIN_URL"),
        "{run:?}"
    );
}

#[tokio::test]
async fn flags_ramp_starts_and_cancels_a_ramp_on_a_running_gateway() {
    let gateway = Gateway::start().await;
    let run = admin_command(
        &gateway,
        "ramp",
        &[
            "user_event",
            "1,5,25,50,100",
            "--step",
            "5m",
            "--reason",
            "canary",
        ],
        ADMIN_TOKEN,
    )
    .await;
    assert!(run.succeeded(), "{run:?}");
    let summary = run.json();
    let share = change_of(&summary, "routes.user_event.ssot_percent");
    assert_eq!(
        (&share["old"], &share["new"]),
        (&json!(0.0), &json!(1.0)),
        "{summary}"
    );
    let ramp = &change_of(&summary, "routes.user_event.ramp")["new"];
    assert_eq!(
        (&ramp["steps"], &ramp["step_seconds"]),
        (&json!([1.0, 5.0, 25.0, 50.0, 100.0]), &json!(300)),
        "{summary}"
    );
    let flags = live_flags(&gateway).await;
    assert_eq!(flags["routes"]["user_event"]["ramp"]["step"], 1, "{flags}");

    let run = admin_command(
        &gateway,
        "ramp",
        &["user_event", "--cancel", "--reason", "enough"],
        ADMIN_TOKEN,
    )
    .await;
    assert!(run.succeeded(), "{run:?}");
    let summary = run.json();
    let ramp = change_of(&summary, "routes.user_event.ramp");
    assert!(
        ramp["old"].is_object() && ramp["new"].is_null(),
        "{summary}"
    );
    assert_eq!(
        summary["changes"].as_array().map(Vec::len),
        Some(1),
        "only the ramp: {summary}"
    );

    // Mistakes are caught before or by the gateway, and change nothing.
    let version = live_flags(&gateway).await["version"].clone();
    for (args, needle) in [
        (
            &["user_event", "1,5", "--step", "5 minutes", "--reason", "r"][..],
            "is not a duration like 300, 30s, 5m or 1h",
        ),
        (&["user_event", "1,5", "--reason", "r"][..], "--step"),
        (
            &[
                "user_event",
                "1,5",
                "--step",
                "1m",
                "--cancel",
                "--reason",
                "r",
            ][..],
            "cannot be used with",
        ),
        (
            &["user_event", "5,1", "--step", "1m", "--reason", "r"][..],
            "ramp.steps: steps must rise",
        ),
    ] {
        let run = admin_command(&gateway, "ramp", args, ADMIN_TOKEN).await;
        assert!(!run.succeeded(), "{args:?}: {run:?}");
        assert!(run.stderr.contains(needle), "{args:?}: {run:?}");
    }
    assert_eq!(live_flags(&gateway).await["version"], version);
    gateway.stop().await;
}

/// A gateway that allows fault injection, for the commands that use it.
async fn drill_gateway() -> Gateway {
    Gateway::start_with(config(
        true,
        &[("SWITCHYARD_ADMIN_ALLOW_FAULT_INJECTION", "true")],
    ))
    .await
}

/// Runs `args` twice, as text and with `--json`: both succeed; returns the text and the JSON.
async fn both_outputs(gateway: &Gateway, args: &[&str]) -> (String, Value) {
    let text = operate(gateway, args, ADMIN_TOKEN).await;
    assert!(text.succeeded(), "{args:?}: {text:?}");
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let json = operate(gateway, &with_json, ADMIN_TOKEN).await;
    assert!(json.succeeded(), "{args:?} --json: {json:?}");
    (text.stdout, json.json())
}

#[tokio::test]
async fn every_command_prints_text_by_default_and_json_on_request() {
    let gateway = drill_gateway().await;

    // `flags show`: a header and a table of routes.
    let (text, flags) = both_outputs(&gateway, &["flags", "show"]).await;
    assert_eq!(flags["version"], 0, "{flags}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("flags version 0 (startup by startup at "),
        "{text}"
    );
    for column in ["route", "legacy / ssot", "shadow", "latch", "ramp", "pins"] {
        assert!(lines[1].contains(column), "{text}");
    }
    let broadcast = lines.iter().find(|l| l.starts_with("broadcast ")).unwrap();
    assert!(broadcast.contains("0 / 100 %"), "{text}");

    // A change prints one `changed:` line naming each setting, old → new; --json the summary.
    let set = [
        "flags",
        "set",
        "user_event",
        "--reason",
        "canary",
        "--ssot-percent",
        "37",
        "--shadow",
        "true",
        "--ignore-fields",
        "timestamp,seq",
    ];
    let run = operate(&gateway, &set, ADMIN_TOKEN).await;
    assert!(run.succeeded(), "{run:?}");
    assert_eq!(
        run.stdout.trim_end(),
        "changed (version 0 → 1): routes.user_event.ignore_fields [] → timestamp,seq; \
         routes.user_event.shadow false → true; routes.user_event.ssot_percent 0.0 → 37.0"
    );
    let run = operate(&gateway, &[&set[..], &["--json"]].concat(), ADMIN_TOKEN).await;
    assert!(run.succeeded(), "{run:?}");
    assert_eq!(
        run.json(),
        json!({"old_version": 1, "version": 1, "persisted": true, "changes": []}),
        "the same change again changes nothing"
    );
    let run = operate(&gateway, &set, ADMIN_TOKEN).await;
    assert_eq!(run.stdout.trim_end(), "no change (version 1)", "{run:?}");
    let live = live_flags(&gateway).await;
    let user_event = &live["routes"]["user_event"];
    assert_eq!(
        user_event["ignore_fields"],
        json!(["timestamp", "seq"]),
        "{live}"
    );
    let (text, _) = both_outputs(&gateway, &["flags", "show"]).await;
    let row = text.lines().find(|l| l.starts_with("user_event ")).unwrap();
    assert!(
        row.contains("63 / 37 %") && row.contains("on 100%"),
        "{text}"
    );

    // The kill switch, engaged and released, one setting each way.
    let run = operate(
        &gateway,
        &["kill-switch", "engage", "--reason", "incident 9"],
        ADMIN_TOKEN,
    )
    .await;
    assert!(run.succeeded(), "{run:?}");
    assert_eq!(
        run.stdout.trim_end(),
        "changed (version 1 → 2): kill_switch.engaged false → true; kill_switch.reason \"\" → incident 9"
    );
    let (text, _) = both_outputs(&gateway, &["flags", "show"]).await;
    assert!(
        text.contains("KILL SWITCH ENGAGED: every route on legacy (incident 9)"),
        "{text}"
    );
    let run = operate(
        &gateway,
        &[
            "kill-switch",
            "release",
            "--reason",
            "over",
            "--if-match",
            "2",
            "--json",
        ],
        ADMIN_TOKEN,
    )
    .await;
    assert!(run.succeeded(), "{run:?}");
    assert_eq!(change_of(&run.json(), "kill_switch.engaged")["new"], false);

    // Stats, mismatches, the audit.
    let (text, stats) = both_outputs(&gateway, &["stats"]).await;
    assert!(
        stats["routes"]["user_event"]["paths"]["ssot"].is_object(),
        "{stats}"
    );
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.contains("events/s") && l.contains("verdict")),
        "{text}"
    );
    for route in ROUTES {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{route} "))),
            "{route}: {text}"
        );
    }
    let (text, mismatches) = both_outputs(&gateway, &["mismatches", "--route", "user_event"]).await;
    assert_eq!(mismatches, json!([]));
    assert_eq!(text.trim_end(), "no shadow mismatches");
    let (text, entries) =
        both_outputs(&gateway, &["flags", "audit", "--route", "user_event"]).await;
    assert_eq!(entries.as_array().map(Vec::len), Some(3), "{entries}");
    assert!(text.contains("ops (api)  version 0 → 1  canary"), "{text}");
    assert!(
        text.contains("    routes.user_event.ssot_percent: 0.00 → 37.00"),
        "{text}"
    );

    // Faults: set, list, clear.
    let run = operate(
        &gateway,
        &[
            "faults",
            "set",
            "user_event",
            "ssot",
            "--drop-ratio",
            "0.5",
            "--reason",
            "drill",
        ],
        ADMIN_TOKEN,
    )
    .await;
    assert!(run.succeeded(), "{run:?}");
    assert!(
        run.stdout
            .starts_with("changed (version 3 → 3): faults.user_event.ssot none → "),
        "{run:?}"
    );
    let (text, faults) = both_outputs(&gateway, &["faults", "list"]).await;
    assert_eq!(faults[0]["drop_ratio"], 0.5, "{faults}");
    assert_eq!(
        text.trim_end(),
        "user_event  ssot  drop_ratio 0.5  delay_ms 0"
    );
    let run = operate(&gateway, &["faults", "clear", "--json"], ADMIN_TOKEN).await;
    assert!(run.succeeded(), "{run:?}");
    assert!(change_of(&run.json(), "faults.user_event.ssot")["new"].is_null());

    // Where a user lands, from the live gateway.
    let (text, cohort) = both_outputs(&gateway, &["cohort", "alice"]).await;
    assert_eq!(cohort["version"], 3, "{cohort}");
    assert!(text.starts_with("user \"alice\": bucket "), "{text}");
    assert_eq!(text.lines().count(), 5, "{text}");
    gateway.stop().await;
}

#[tokio::test]
async fn exit_codes_are_distinct_and_errors_name_the_environment_variables() {
    let gateway = Gateway::start().await;
    let url = format!("http://{}", gateway.admin);
    let checks: Vec<(&str, Vec<&str>, i32, &str)> = vec![
        ("help", vec!["flags", "--help"], 0, ""),
        (
            "an unknown argument",
            vec!["flags", "show", "--colour"],
            64,
            "--colour",
        ),
        (
            "no token",
            vec!["flags", "show", "--admin-url", &url],
            64,
            "ADMIN_TOKEN",
        ),
        (
            "a bad URL",
            vec!["stats", "--admin-url", "ftp://x", "--token", ADMIN_TOKEN],
            64,
            "ADMIN_URL",
        ),
        (
            "a wrong token",
            vec!["stats", "--admin-url", &url, "--token", "nope"],
            77,
            "HTTP 401",
        ),
        (
            "a stale --if-match",
            vec![
                "kill-switch",
                "engage",
                "--reason",
                "r",
                "--if-match",
                "7",
                "--admin-url",
                &url,
                "--token",
                ADMIN_TOKEN,
            ],
            75,
            "HTTP 409",
        ),
        (
            "fault injection not allowed",
            vec![
                "faults",
                "list",
                "--admin-url",
                &url,
                "--token",
                ADMIN_TOKEN,
            ],
            77,
            "HTTP 403 fault_injection_disabled",
        ),
        (
            "an invalid ramp",
            vec![
                "flags",
                "ramp",
                "user_event",
                "5,1",
                "--step",
                "1m",
                "--reason",
                "r",
                "--admin-url",
                &url,
                "--token",
                ADMIN_TOKEN,
            ],
            65,
            "HTTP 422 invalid_flags",
        ),
        (
            "a missing cohort file",
            vec!["cohort", "alice", "--file", "/nonexistent/flags.toml"],
            65,
            "/nonexistent/flags.toml",
        ),
    ];
    let mut problems = Vec::new();
    for (name, args, code, needle) in checks {
        let run = switchyard(&args).await;
        if run.code != Some(code) || !run.stderr.contains(needle) {
            problems.push(format!(
                "{name}: expected exit {code} naming {needle:?}: {run:?}"
            ));
        }
    }
    // Nothing above changed anything.
    assert_eq!(live_flags(&gateway).await["version"], 0);
    gateway.stop().await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let run = switchyard(&["completions", shell]).await;
        assert!(run.succeeded(), "{shell}: {run:?}");
        for word in [
            "switchyard",
            "kill-switch",
            "mismatches",
            "ignore-fields",
            "json",
        ] {
            assert!(run.stdout.contains(word), "{shell} completions lack {word}");
        }
    }
    let run = switchyard(&["completions", "tcsh"]).await;
    assert_eq!(run.code, Some(64), "{run:?}");
}

/// 1000 users at 37% on a shadowed route: `GET /admin/cohort` names for each the path the
/// producer route then serves it by (`X-Switchyard-Path`), about 37% of them land on SSOT, and
/// `switchyard cohort` live and offline (`--file`, deciding with `routing::decide` in the CLI
/// process over the file the gateway wrote) agree with it.
#[tokio::test]
async fn cohort_agrees_with_the_router_for_a_thousand_users() {
    let gateway = Gateway::start().await;
    gateway
        .set_route(
            "user_event",
            json!({"ssot_percent": 37, "shadow": true, "pin_legacy": ["user-7"]}),
        )
        .await;
    let mut producer = crate::harness::Producer::connect(gateway.public).await;
    let mut on_ssot = 0;
    let mut answers = BTreeMap::new();
    for n in 0..1000 {
        let user = format!("user-{n}");
        let (status, _, answer) = gateway
            .admin(
                Method::GET,
                &format!("/admin/cohort?user_id={user}&route=user_event"),
                None,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let decided = &answer["routes"]["user_event"];
        let published = producer
            .publish("user_event", &user, json!({"type": "agent_started"}))
            .await;
        assert_eq!(
            (published.path.as_str(), published.flags_version),
            (
                decided["path"].as_str().unwrap(),
                answer["version"].as_u64().unwrap()
            ),
            "{user}: {answer}"
        );
        on_ssot += u32::from(decided["path"] == "ssot");
        answers.insert(user, answer);
    }
    assert!(
        (330..=410).contains(&on_ssot),
        "{on_ssot} of 1000 on SSOT at 37%"
    );
    assert_eq!(
        answers["user-7"]["routes"]["user_event"]["reason"],
        "pinned_legacy"
    );

    // The CLI, live and offline, for a sample (each run is a process).
    for n in (0..1000).step_by(50).chain([7]) {
        let user = format!("user-{n}");
        let live = operate(&gateway, &["cohort", &user, "--json"], ADMIN_TOKEN).await;
        assert!(live.succeeded(), "{live:?}");
        assert_eq!(
            live.json()["routes"]["user_event"],
            answers[&user]["routes"]["user_event"]
        );
        let file = gateway.flags_path.to_str().unwrap();
        let offline = switchyard(&["cohort", &user, "--file", file, "--json"]).await;
        assert!(offline.succeeded(), "{offline:?}");
        assert_eq!(offline.json(), live.json(), "{user}");
    }
    gateway.stop().await;
}

/// A TLS-terminating proxy on a free loopback port in front of `upstream`, with a certificate
/// for `localhost` made here; returns its port and the certificate's PEM.
async fn tls_proxy(upstream: std::net::SocketAddr) -> (u16, String) {
    use tokio_rustls::rustls;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = certified.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, pem)
}

#[tokio::test]
async fn https_admin_urls_work_with_a_trusted_certificate_and_fail_without() {
    let gateway = Gateway::start().await;
    let (port, pem) = tls_proxy(gateway.admin).await;
    let dir = scratch_dir();
    let bundle = write(&dir, "ca.pem", &pem);
    let url = format!("https://localhost:{port}");
    let args = [
        "flags",
        "show",
        "--json",
        "--admin-url",
        &url,
        "--token",
        ADMIN_TOKEN,
    ];
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env_remove("ADMIN_TOKEN")
        .env("SSL_CERT_FILE", &bundle)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    let flags: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(flags["version"], 0, "{flags}");
    // Not trusted (the system's roots only): refused, as unavailable, saying why.
    let run = switchyard(&args).await;
    assert_eq!(run.code, Some(69), "{run:?}");
    assert!(run.stderr.contains("TLS with localhost"), "{run:?}");
    gateway.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The commands the other tests run with `--json` print text for people without it: a ramp, a
/// reload and a rollback each one `changed` (or `no change`) line; `flags check` and `cohort
/// --file` work offline in both forms.
#[tokio::test]
async fn change_commands_print_one_line_and_offline_commands_print_both_forms() {
    let gateway = Gateway::start().await;
    let run = operate(
        &gateway,
        &[
            "flags",
            "ramp",
            "user_event",
            "1,5",
            "--step",
            "1h",
            "--reason",
            "canary",
        ],
        ADMIN_TOKEN,
    )
    .await;
    assert!(run.succeeded(), "{run:?}");
    assert!(
        run.stdout.starts_with("changed (version 0 → 1): routes.user_event.ramp none → ramp [1.0,5.0] every 3600s; routes.user_event.ssot_percent 0.0 → 1.0"),
        "{run:?}"
    );
    let run = operate(&gateway, &["flags", "reload"], ADMIN_TOKEN).await;
    assert_eq!(
        run.stdout.trim_end(),
        "reload unchanged; no change (version 1)",
        "{run:?}"
    );
    let run = operate(
        &gateway,
        &[
            "flags",
            "rollback",
            "--reason",
            "drill",
            "--route",
            "user_event",
        ],
        ADMIN_TOKEN,
    )
    .await;
    assert!(run.succeeded(), "{run:?}");
    assert!(
        run.stdout.starts_with(
            "changed (version 1 → 2): routes.user_event.latch none → latched by ops (drill)"
        ),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("routes.user_event.ramp"),
        "the rollback ended the ramp: {run:?}"
    );
    let file = gateway.flags_path.to_str().unwrap().to_owned();

    let run = switchyard(&["flags", "check", &file, "--json"]).await;
    assert!(run.succeeded(), "{run:?}");
    let checked = run.json();
    assert_eq!(checked["ok"], true, "{checked}");
    assert!(
        checked["summary"]
            .as_str()
            .unwrap()
            .contains("user_event 1.00% LATCHED"),
        "{checked}"
    );
    let run = switchyard(&["cohort", "alice", "--file", &file, "--route", "user_event"]).await;
    assert!(run.succeeded(), "{run:?}");
    assert!(run.stdout.contains("flags version 2"), "{run:?}");
    assert!(
        run.stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("user_event")
                && l.contains("legacy")
                && l.contains("(latched;")),
        "{run:?}"
    );
    let run = switchyard(&["cohort", "alice", "--file", &file, "--route", "nope"]).await;
    assert_eq!(run.code, Some(65), "{run:?}");
    assert!(run.stderr.contains("no route \"nope\""), "{run:?}");
    gateway.stop().await;
}
