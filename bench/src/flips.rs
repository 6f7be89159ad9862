//! Flag flips: how long a flip through the admin API takes, and whether the very next event on
//! the route takes the new path.

use bytes::Bytes;
use hyper::Method;
use serde_json::json;
use tokio::time::Instant;

use crate::wire::Connection;
use crate::{Admin, BenchError, Percentiles, Route, histogram, record};

/// What a series of flips measured.
#[derive(Debug, Clone)]
pub struct FlipReport {
    /// Each flip's admin round trip, in microseconds.
    pub round_trip_us: Percentiles,
    /// How many of the events published right after a flip still took the old path: must be 0.
    pub stale: u64,
}

/// The user the probes publish to; no client needs to be connected for the path to show.
const PROBE_USER: &str = "flip-probe";

/// Flips `route` between 0% and 100% SSOT `n` times through the admin API. After each flip
/// answers, publishes one event on that route (its own endpoint and request shape) and reads the
/// path that served it from `X-Switchyard-Path`.
pub async fn flip_latency(
    target: &str,
    admin: &Admin,
    producer_token: &str,
    route: Route,
    n: usize,
) -> Result<FlipReport, BenchError> {
    let mut round_trips = histogram();
    let mut stale = 0;
    for i in 0..n {
        let percent = if i % 2 == 0 { 100 } else { 0 };
        let started = Instant::now();
        let patch = json!({"ssot_percent": percent, "reason": "flip latency benchmark"});
        admin.set_route(route, patch).await?;
        record(&mut round_trips, started.elapsed().as_micros() as u64);
        let expected = if percent == 100 { "ssot" } else { "legacy" };
        if probe(target, producer_token, route).await? != expected {
            stale += 1;
        }
    }
    Ok(FlipReport {
        round_trip_us: Percentiles::of(&round_trips),
        stale,
    })
}

/// Publishes one event on `route` on a fresh connection; returns the `X-Switchyard-Path` of the
/// answer, which every producer answer carries.
async fn probe(target: &str, producer_token: &str, route: Route) -> Result<String, BenchError> {
    let mut body = String::new();
    route.write_item(&mut body, PROBE_USER, format_args!(r#"{{"type":"probe"}}"#));
    let answer = Connection::open(target)
        .await?
        .send(
            Method::POST,
            route.endpoint(),
            producer_token,
            Bytes::from(body),
        )
        .await?;
    if !answer.status.is_success() {
        return Err(BenchError::Refused {
            what: format!("POST {}", route.endpoint()),
            status: answer.status.as_u16(),
            body: String::from_utf8_lossy(&answer.body).into_owned(),
        });
    }
    Ok(answer
        .headers
        .get("x-switchyard-path")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned())
}
