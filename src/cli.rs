//! The operator commands besides `serve`: checking a flags file, reading and changing the live
//! flags through the admin API (ramps included), and showing where a user lands.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use serde_json::Value;
use tokio::net::TcpStream;

use crate::flags::FlagSet;
use crate::route::Route;
use crate::routing::{cohort_bucket, decide};

/// Validates a flags file; `Ok` carries a one-line summary, `Err` the error naming file, line
/// and key.
pub fn check_flags_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("flags file {}: {error}", path.display()))?;
    let document =
        FlagSet::parse_document(&text, &path.display().to_string()).map_err(|e| e.to_string())?;
    let flags = document.flags;
    let routes: Vec<String> = Route::ALL
        .into_iter()
        .map(|route| {
            let r = flags.route(route);
            format!(
                "{} {:.2}%{}{}",
                route.as_str(),
                r.ssot_percent.as_f64(),
                if r.shadow { " shadow" } else { "" },
                if r.latch.is_some() { " LATCHED" } else { "" }
            )
        })
        .collect();
    let version = match document.declared_version {
        Some(version) => version.to_string(),
        // Valid as a first file at startup, but a running gateway refuses to reload it.
        None => "none: give the live version before reloading".to_owned(),
    };
    Ok(format!(
        "{}: ok (version {}{}); ssot share: {}",
        path.display(),
        version,
        if flags.kill_switch.engaged {
            ", KILL SWITCH ENGAGED"
        } else {
            ""
        },
        routes.join(", ")
    ))
}

/// Where `user_id` lands on every route under the flags in `flags_path` (the defaults when the
/// file does not exist).
pub fn cohort_report(flags_path: &Path, user_id: &str) -> Result<String, String> {
    let flags = match std::fs::read_to_string(flags_path) {
        Ok(text) => {
            FlagSet::parse(&text, &flags_path.display().to_string()).map_err(|e| e.to_string())?
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => FlagSet::defaults(),
        Err(error) => return Err(format!("flags file {}: {error}", flags_path.display())),
    };
    let bucket = cohort_bucket(&flags.salt, user_id.trim());
    let mut report = format!(
        "user {user_id:?}: bucket {bucket} of 10000 (salt {:?}, flags version {})\n",
        flags.salt, flags.version
    );
    for route in Route::ALL {
        let decision = decide(&flags, route, user_id);
        report.push_str(&format!(
            "  {:<17} {:<6} ({}; ssot_percent {:.2}){}\n",
            route.as_str(),
            decision.primary.as_str(),
            decision.reason.as_str(),
            flags.route(route).ssot_percent.as_f64(),
            decision
                .shadow
                .map_or(String::new(), |s| format!(", shadowed by {}", s.as_str()))
        ));
    }
    Ok(report)
}

/// Parses a duration given on the command line into seconds: whole seconds (`300`, `300s`),
/// minutes (`5m`) or hours (`1h`).
pub fn parse_duration_seconds(text: &str) -> Result<u64, String> {
    let invalid = || format!("{text:?} is not a duration like 300, 30s, 5m or 1h");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(invalid()),
    };
    number.checked_mul(scale).ok_or_else(invalid)
}

/// A call to the admin API: method, path and optional JSON body, with the admin token.
pub struct AdminCall<'a> {
    /// `http://host:port` of the admin listener.
    pub base_url: &'a str,
    pub token: &'a str,
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
    pub if_match: Option<u64>,
}

/// Performs an admin call; returns the status and the pretty-printed JSON answer.
pub async fn admin_request(call: AdminCall<'_>) -> Result<(u16, String), String> {
    let authority = call
        .base_url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{}: only http:// admin URLs are supported", call.base_url))?
        .trim_end_matches('/');
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|error| format!("connecting to {authority}: {error}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|error| format!("HTTP handshake with {authority}: {error}"))?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(call.method)
        .uri(&call.path)
        .header("host", authority)
        .header("authorization", format!("Bearer {}", call.token));
    if let Some(version) = call.if_match {
        request = request.header("if-match", format!("\"{version}\""));
    }
    let body = match call.body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    let request = request
        .body(Full::new(body))
        .map_err(|error| format!("building the request: {error}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| format!("calling {}: {error}", call.path))?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|error| format!("reading the answer: {error}"))?
        .to_bytes();
    let text = match serde_json::from_slice::<Value>(&bytes) {
        Ok(value) => serde_json::to_string_pretty(&value).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
    };
    Ok((status, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_on_the_command_line() {
        for (text, expected) in [
            ("300", Ok(300)),
            ("30s", Ok(30)),
            ("5m", Ok(300)),
            ("1h", Ok(3600)),
            (" 2m ", Ok(120)),
            ("5 m", Err(())),
            ("5min", Err(())),
            ("-5", Err(())),
            ("m", Err(())),
            ("", Err(())),
            ("99999999999999999999h", Err(())),
        ] {
            assert_eq!(
                parse_duration_seconds(text).map_err(|_| ()),
                expected,
                "{text:?}"
            );
        }
    }

    #[test]
    fn cohort_report_names_every_route() {
        let report = cohort_report(Path::new("/nonexistent/flags.toml"), "alice").unwrap();
        for route in Route::ALL {
            assert!(report.contains(route.as_str()), "{report}");
        }
        assert!(report.contains(&format!("bucket {}", cohort_bucket("switchyard", "alice"))));
    }
}
