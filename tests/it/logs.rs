//! The gateway's logs, from the real binary: `[log] format = "json"` gives one JSON object a
//! line; text logs carry ANSI colour only on a terminal and never under `NO_COLOR`; a missing
//! flags file at start is a WARN naming its path; a listener that cannot be bound is named with
//! its address.

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::harness::{PROMPTLY, http, scratch_dir};
use crate::readme::{BINARY, dev_banner, serve_on_loopback, switchyard, terminate};

const ESC: u8 = 0x1b;

/// Runs a `serve --dev` gateway with `env` and stderr into a file, makes one audited flag
/// change through the admin API (a WARN line with fields), stops it with SIGTERM, and returns
/// the flags path it was given (missing) and its stderr.
async fn gateway_stderr(env: &[(&str, &str)]) -> (String, String) {
    let dir = scratch_dir();
    let flags = dir.join("missing").join("flags.toml");
    let stderr_path = dir.join("stderr.log");
    let stderr_file = std::fs::File::create(&stderr_path).unwrap();
    let mut gateway = serve_on_loopback()
        .args(["serve", "--dev", "--flags"])
        .arg(&flags)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr_file)
        .spawn()
        .expect("start switchyard serve");
    let mut out = BufReader::new(gateway.stdout.take().unwrap()).lines();
    let banner = dev_banner(&mut out).await;
    let auth = [
        (
            "authorization",
            format!("Bearer {}", banner.export("ADMIN_TOKEN")),
        ),
        ("content-type", "application/json".to_owned()),
    ];
    let (status, _, _) = http(
        banner.admin,
        Method::PATCH,
        "/admin/flags/routes/user_event",
        &auth,
        Bytes::from(r#"{"shadow": true, "reason": "a \"quoted\"\nreason"}"#),
    )
    .await;
    assert_eq!(status.as_u16(), 200);
    let status = terminate(&mut gateway, Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{status}");
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (flags.display().to_string(), stderr)
}

#[tokio::test]
async fn json_logs_are_one_object_a_line() {
    let (flags, stderr) = gateway_stderr(&[("SWITCHYARD_LOG_FORMAT", "json")]).await;
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect();
    assert!(lines.len() >= 4, "{stderr}");
    for line in &lines {
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&line["level"].as_str().unwrap()),
            "{line}"
        );
        assert!(line["fields"]["message"].is_string(), "{line}");
    }
    let missing = lines
        .iter()
        .find(|line| line["fields"]["path"] == flags.as_str())
        .unwrap_or_else(|| panic!("no line names the missing flags file {flags}: {stderr}"));
    assert_eq!(missing["level"], "WARN", "{missing}");
    // The operator's reason, newline and quotes included, stays inside its one line.
    assert!(
        lines
            .iter()
            .any(|line| line["fields"]["reason"] == "a \"quoted\"\nreason"),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line["fields"]["message"] == "switchyard stopped"),
        "{stderr}"
    );
}

#[tokio::test]
async fn text_logs_to_a_file_have_no_colour_codes() {
    let (flags, stderr) = gateway_stderr(&[]).await;
    assert!(!stderr.as_bytes().contains(&ESC), "{stderr:?}");
    let warning = stderr
        .lines()
        .find(|line| line.contains(&flags))
        .unwrap_or_else(|| panic!("no line names the missing flags file {flags}: {stderr}"));
    assert!(warning.contains(" WARN "), "{warning}");
}

/// A gateway's stderr as a terminal shows it: through `script` (util-linux, Essential in
/// Debian), which gives the process a pseudo-terminal; stopped by `timeout` after its first
/// lines are out.
async fn stderr_on_a_terminal(no_color: Option<&str>) -> Vec<u8> {
    let dir = scratch_dir();
    let flags = dir.join("missing").join("flags.toml");
    let command = format!(
        "timeout -s TERM 2 {BINARY} serve --dev --flags {} 2>&1 >/dev/null",
        flags.display()
    );
    let mut script = Command::new("script");
    script
        .args(["-qec", &command, "/dev/null"])
        .env("SWITCHYARD_SERVER_LISTEN", "127.0.0.1:0")
        .env("SWITCHYARD_SERVER_ADMIN_LISTEN", "127.0.0.1:0")
        .env_remove("NO_COLOR")
        .env_remove("SWITCHYARD_LOG_FORMAT")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(value) = no_color {
        script.env("NO_COLOR", value);
    }
    let output = tokio::time::timeout(PROMPTLY, script.output())
        .await
        .expect("script exits promptly")
        .unwrap_or_else(|e| panic!("script (util-linux): {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("flags file not found"), "{output:?}");
    output.stdout
}

#[tokio::test]
async fn colour_only_on_a_terminal_and_never_under_no_color() {
    assert!(
        stderr_on_a_terminal(None).await.contains(&ESC),
        "a terminal gets colour"
    );
    let plain = stderr_on_a_terminal(Some("1")).await;
    assert!(
        !plain.contains(&ESC),
        "NO_COLOR=1: {:?}",
        String::from_utf8_lossy(&plain)
    );
}

#[tokio::test]
async fn a_listener_that_cannot_bind_is_named_with_its_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    for (var, listener, key) in [
        ("SWITCHYARD_SERVER_LISTEN", "public", "server.listen"),
        (
            "SWITCHYARD_SERVER_ADMIN_LISTEN",
            "admin",
            "server.admin_listen",
        ),
    ] {
        let output = tokio::time::timeout(
            PROMPTLY,
            serve_on_loopback()
                .args(["serve", "--dev"])
                .env(var, addr.to_string())
                .output(),
        )
        .await
        .expect("exits promptly")
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(69), "{output:?}");
        assert!(
            stderr.contains(&format!("the {listener} listener ({key}) to {addr}")),
            "{stderr}"
        );
    }
    drop(taken);
}

#[tokio::test]
async fn an_unknown_log_format_is_a_configuration_error() {
    let output = tokio::time::timeout(
        PROMPTLY,
        switchyard()
            .args(["serve", "--dev"])
            .env("SWITCHYARD_LOG_FORMAT", "xml")
            .output(),
    )
    .await
    .expect("exits promptly")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(
        stderr.contains("xml") && stderr.contains("json"),
        "{stderr}"
    );
}
