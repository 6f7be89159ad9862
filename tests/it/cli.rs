//! The operator commands of the real `switchyard` binary: `flags check` (what CI runs on a flag
//! change), `cohort` (where a user lands), and `flags show|set|rollback|audit|reload` against a
//! gateway running in this process.

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
        .env_remove("SWITCHYARD_ADMIN_URL")
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

/// `switchyard flags COMMAND ARGS --admin-url … --token …` against `gateway`.
async fn admin_command(gateway: &Gateway, command: &str, args: &[&str], token: &str) -> Run {
    let url = format!("http://{}", gateway.admin);
    let mut full = vec!["flags", command];
    full.extend_from_slice(args);
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
        if run.succeeded() || run.code.is_none() {
            problems.push(format!(
                "{}: exit {:?}, expected a failure",
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
    assert!(!run.succeeded(), "{run:?}");
    assert!(run.stderr.contains("409"), "{run:?}");
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

    // Refusals exit non-zero with the answer on stderr.
    for (name, args, token, status) in [
        (
            "an unknown route",
            &["nope", "--reason", "r", "--ssot-percent", "1"][..],
            ADMIN_TOKEN,
            "404",
        ),
        (
            "ssot_percent 150",
            &["router_broadcast", "--reason", "r", "--ssot-percent", "150"][..],
            ADMIN_TOKEN,
            "422",
        ),
        (
            "a wrong token",
            &["router_broadcast", "--reason", "r", "--ssot-percent", "1"][..],
            "not-the-admin-token",
            "401",
        ),
    ] {
        let run = admin_command(&gateway, "set", args, token).await;
        assert!(
            !run.succeeded() && run.stderr.contains(status),
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
    assert!(run.stderr.contains("connecting"), "{run:?}");
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
