//! The load generator behind `switchyard bench`: real WebSocket clients and keep-alive HTTP
//! producers against a running gateway, measuring what its users would see.
//!
//! U users × C connections connect with `?user_id=` (a `--dev` gateway). P producers publish
//! numbered events, each user owned by one producer so that its events carry consecutive
//! sequence numbers; every connection checks that it receives each of its user's events exactly
//! once, in order, and nothing of anyone else's. Latency is publish → receive, from one clock
//! (generator and clients share the process). Everything measured is reported, including the
//! frames that must be zero: lost, duplicated, foreign.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// `host:port` of the gateway's public listener.
    pub target: String,
    pub producer_token: String,
    /// Route name: router_broadcast, scoped_broadcast, user_event or broadcast.
    pub route: String,
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
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub route: String,
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
}

/// Publish → receive latency percentiles, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    fn from_samples(mut samples: Vec<u64>) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: *samples.last().unwrap_or(&0),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("connecting client {user}: {message}")]
    Connect { user: String, message: String },
    #[error("publishing: {0}")]
    Publish(String),
    #[error("{0}")]
    Config(&'static str),
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    received: u64,
    lost: u64,
    duplicated: u64,
    foreign: u64,
    latencies_us: Vec<u64>,
}

/// Runs one measurement.
pub async fn run(config: &BenchConfig) -> Result<BenchReport, BenchError> {
    if config
        .rate
        .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
    {
        return Err(BenchError::Config(
            "the rate must be a positive number of events per second",
        ));
    }
    if config.users == 0 || config.connections_per_user == 0 {
        return Err(BenchError::Config(
            "users and connections must be at least 1",
        ));
    }
    let epoch = Instant::now();
    let users: Vec<String> = (0..config.users).map(|n| format!("bench-{n:05}")).collect();
    let stop = CancellationToken::new();
    let mut receivers = Vec::new();
    for (index, user) in users.iter().enumerate() {
        for _ in 0..config.connections_per_user {
            let url = format!("ws://{}/ws?user_id={user}", config.target);
            let (mut socket, _) =
                tokio_tungstenite::connect_async(&url)
                    .await
                    .map_err(|error| BenchError::Connect {
                        user: user.clone(),
                        message: error.to_string(),
                    })?;
            // A connection receives events once registered, which its greeting confirms; the
            // upgrade response alone comes before that.
            wait_for_greeting(&mut socket)
                .await
                .map_err(|message| BenchError::Connect {
                    user: user.clone(),
                    message,
                })?;
            receivers.push(tokio::spawn(receive(socket, index, epoch, stop.clone())));
        }
    }
    let published = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + config.duration;
    let mut producers = Vec::new();
    let n_producers = config.producers.clamp(1, config.users.max(1));
    // Open loop: a pacer thread hands each producer in turn the time its next burst is due.
    let mut schedules: Vec<Option<mpsc::UnboundedReceiver<Instant>>> =
        (0..n_producers).map(|_| None).collect();
    if let Some(rate) = config.rate {
        let mut senders = Vec::with_capacity(n_producers);
        for schedule in &mut schedules {
            let (sender, receiver) = mpsc::unbounded_channel();
            senders.push(sender);
            *schedule = Some(receiver);
        }
        let batch = config.batch.max(1);
        std::thread::Builder::new()
            .name("bench-pacer".to_owned())
            .spawn(move || pace(rate, batch, deadline, &senders))
            .map_err(|e| BenchError::Publish(e.to_string()))?;
    }
    for (producer, schedule) in schedules.into_iter().enumerate() {
        let owned: Vec<(usize, String)> = users
            .iter()
            .enumerate()
            .filter(|(index, _)| index % n_producers == producer)
            .map(|(index, user)| (index, user.clone()))
            .collect();
        producers.push(tokio::spawn(publish(
            config.clone(),
            owned,
            epoch,
            deadline,
            schedule,
            Arc::clone(&published),
        )));
    }
    let started = Instant::now();
    let mut last_seq = vec![0u64; config.users];
    for producer in producers {
        let sent = producer
            .await
            .map_err(|e| BenchError::Publish(e.to_string()))??;
        for (index, n) in sent {
            last_seq[index] = n;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // Let the last frames arrive, then stop the clients.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let mut tally = Tally::default();
    let mut per_connection = Vec::new();
    for receiver in receivers {
        let (index, seen, t) = receiver
            .await
            .map_err(|e| BenchError::Publish(e.to_string()))?;
        per_connection.push((index, seen));
        tally.received += t.received;
        tally.duplicated += t.duplicated;
        tally.foreign += t.foreign;
        tally.lost += t.lost;
        tally.latencies_us.extend(t.latencies_us);
    }
    // Events published after a connection's last frame were lost too.
    for (index, seen) in per_connection {
        tally.lost += last_seq[index].saturating_sub(seen);
    }
    let events_published = published.load(Ordering::Acquire);
    Ok(BenchReport {
        route: config.route.clone(),
        users: config.users,
        connections_per_user: config.connections_per_user,
        producers: n_producers,
        seconds,
        events_published,
        frames_received: tally.received,
        deliveries_per_second: tally.received as f64 / seconds,
        events_per_second: events_published as f64 / seconds,
        lost: tally.lost,
        duplicated: tally.duplicated,
        foreign: tally.foreign,
        latency_us: Percentiles::from_samples(tally.latencies_us),
    })
}

/// The open loop's clock: burst k (of `batch` events) is due at start + k × batch / rate, and
/// goes to producer k mod P. A thread that sleeps with the OS's fine-grained timer rather than a
/// tokio sleep, whose millisecond granularity would add up to a millisecond to every latency
/// measured from the due time. A producer still busy with its last request finds its next
/// due time waiting, so a stall shows in the latency instead of hiding.
fn pace(rate: f64, batch: usize, deadline: Instant, producers: &[mpsc::UnboundedSender<Instant>]) {
    let start = Instant::now();
    for burst in 0u64.. {
        let due = start + Duration::from_secs_f64((burst * batch as u64) as f64 / rate);
        if due >= deadline {
            return;
        }
        let now = Instant::now();
        if due > now {
            // Its own thread, never a runtime worker: blocking is the point here.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(due - now);
        }
        let producer = &producers[(burst % producers.len() as u64) as usize];
        if producer.send(due).is_err() {
            return;
        }
    }
}

/// Publishes to the users this producer owns, in turn: as fast as answers come back until the
/// deadline, or, with a schedule, one burst at each due time it is handed. Returns the number
/// of events sent to each user.
async fn publish(
    config: BenchConfig,
    owned: Vec<(usize, String)>,
    epoch: Instant,
    deadline: Instant,
    mut schedule: Option<mpsc::UnboundedReceiver<Instant>>,
    published: Arc<AtomicU64>,
) -> Result<Vec<(usize, u64)>, BenchError> {
    if owned.is_empty() {
        return Ok(Vec::new());
    }
    let stream = TcpStream::connect(&config.target)
        .await
        .map_err(|e| BenchError::Publish(e.to_string()))?;
    stream.set_nodelay(true).ok();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| BenchError::Publish(e.to_string()))?;
    tokio::spawn(connection);
    let endpoint = match config.route.as_str() {
        "router_broadcast" => "/v1/legacy/router/broadcast",
        "scoped_broadcast" => "/v1/legacy/scoped/broadcast",
        "user_event" => "/v1/legacy/user-event",
        _ => "/v1/broadcast",
    };
    let batch = config.batch.max(1);
    let endpoint = if batch > 1 {
        format!("{endpoint}/batch")
    } else {
        endpoint.to_owned()
    };
    let padding = "x".repeat(config.padding);
    let scoped = matches!(config.route.as_str(), "scoped_broadcast" | "user_event");
    let mut body = String::new();
    let mut sent = vec![0u64; owned.len()];
    let mut turn = 0;
    loop {
        // Open loop: an event's latency counts from when it was due, not from when a late
        // producer got round to sending it.
        let due = match &mut schedule {
            // Past the deadline, a producer that fell behind stops like the rest; what it
            // did not send was never published, so nothing is counted lost for it.
            Some(schedule) => match schedule.recv().await {
                Some(due) if Instant::now() < deadline => Some(due),
                _ => break,
            },
            None if Instant::now() >= deadline => break,
            None => None,
        };
        let stamp = due
            .unwrap_or_else(Instant::now)
            .duration_since(epoch)
            .as_micros() as u64;
        // Written by hand rather than through serde_json::Value: the generator shares the two
        // cores with the gateway, so every microsecond it spends is one the gateway loses.
        body.clear();
        if batch > 1 {
            body.push('[');
        }
        for item in 0..batch {
            let slot = turn % owned.len();
            turn += 1;
            let (index, user) = &owned[slot];
            sent[slot] += 1;
            if item > 0 {
                body.push(',');
            }
            let event = format_args!(
                r#"{{"type":"agent_thinking","u":{index},"seq":{},"t":{stamp},"pad":"{padding}"}}"#,
                sent[slot]
            );
            // User ids are bench-NNNNN: nothing in them needs escaping.
            // Writing to a String cannot fail.
            let _ = if scoped {
                write!(
                    body,
                    r#"{{"user_context":{{"user_id":"{user}","thread_id":"bench","run_id":"bench"}},"event":{event}}}"#
                )
            } else {
                write!(body, r#"{{"user_id":"{user}","event":{event}}}"#)
            };
        }
        if batch > 1 {
            body.push(']');
        }
        sender
            .ready()
            .await
            .map_err(|e| BenchError::Publish(e.to_string()))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(&endpoint)
            .header("host", &config.target)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", config.producer_token))
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .map_err(|e| BenchError::Publish(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| BenchError::Publish(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| BenchError::Publish(e.to_string()))?;
        if !status.is_success() {
            return Err(BenchError::Publish(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body.to_bytes())
            )));
        }
        published.fetch_add(batch as u64, Ordering::Relaxed);
    }
    Ok(owned.iter().map(|(index, _)| *index).zip(sent).collect())
}

async fn wait_for_greeting(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
) -> Result<(), String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Err(_) => return Err("no connection_established within 10 s".to_owned()),
            Ok(None) => return Err("closed before connection_established".to_owned()),
            Ok(Some(Err(error))) => return Err(error.to_string()),
            Ok(Some(Ok(Message::Text(text)))) if text.contains("connection_established") => {
                return Ok(());
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// The fields of a frame the generator checks; everything else (the padding) is skipped
/// without being copied.
#[derive(Deserialize)]
struct BenchFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    u: Option<u64>,
    seq: Option<u64>,
    t: Option<u64>,
}

/// Reads one connection's frames until told to stop, then until it has been quiet for 100 ms
/// (frames still on their way are counted, not taken for lost); returns its user, the last
/// sequence number seen, and its tally.
async fn receive(
    mut socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    user_index: usize,
    epoch: Instant,
    stop: CancellationToken,
) -> (usize, u64, Tally) {
    let mut tally = Tally::default();
    let mut last_seq = 0u64;
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let message = tokio::select! {
            biased;
            next = socket.next() => match next {
                None | Some(Err(_)) => return (user_index, last_seq, tally),
                Some(Ok(message)) => message,
            },
            () = &mut stopped => break,
        };
        tally.frame(&message, user_index, &mut last_seq, epoch);
    }
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(100), socket.next()).await
    {
        tally.frame(&message, user_index, &mut last_seq, epoch);
    }
    (user_index, last_seq, tally)
}

impl Tally {
    /// Counts one received frame of the connection of user `user_index`.
    fn frame(&mut self, message: &Message, user_index: usize, last_seq: &mut u64, epoch: Instant) {
        let Message::Text(text) = message else {
            return;
        };
        let frame = match serde_json::from_str::<BenchFrame>(text) {
            Ok(frame) => frame,
            // One of ours, mangled: it cannot be attributed to this user, so it counts against
            // the run rather than vanishing.
            Err(_) if text.contains("agent_thinking") => {
                self.received += 1;
                self.foreign += 1;
                return;
            }
            Err(_) => return,
        };
        if frame.kind != "agent_thinking" {
            return;
        }
        self.received += 1;
        if frame.u != Some(user_index as u64) {
            self.foreign += 1;
            return;
        }
        let seq = frame.seq.unwrap_or(0);
        if seq <= *last_seq {
            self.duplicated += 1;
            return;
        }
        self.lost += seq - *last_seq - 1;
        *last_seq = seq;
        if let Some(sent_at) = frame.t {
            let now = epoch.elapsed().as_micros() as u64;
            self.latencies_us.push(now.saturating_sub(sent_at));
        }
    }
}

/// A readable table of reports, one line each.
pub fn table(reports: &[(String, BenchReport)]) -> String {
    let mut out = format!(
        "{:<14} {:>12} {:>10} {:>8} {:>8} {:>8} {:>9} {:>8} {:>5} {:>5} {:>7}\n",
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
        "foreign"
    );
    for (label, r) in reports {
        out.push_str(&format!(
            "{:<14} {:>12.0} {:>10.0} {:>8} {:>8} {:>8} {:>9} {:>8} {:>5} {:>5} {:>7}\n",
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
            r.foreign
        ));
    }
    out
}

/// Opens `n` idle connections (spread over `users` users) and measures the gateway's resident
/// memory before and after, from `/proc/<pid>/status`. Returns (RSS before, RSS after) in KiB.
pub async fn idle_rss(
    target: &str,
    gateway_pid: u32,
    n: usize,
    users: usize,
) -> Result<(u64, u64), BenchError> {
    let before = rss_kib(gateway_pid).map_err(BenchError::Publish)?;
    let mut sockets = Vec::with_capacity(n);
    for i in 0..n {
        let user = format!("idle-{:05}", i % users.max(1));
        let url = format!("ws://{target}/ws?user_id={user}");
        let (mut socket, _) = tokio_tungstenite::connect_async(&url)
            .await
            .map_err(|error| BenchError::Connect {
                user: user.clone(),
                message: error.to_string(),
            })?;
        wait_for_greeting(&mut socket)
            .await
            .map_err(|message| BenchError::Connect { user, message })?;
        sockets.push(socket);
    }
    // Let allocations settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(gateway_pid).map_err(BenchError::Publish)?;
    drop(sockets);
    Ok((before, after))
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|error| format!("reading /proc/{pid}/status: {error}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Flips `route` between 0% and 100% SSOT `n` times through the admin API. After each flip
/// answers, publishes one event and checks that it took the new path. Returns each flip's round
/// trip in microseconds, and how many next events still took the old path (must be 0).
pub async fn flip_latency(
    target: &str,
    admin_url: &str,
    admin_token: &str,
    producer_token: &str,
    route: &str,
    n: usize,
) -> Result<(Percentiles, u64), BenchError> {
    let mut round_trips = Vec::with_capacity(n);
    let mut stale = 0;
    for i in 0..n {
        let percent = if i % 2 == 0 { 100 } else { 0 };
        let started = Instant::now();
        let (status, text) = crate::cli::admin_request(crate::cli::AdminCall {
            base_url: admin_url,
            token: admin_token,
            method: Method::PATCH,
            path: format!("/admin/flags/routes/{route}"),
            body: Some(json!({"ssot_percent": percent, "reason": "flip latency benchmark"})),
            if_match: None,
        })
        .await
        .map_err(BenchError::Publish)?;
        round_trips.push(started.elapsed().as_micros() as u64);
        if status != 200 {
            return Err(BenchError::Publish(format!("flip: HTTP {status}: {text}")));
        }
        let expected = if percent == 100 { "ssot" } else { "legacy" };
        let body = json!({"user_id": "flip-probe", "event": {"type": "probe"}});
        let path = publish_once(target, producer_token, route, &body).await?;
        if path != expected {
            stale += 1;
        }
    }
    Ok((Percentiles::from_samples(round_trips), stale))
}

/// Publishes one event on a fresh connection; returns the `X-Switchyard-Path` of the answer.
async fn publish_once(
    target: &str,
    producer_token: &str,
    route: &str,
    body: &Value,
) -> Result<String, BenchError> {
    let endpoint = match route {
        "router_broadcast" => "/v1/legacy/router/broadcast",
        _ => "/v1/broadcast",
    };
    let stream = TcpStream::connect(target)
        .await
        .map_err(|e| BenchError::Publish(e.to_string()))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| BenchError::Publish(e.to_string()))?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(Method::POST)
        .uri(endpoint)
        .header("host", target)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {producer_token}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| BenchError::Publish(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| BenchError::Publish(e.to_string()))?;
    Ok(response
        .headers()
        .get("x-switchyard-path")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let p = Percentiles::from_samples((1..=1000).collect());
        assert_eq!((p.p50, p.p90, p.p99, p.max), (501, 900, 990, 1000));
        assert_eq!(Percentiles::from_samples(Vec::new()).max, 0);
    }
}
