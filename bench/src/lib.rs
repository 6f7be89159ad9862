//! The load generator for switchyard, behind the `switchyard-bench` binary: real WebSocket
//! clients and keep-alive HTTP producers against a running gateway, measuring what its users
//! would see. A tool beside the product, not part of it: it talks to the gateway only through
//! its public HTTP and WebSocket contract (so it loads the Node peer in `bench/node/` the same
//! way), and the gateway's library carries none of its code.
//!
//! U users × C connections connect with `?user_id=` (a `--dev` gateway). P producers publish
//! numbered events, each user owned by one producer so that its events carry consecutive
//! sequence numbers; every connection checks that it receives each of its user's events exactly
//! once, in order, and nothing of anyone else's. Latency is publish → receive, from one clock
//! (generator and clients share the process). Everything measured is reported, including the
//! frames that must be zero: lost, duplicated, foreign.
//!
//! - [`run`] makes one load run, [`measure`] a series of them (optionally shadow off and on);
//! - [`flip_latency`] times flag flips and checks the next event on the route sees each one;
//! - [`idle_rss`] measures the gateway's memory per idle connection.

mod cpu;
mod flips;
mod idle;
mod load;
mod peers;
mod reference;
pub mod route;
mod wire;

use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::Method;
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

pub use crate::flips::{FlipReport, flip_latency};
pub use crate::idle::idle_rss;
pub use crate::load::run;
pub use crate::peers::{Comparison, Peer, PeerRun, Shape, compare_peers};
pub use crate::reference::{ReferenceReport, loopback_reference};
pub use crate::route::Route;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// `host:port` of the gateway's public listener.
    pub target: String,
    pub producer_token: String,
    pub route: Route,
    pub users: usize,
    pub connections_per_user: usize,
    pub producers: usize,
    pub duration: Duration,
    /// Bytes of padding in each event, to reach the event size wanted.
    pub padding: usize,
    /// Events per request: 1 uses the route's single-event endpoint, more its batch endpoint.
    pub batch: usize,
    /// Open loop: publish this many events per second in all, on a fixed schedule, and measure
    /// latency from each event's intended send time, so a stall shows instead of hiding. `None`
    /// publishes as fast as answers come back.
    pub rate: Option<f64>,
    /// The process serving `target`, when known: its CPU time is then reported with the run.
    pub target_pid: Option<u32>,
    /// More gateways of the same fleet as `target` (`[backplane] kind = "redis"`), `host:port`
    /// each: connections go round-robin over `target` and these, and every request goes to one
    /// of them at random, so events cross nodes as behind a load balancer. Empty: one gateway.
    pub nodes: Vec<String>,
}

impl BenchConfig {
    /// `target`, then the fleet's other nodes.
    fn gateways(&self) -> Vec<&str> {
        std::iter::once(self.target.as_str())
            .chain(self.nodes.iter().map(String::as_str))
            .collect()
    }
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub route: Route,
    pub users: usize,
    pub connections_per_user: usize,
    pub producers: usize,
    pub seconds: f64,
    pub events_published: u64,
    pub frames_received: u64,
    pub deliveries_per_second: f64,
    pub events_per_second: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub foreign: u64,
    pub latency_us: Percentiles,
    /// Each producer request's round trip, from just before its body was written to reading its
    /// whole answer.
    pub answer_us: Percentiles,
    /// In an open loop, how late each request was sent against the time it was due: the
    /// generator's own share of `latency_us` (a pacer or a producer that woke late, or a
    /// producer still waiting for its last answer). `None` when nothing recorded it: a closed
    /// loop.
    pub send_lag_us: Option<Percentiles>,
    /// In an open loop, `latency_us` counted from when each event was sent instead of when it
    /// was due: the gateway's and the receiving clients' share, without the sending lag.
    pub latency_from_sent_us: Option<Percentiles>,
    /// Cores the generator used while the producers ran (its CPU seconds over the run's
    /// seconds): 1.0 is one core busy the whole time, taken from the server under test.
    pub generator_cores: f64,
    /// The same for the server under test, when its pid was given.
    pub target_cores: Option<f64>,
}

impl BenchReport {
    /// Whether a frame was lost, duplicated or delivered to the wrong user.
    pub fn failed(&self) -> bool {
        self.lost > 0 || self.duplicated > 0 || self.foreign > 0
    }
}

/// Percentiles in microseconds, read from an HDR histogram with three significant figures: each
/// is within 0.1% of the exact one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    /// All zero for an empty histogram.
    fn of(histogram: &Histogram<Count>) -> Percentiles {
        Percentiles {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// A histogram's count per bucket. Every connection keeps its own histogram (tens of KiB at three
/// significant figures) until the run ends, so the counts are 32-bit: a run records a few million
/// samples, far from the 4 billion one bucket could hold.
type Count = u32;

/// An empty histogram of microseconds that grows to whatever it is given through [`record`].
fn histogram() -> Histogram<Count> {
    Histogram::new(3).expect("three significant figures is in hdrhistogram's range")
}

/// Records one sample, growing the histogram as needed. Not `saturating_record`: that never grows
/// the histogram (it starts at 2,048 µs), and hdrhistogram 7.5 files a clamped sample near zero,
/// so every latency over 2 ms read as about 2 µs and capped the max at 2,047 µs.
fn record(histogram: &mut Histogram<Count>, us: u64) {
    if histogram.record(us).is_err() {
        // Only past u64 / 2: a clock gone wrong, not a latency.
        histogram.saturating_record(us);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("connecting client {user}: {message}")]
    Connect { user: String, message: String },
    #[error("HTTP to {authority}: {message}")]
    Http { authority: String, message: String },
    #[error("{what}: HTTP {status}: {body}")]
    Refused {
        what: String,
        status: u16,
        body: String,
    },
    #[error("reading the gateway's memory: {0}")]
    Rss(String),
    #[error("reading CPU time: {0}")]
    Cpu(String),
    #[error("a task of the generator failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Config(String),
}

/// A gateway's admin API, for the runs that change flags.
#[derive(Debug, Clone)]
pub struct Admin {
    /// `http://host:port` of the admin listener.
    pub url: String,
    pub token: String,
}

impl Admin {
    /// `PATCH /admin/flags/routes/{route}` with `patch`; an answer other than 200 is an error.
    async fn set_route(&self, route: Route, patch: Value) -> Result<(), BenchError> {
        let authority = self
            .url
            .strip_prefix("http://")
            .ok_or_else(|| {
                BenchError::Config(format!("{}: only http:// admin URLs work", self.url))
            })?
            .trim_end_matches('/');
        let path = format!("/admin/flags/routes/{route}");
        let answer = wire::Connection::open(authority)
            .await?
            .send(
                Method::PATCH,
                &path,
                &self.token,
                Bytes::from(patch.to_string()),
            )
            .await?;
        if answer.status != 200 {
            return Err(BenchError::Refused {
                what: format!("PATCH {path}"),
                status: answer.status.as_u16(),
                body: String::from_utf8_lossy(&answer.body).into_owned(),
            });
        }
        Ok(())
    }
}

/// One labelled run of a series.
#[derive(Debug, Clone, Serialize)]
pub struct LabelledRun {
    pub label: String,
    pub report: BenchReport,
}

/// Makes `rounds` runs; with `compare_shadow`, each round is a run with the route's shadow off
/// then one with it on, switched through `admin`. `progress` sees each run as it ends.
pub async fn measure(
    config: &BenchConfig,
    rounds: usize,
    compare_shadow: Option<&Admin>,
    mut progress: impl FnMut(&LabelledRun),
) -> Result<Vec<LabelledRun>, BenchError> {
    let modes: &[Option<bool>] = match compare_shadow {
        Some(_) => &[Some(false), Some(true)],
        None => &[None],
    };
    let mut runs = Vec::new();
    for round in 1..=rounds.max(1) {
        for &mode in modes {
            if let (Some(shadow), Some(admin)) = (mode, compare_shadow) {
                let patch = serde_json::json!({"shadow": shadow, "reason": "benchmark"});
                admin.set_route(config.route, patch).await?;
            }
            let label = match mode {
                None => format!("run {round}"),
                Some(false) => format!("shadow off {round}"),
                Some(true) => format!("shadow on {round}"),
            };
            let run = LabelledRun {
                label,
                report: run(config).await?,
            };
            progress(&run);
            runs.push(run);
        }
    }
    Ok(runs)
}

/// The median deliveries per second of a shadow comparison's runs, (off, on).
pub fn shadow_medians(runs: &[LabelledRun]) -> (f64, f64) {
    let median = |prefix: &str| {
        let mut rates: Vec<f64> = runs
            .iter()
            .filter(|run| run.label.starts_with(prefix))
            .map(|run| run.report.deliveries_per_second)
            .collect();
        rates.sort_by(f64::total_cmp);
        rates.get(rates.len() / 2).copied().unwrap_or(0.0)
    };
    (median("shadow off"), median("shadow on"))
}

/// A p99 for a table, or `-` when it was not measured.
fn p99_or_dash(percentiles: Option<&Percentiles>) -> String {
    percentiles.map_or("-".to_owned(), |p| p.p99.to_string())
}

/// A readable table of runs, one line each.
pub fn table(runs: &[LabelledRun]) -> String {
    let mut out = format!(
        "{:<14} {:>12} {:>10} {:>8} {:>8} {:>8} {:>9} {:>8} {:>5} {:>5} {:>7} {:>9} {:>14} {:>12} {:>13}\n",
        "run",
        "deliveries/s",
        "events/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "lost",
        "dup",
        "foreign",
        "gen cores",
        "answer p99 µs",
        "lag p99 µs",
        "from sent p99"
    );
    for LabelledRun { label, report: r } in runs {
        out.push_str(&format!(
            "{:<14} {:>12.0} {:>10.0} {:>8} {:>8} {:>8} {:>9} {:>8} {:>5} {:>5} {:>7} {:>9.2} {:>14} {:>12} {:>13}\n",
            label,
            r.deliveries_per_second,
            r.events_per_second,
            r.latency_us.p50,
            r.latency_us.p90,
            r.latency_us.p99,
            r.latency_us.p999,
            r.latency_us.max,
            r.lost,
            r.duplicated,
            r.foreign,
            r.generator_cores,
            r.answer_us.p99,
            p99_or_dash(r.send_lag_us.as_ref()),
            p99_or_dash(r.latency_from_sent_us.as_ref()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut samples = histogram();
        for us in 1..=1000 {
            samples.record(us).unwrap();
        }
        let p = Percentiles::of(&samples);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (500, 900, 990, 1000));
        // Above 2048 a bucket spans more than one value; three significant figures hold.
        samples.record(1_234_567).unwrap();
        let max = Percentiles::of(&samples).max;
        assert!(max.abs_diff(1_234_567) <= 1_235, "{max}");
        assert_eq!(Percentiles::of(&histogram()).max, 0);
    }

    #[test]
    fn samples_over_the_initial_range_grow_the_histogram() {
        let mut samples = histogram();
        for us in [300, 900, 1_500, 5_000, 70_000] {
            record(&mut samples, us);
        }
        let p = Percentiles::of(&samples);
        assert_eq!(p.p50, 1_500, "{p:?}");
        assert!(p.max.abs_diff(70_000) <= 70, "{p:?}");
        // Merged into a fresh histogram, as a run merges its connections' samples.
        let mut merged = histogram();
        merged.add(&samples).unwrap();
        assert_eq!(Percentiles::of(&merged).p50, 1_500);
    }
}
