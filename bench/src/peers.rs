//! Side by side: the same load shapes against several servers of the same API (switchyard, the
//! Bun and Node peers in `bench/`), in interleaved rounds, reported as medians per shape and
//! server and as paired ratios against the first server. On a shared, noisy machine a ratio of
//! runs made back to back says more than two medians taken minutes apart.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::{BenchConfig, BenchError, BenchReport, Percentiles, run};

/// One load shape: connections per user, events per request, and a rate for an open loop (none:
/// closed loop, as fast as answers come back).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Shape {
    pub connections: usize,
    pub batch: usize,
    pub rate: Option<f64>,
}

impl Shape {
    /// The shapes of issue 16's table: 1 and 3 connections per user flat out with single events
    /// and batches of 50, then single events in an open loop at 10k and 20k events/s.
    pub fn issue16() -> Vec<Shape> {
        ["1x1", "3x1", "1x50", "3x50", "1x1@10000", "1x1@20000"]
            .iter()
            .map(|spec| spec.parse().expect("the built-in shapes parse"))
            .collect()
    }
}

/// `CxB` or `CxB@RATE`: C connections per user, B events per request, RATE events/s in all.
impl FromStr for Shape {
    type Err = BenchError;

    fn from_str(spec: &str) -> Result<Shape, BenchError> {
        let wrong = || {
            BenchError::Config(format!(
                "shape {spec:?}: write CxB or CxB@RATE (connections per user, events per request, \
                 events/s), e.g. 3x50 or 1x1@20000"
            ))
        };
        let (load, rate) = match spec.split_once('@') {
            Some((load, rate)) => (load, Some(rate.parse::<f64>().map_err(|_| wrong())?)),
            None => (spec, None),
        };
        let (connections, batch) = load.split_once('x').ok_or_else(wrong)?;
        let shape = Shape {
            connections: connections.parse().map_err(|_| wrong())?,
            batch: batch.parse().map_err(|_| wrong())?,
            rate,
        };
        let rate_ok = shape.rate.is_none_or(|r| r.is_finite() && r > 0.0);
        if shape.connections == 0 || shape.batch == 0 || !rate_ok {
            return Err(wrong());
        }
        Ok(shape)
    }
}

/// `1c b50` or `1c b1 @20000/s`: the label of the shape's rows.
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}c b{}", self.connections, self.batch)?;
        match self.rate {
            Some(rate) => write!(f, " @{rate}/s"),
            None => Ok(()),
        }
    }
}

/// A server under comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    pub name: String,
    /// `host:port` of its public listener.
    pub target: String,
    /// The other nodes of its fleet, when it is one (`HOST:PORT+HOST:PORT…`).
    pub nodes: Vec<String>,
    pub token: String,
    /// Its process, to report its CPU time with each run.
    pub pid: Option<u32>,
}

impl Peer {
    /// `NAME=HOST:PORT[,token=TOKEN][,pid=PID]`; the token defaults to `default_token`. A
    /// fleet is `NAME=HOST:PORT+HOST:PORT…`: its nodes share the load (`BenchConfig::nodes`),
    /// and the pid is the first node's.
    pub fn parse(spec: &str, default_token: &str) -> Result<Peer, BenchError> {
        let wrong = |why: &str| {
            BenchError::Config(format!(
                "peer {spec:?}: {why}; write NAME=HOST:PORT[+HOST:PORT…][,token=TOKEN][,pid=PID]"
            ))
        };
        let (name, rest) = spec.split_once('=').ok_or_else(|| wrong("no NAME="))?;
        let mut parts = rest.split(',');
        let mut targets = parts.next().unwrap_or_default().split('+');
        let target = targets.next().unwrap_or_default();
        let nodes: Vec<String> = targets.map(str::to_owned).collect();
        if name.is_empty() || !target.contains(':') || nodes.iter().any(|n| !n.contains(':')) {
            return Err(wrong("a name and a HOST:PORT are needed"));
        }
        let mut peer = Peer {
            name: name.to_owned(),
            target: target.to_owned(),
            nodes,
            token: default_token.to_owned(),
            pid: None,
        };
        for part in parts {
            match part.split_once('=') {
                Some(("token", token)) if !token.is_empty() => peer.token = token.to_owned(),
                Some(("pid", pid)) => {
                    peer.pid = Some(pid.parse().map_err(|_| wrong("the pid is not a number"))?);
                }
                _ => return Err(wrong(&format!("unknown option {part:?}"))),
            }
        }
        Ok(peer)
    }
}

/// One run of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRun {
    pub round: usize,
    pub shape: String,
    pub peer: String,
    pub report: BenchReport,
}

/// Every run of a comparison, in the order made.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub peers: Vec<String>,
    pub shapes: Vec<String>,
    pub runs: Vec<PeerRun>,
}

/// Runs every shape against every peer, `rounds` times. Within a round each shape is run on
/// every peer back to back, the order rotating from shape to shape and round to round so that no
/// peer always runs first (a warm cache) or last (a machine busier with the last run's
/// leftovers). `base` gives everything a shape and a peer do not (users, producers, seconds,
/// padding, route); `progress` sees each run as it ends.
pub async fn compare_peers(
    base: &BenchConfig,
    peers: &[Peer],
    shapes: &[Shape],
    rounds: usize,
    mut progress: impl FnMut(&PeerRun),
) -> Result<Comparison, BenchError> {
    if peers.is_empty() || shapes.is_empty() {
        return Err(BenchError::Config(
            "a comparison needs at least one peer and one shape".to_owned(),
        ));
    }
    let mut runs = Vec::new();
    for round in 1..=rounds.max(1) {
        for (s, shape) in shapes.iter().enumerate() {
            for i in 0..peers.len() {
                let peer = &peers[(i + round + s) % peers.len()];
                let config = BenchConfig {
                    target: peer.target.clone(),
                    producer_token: peer.token.clone(),
                    connections_per_user: shape.connections,
                    batch: shape.batch,
                    rate: shape.rate,
                    target_pid: peer.pid,
                    nodes: peer.nodes.clone(),
                    ..base.clone()
                };
                let run = PeerRun {
                    round,
                    shape: shape.to_string(),
                    peer: peer.name.clone(),
                    report: run(&config).await?,
                };
                progress(&run);
                runs.push(run);
            }
        }
    }
    Ok(Comparison {
        peers: peers.iter().map(|peer| peer.name.clone()).collect(),
        shapes: shapes.iter().map(Shape::to_string).collect(),
        runs,
    })
}

/// The medians of one shape on one peer, and its paired ratios against the first peer.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub shape: String,
    pub peer: String,
    pub deliveries_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// The median p99 of the producers' requests' round trips.
    pub answer_p99_us: f64,
    /// The median p99 of how late requests were sent against their due time, in an open loop.
    pub send_lag_p99_us: Option<f64>,
    /// The median p99 latency counted from when events were sent, in an open loop.
    pub from_sent_p99_us: Option<f64>,
    pub generator_cores: f64,
    pub peer_cores: Option<f64>,
    /// Deliveries per second of the peer's own CPU time (deliveries/s ÷ peer cores), when its
    /// pid was given: what the peer does with the CPU it got, which says more than deliveries/s
    /// on a machine where other work decides how much CPU that is.
    pub deliveries_per_peer_core: Option<f64>,
    /// Median over rounds of the first peer's deliveries per core ÷ this peer's.
    pub first_over_this_per_core: Option<f64>,
    /// Median over rounds of first peer's deliveries/s ÷ this peer's, in the same round (1.0
    /// for the first peer itself).
    pub first_over_this_deliveries: f64,
    /// Median over rounds of this peer's p99 ÷ the first peer's: above 1, the first is faster.
    pub this_over_first_p99: f64,
}

/// Deliveries per second per core of the server's CPU, when it was measured and not zero.
fn deliveries_per_core(report: &BenchReport) -> Option<f64> {
    report
        .target_cores
        .filter(|cores| *cores > 0.0)
        .map(|cores| report.deliveries_per_second / cores)
}

/// The middle value (the upper one of an even count); 0 when there is none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

impl Comparison {
    fn report(&self, round: usize, shape: &str, peer: &str) -> Option<&BenchReport> {
        self.runs
            .iter()
            .find(|run| run.round == round && run.shape == shape && run.peer == peer)
            .map(|run| &run.report)
    }

    /// One summary per shape and peer, in the order given.
    pub fn summaries(&self) -> Vec<Summary> {
        let rounds = self.runs.iter().map(|run| run.round).max().unwrap_or(0);
        let first = self.peers.first().map(String::as_str).unwrap_or_default();
        let mut out = Vec::new();
        for shape in &self.shapes {
            for peer in &self.peers {
                let own: Vec<&BenchReport> = (1..=rounds)
                    .filter_map(|round| self.report(round, shape, peer))
                    .collect();
                let of = |f: fn(&BenchReport) -> f64| median(own.iter().map(|r| f(r)).collect());
                let paired = |f: fn(&BenchReport, &BenchReport) -> f64| {
                    median(
                        (1..=rounds)
                            .filter_map(|round| {
                                let this = self.report(round, shape, peer)?;
                                Some(f(self.report(round, shape, first)?, this))
                            })
                            .filter(|ratio| ratio.is_finite())
                            .collect(),
                    )
                };
                let peer_cores: Vec<f64> = own.iter().filter_map(|r| r.target_cores).collect();
                let open_loop_p99 = |f: fn(&BenchReport) -> Option<&Percentiles>| {
                    let p99s: Vec<f64> = own
                        .iter()
                        .filter_map(|r| f(r))
                        .map(|p| p.p99 as f64)
                        .collect();
                    (!p99s.is_empty()).then(|| median(p99s))
                };
                let per_core: Vec<f64> =
                    own.iter().filter_map(|r| deliveries_per_core(r)).collect();
                let paired_per_core: Vec<f64> = (1..=rounds)
                    .filter_map(|round| {
                        let this = deliveries_per_core(self.report(round, shape, peer)?)?;
                        Some(deliveries_per_core(self.report(round, shape, first)?)? / this)
                    })
                    .collect();
                out.push(Summary {
                    shape: shape.clone(),
                    peer: peer.clone(),
                    deliveries_per_second: of(|r| r.deliveries_per_second),
                    p50_us: of(|r| r.latency_us.p50 as f64),
                    p99_us: of(|r| r.latency_us.p99 as f64),
                    answer_p99_us: of(|r| r.answer_us.p99 as f64),
                    send_lag_p99_us: open_loop_p99(|r| r.send_lag_us.as_ref()),
                    from_sent_p99_us: open_loop_p99(|r| r.latency_from_sent_us.as_ref()),
                    generator_cores: of(|r| r.generator_cores),
                    peer_cores: (!peer_cores.is_empty()).then(|| median(peer_cores)),
                    deliveries_per_peer_core: (!per_core.is_empty()).then(|| median(per_core)),
                    first_over_this_per_core: (!paired_per_core.is_empty())
                        .then(|| median(paired_per_core)),
                    first_over_this_deliveries: paired(|first, this| {
                        first.deliveries_per_second / this.deliveries_per_second
                    }),
                    this_over_first_p99: paired(|first, this| {
                        this.latency_us.p99 as f64 / first.latency_us.p99 as f64
                    }),
                });
            }
        }
        out
    }

    /// Whether any run lost, duplicated or misdelivered a frame.
    pub fn failed(&self) -> bool {
        self.runs.iter().any(|run| run.report.failed())
    }

    /// The summaries as a table, one line per shape and peer.
    pub fn table(&self) -> String {
        let first = self.peers.first().map(String::as_str).unwrap_or_default();
        let mut out = format!(
            "{:<16} {:<12} {:>12} {:>8} {:>8} {:>11} {:>11} {:>13} {:>9} {:>10} {:>13} {:>14} {:>14} {:>16}\n",
            "shape",
            "peer",
            "deliveries/s",
            "p50 µs",
            "p99 µs",
            "answer p99",
            "lag p99",
            "from sent p99",
            "gen cores",
            "peer cores",
            "per peer core",
            format!("{first}/peer"),
            format!("p99 peer/{first}"),
            format!("per core {first}/peer"),
        );
        for s in self.summaries() {
            let shown = |v: Option<f64>, digits: usize| {
                v.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
            };
            out.push_str(&format!(
                "{:<16} {:<12} {:>12.0} {:>8.0} {:>8.0} {:>11.0} {:>11} {:>13} {:>9.2} {:>10} {:>13} {:>14.3} {:>14.3} {:>16}\n",
                s.shape,
                s.peer,
                s.deliveries_per_second,
                s.p50_us,
                s.p99_us,
                s.answer_p99_us,
                shown(s.send_lag_p99_us, 0),
                shown(s.from_sent_p99_us, 0),
                s.generator_cores,
                shown(s.peer_cores, 2),
                shown(s.deliveries_per_peer_core, 0),
                s.first_over_this_deliveries,
                s.this_over_first_p99,
                shown(s.first_over_this_per_core, 3),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Percentiles;

    #[test]
    fn shapes_parse_print_and_refuse_nonsense() {
        let shape: Shape = "3x50".parse().unwrap();
        assert_eq!((shape.connections, shape.batch, shape.rate), (3, 50, None));
        assert_eq!(shape.to_string(), "3c b50");
        let shape: Shape = "1x1@20000".parse().unwrap();
        assert_eq!(shape.rate, Some(20000.0));
        assert_eq!(shape.to_string(), "1c b1 @20000/s");
        for bad in ["3", "0x1", "1x0", "ax1", "1x1@", "1x1@-5", "1x1@inf"] {
            let error = bad.parse::<Shape>().unwrap_err();
            assert!(error.to_string().contains("CxB"), "{bad}: {error}");
        }
        assert_eq!(Shape::issue16().len(), 6);
    }

    #[test]
    fn peers_parse_with_their_options() {
        let peer = Peer::parse("bun=127.0.0.1:8091,pid=42", "t").unwrap();
        assert_eq!(
            peer,
            Peer {
                name: "bun".into(),
                target: "127.0.0.1:8091".into(),
                nodes: Vec::new(),
                token: "t".into(),
                pid: Some(42)
            }
        );
        let peer = Peer::parse("sy=127.0.0.1:8080,token=abc", "t").unwrap();
        assert_eq!(peer.token, "abc");
        let fleet = Peer::parse("fleet=127.0.0.1:8080+127.0.0.1:8081,pid=7", "t").unwrap();
        assert_eq!(
            (fleet.target.as_str(), fleet.nodes, fleet.pid),
            ("127.0.0.1:8080", vec!["127.0.0.1:8081".to_owned()], Some(7))
        );
        for bad in [
            "bun",
            "=127.0.0.1:1",
            "bun=nowhere",
            "bun=h:1,pid=x",
            "bun=h:1,color=red",
            "bun=h:1+",
            "bun=h:1+nowhere",
        ] {
            let error = Peer::parse(bad, "t").unwrap_err();
            assert!(
                error.to_string().contains("NAME=HOST:PORT"),
                "{bad}: {error}"
            );
        }
    }

    fn report(deliveries: f64, p99: u64, cores: f64) -> BenchReport {
        BenchReport {
            route: crate::Route::Broadcast,
            users: 1,
            connections_per_user: 1,
            producers: 1,
            seconds: 1.0,
            events_published: 0,
            frames_received: 0,
            deliveries_per_second: deliveries,
            events_per_second: deliveries,
            lost: 0,
            duplicated: 0,
            foreign: 0,
            latency_us: Percentiles {
                p99,
                ..Percentiles::default()
            },
            answer_us: Percentiles::default(),
            send_lag_us: None,
            latency_from_sent_us: None,
            generator_cores: 0.5,
            target_cores: Some(cores),
        }
    }

    #[test]
    fn ratios_pair_runs_of_the_same_round() {
        // Round 1 is fast for both, round 3 slow for both: the paired ratio stays 2.0 although
        // the ratio of the medians (200 / 150) would not.
        let runs = [(1, 400.0, 200.0), (2, 200.0, 100.0), (3, 100.0, 50.0)]
            .into_iter()
            .flat_map(|(round, a, b)| {
                // b always got half a core, a a whole one.
                [("a", a, 1000, 1.0), ("b", b, 3000, 0.5)].map(|(peer, d, p99, cores)| PeerRun {
                    round,
                    shape: "1c b1".into(),
                    peer: peer.into(),
                    report: report(d, p99, cores),
                })
            })
            .collect();
        let comparison = Comparison {
            peers: vec!["a".into(), "b".into()],
            shapes: vec!["1c b1".into()],
            runs,
        };
        let summaries = comparison.summaries();
        assert_eq!(summaries[0].first_over_this_deliveries, 1.0);
        assert_eq!(summaries[1].deliveries_per_second, 100.0);
        assert_eq!(summaries[1].first_over_this_deliveries, 2.0);
        assert_eq!(summaries[1].this_over_first_p99, 3.0);
        // Per core of its own CPU, b did as much as a.
        assert_eq!(summaries[1].deliveries_per_peer_core, Some(200.0));
        assert_eq!(summaries[1].first_over_this_per_core, Some(1.0));
        assert!(
            comparison.table().contains("a/peer"),
            "{}",
            comparison.table()
        );
    }
}
