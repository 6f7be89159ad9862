//! One load run: clients that check every frame they receive, producers in a closed or an open
//! loop, and the tally of what the clients saw.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use hyper::Method;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::cpu::CpuClock;
use crate::wire::{Connection, Socket, connect_client};
use crate::{BenchConfig, BenchError, BenchReport, Count, Percentiles, histogram, record};

/// What one connection, or the whole run, saw.
struct Tally {
    received: u64,
    lost: u64,
    duplicated: u64,
    foreign: u64,
    latencies_us: Histogram<Count>,
    /// In an open loop, the latency counted from when the event was sent, not when it was due.
    from_sent_us: Histogram<Count>,
}

/// What one client task returns: its user's index, the last sequence number it saw, its tally.
type ClientEnd = (usize, u64, Tally);

/// What one producer task returns: for each of its users' index, how many events it sent them,
/// and how its requests went.
type ProducerEnd = Result<(Vec<(usize, u64)>, Requests), BenchError>;

/// How one producer's requests, or all of them, went.
struct Requests {
    /// Each request's round trip.
    answer_us: Histogram<Count>,
    /// Each request's start against its due time (open loop only).
    lag_us: Histogram<Count>,
}

impl Requests {
    fn new() -> Requests {
        Requests {
            answer_us: histogram(),
            lag_us: histogram(),
        }
    }

    fn add(&mut self, other: &Requests) -> Result<(), BenchError> {
        let merged = self
            .answer_us
            .add(&other.answer_us)
            .and_then(|()| self.lag_us.add(&other.lag_us));
        merged.map_err(|e| BenchError::Config(format!("merging request times: {e}")))
    }
}

/// Runs one measurement.
pub async fn run(config: &BenchConfig) -> Result<BenchReport, BenchError> {
    validate(config)?;
    let epoch = Instant::now();
    let users: Vec<String> = (0..config.users).map(|n| format!("bench-{n:05}")).collect();
    let stop = CancellationToken::new();
    let mut clients = Vec::new();
    // Round-robin over the fleet's nodes, connection by connection, so a user with several
    // connections has them on several nodes.
    let gateways = config.gateways();
    let mut next_gateway = gateways.iter().cycle();
    for (index, user) in users.iter().enumerate() {
        for _ in 0..config.connections_per_user {
            let gateway = next_gateway
                .next()
                .expect("a cycle over at least the target");
            let socket = connect_client(gateway, user).await?;
            clients.push(tokio::spawn(receive(socket, index, epoch, stop.clone())));
        }
    }
    let published = Arc::new(AtomicU64::new(0));
    let generator_cpu = CpuClock::start("self".to_owned())?;
    let target_cpu = config
        .target_pid
        .map(|pid| CpuClock::start(pid.to_string()))
        .transpose()?;
    let started = Instant::now();
    let producers = start_producers(config, &users, epoch, &published)?;
    let mut last_seq = vec![0u64; config.users];
    let mut requests = Requests::new();
    for producer in producers {
        let (sent, theirs) = producer.await??;
        for (index, n) in sent {
            last_seq[index] = n;
        }
        requests.add(&theirs)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let generator_cores = generator_cpu.cores(seconds)?;
    let target_cores = target_cpu.map(|clock| clock.cores(seconds)).transpose()?;
    // Let the last frames arrive, then stop the clients.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let tally = collect(clients, &last_seq).await?;
    let events_published = published.load(Ordering::Acquire);
    Ok(BenchReport {
        route: config.route,
        users: config.users,
        connections_per_user: config.connections_per_user,
        producers: n_producers(config),
        seconds,
        events_published,
        frames_received: tally.received,
        deliveries_per_second: tally.received as f64 / seconds,
        events_per_second: events_published as f64 / seconds,
        lost: tally.lost,
        duplicated: tally.duplicated,
        foreign: tally.foreign,
        latency_us: Percentiles::of(&tally.latencies_us),
        answer_us: Percentiles::of(&requests.answer_us),
        // Measured, not assumed from the loop: a closed loop records neither.
        send_lag_us: measured(&requests.lag_us),
        latency_from_sent_us: measured(&tally.from_sent_us),
        generator_cores,
        target_cores,
    })
}

/// The percentiles of a histogram that recorded something, or `None`.
fn measured(histogram: &Histogram<Count>) -> Option<Percentiles> {
    (!histogram.is_empty()).then(|| Percentiles::of(histogram))
}

fn validate(config: &BenchConfig) -> Result<(), BenchError> {
    if config
        .rate
        .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
    {
        return Err(BenchError::Config(
            "the rate must be a positive number of events per second".to_owned(),
        ));
    }
    if config.users == 0 || config.connections_per_user == 0 {
        return Err(BenchError::Config(
            "users and connections must be at least 1".to_owned(),
        ));
    }
    Ok(())
}

/// No more producers than users: each user belongs to one producer.
fn n_producers(config: &BenchConfig) -> usize {
    config.producers.clamp(1, config.users.max(1))
}

/// Starts the producers, each owning every P-th user, and in an open loop the pacer that hands
/// them their due times.
fn start_producers(
    config: &BenchConfig,
    users: &[String],
    epoch: Instant,
    published: &Arc<AtomicU64>,
) -> Result<Vec<JoinHandle<ProducerEnd>>, BenchError> {
    let n_producers = n_producers(config);
    let deadline = Instant::now() + config.duration;
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
            .map_err(|e| BenchError::Config(format!("starting the pacer thread: {e}")))?;
    }
    let producers = schedules
        .into_iter()
        .enumerate()
        .map(|(producer, schedule)| {
            let owned: Vec<(usize, String)> = users
                .iter()
                .enumerate()
                .filter(|(index, _)| index % n_producers == producer)
                .map(|(index, user)| (index, user.clone()))
                .collect();
            let producer = Producer {
                pick: NodePick::new(producer as u64),
                config: config.clone(),
                owned,
                padding: "x".repeat(config.padding),
                epoch,
                deadline,
                published: Arc::clone(published),
            };
            tokio::spawn(producer.publish(schedule))
        });
    Ok(producers.collect())
}

/// Adds up the clients' tallies once they have stopped.
async fn collect(
    clients: Vec<JoinHandle<ClientEnd>>,
    last_seq: &[u64],
) -> Result<Tally, BenchError> {
    let mut tally = Tally::new();
    for client in clients {
        let (index, seen, t) = client.await?;
        tally.received += t.received;
        tally.duplicated += t.duplicated;
        tally.foreign += t.foreign;
        // Events published after a connection's last frame were lost too.
        tally.lost += t.lost + last_seq[index].saturating_sub(seen);
        tally
            .latencies_us
            .add(&t.latencies_us)
            .and_then(|()| tally.from_sent_us.add(&t.from_sent_us))
            .map_err(|e| BenchError::Config(format!("merging latencies: {e}")))?;
    }
    Ok(tally)
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

/// One producer: its users (index and id), and what it shares with the run.
struct Producer {
    /// Which gateway of the fleet takes its next request.
    pick: NodePick,
    config: BenchConfig,
    owned: Vec<(usize, String)>,
    /// `config.padding` bytes of `x`, made once.
    padding: String,
    epoch: Instant,
    deadline: Instant,
    published: Arc<AtomicU64>,
}

impl Producer {
    /// Publishes to its users in turn: as fast as answers come back until the deadline, or,
    /// with a schedule, one burst at each due time it is handed. Returns the number of events
    /// sent to each user.
    async fn publish(
        mut self,
        mut schedule: Option<mpsc::UnboundedReceiver<Instant>>,
    ) -> ProducerEnd {
        let mut requests = Requests::new();
        if self.owned.is_empty() {
            return Ok((Vec::new(), requests));
        }
        let mut connections = Vec::new();
        for gateway in self.config.gateways() {
            connections.push(Connection::open(gateway).await?);
        }
        let endpoint = self.config.route.endpoint_for(self.config.batch);
        let mut sent = vec![0u64; self.owned.len()];
        let mut turn = 0;
        let mut body = String::new();
        loop {
            // Open loop: an event's latency counts from when it was due, not from when a late
            // producer got round to sending it.
            let due = match &mut schedule {
                // Past the deadline, a producer that fell behind stops like the rest; what it
                // did not send was never published, so nothing is counted lost for it.
                Some(schedule) => match schedule.recv().await {
                    Some(due) if Instant::now() < self.deadline => Some(due),
                    _ => break,
                },
                None if Instant::now() >= self.deadline => break,
                None => None,
            };
            let sending = Instant::now();
            let since_epoch = |at: Instant| at.duration_since(self.epoch).as_micros() as u64;
            // In an open loop the events also carry when they were sent, so what the generator
            // added by sending late can be told from the rest of the latency.
            let stamps = match due {
                Some(due) => {
                    record(
                        &mut requests.lag_us,
                        sending.saturating_duration_since(due).as_micros() as u64,
                    );
                    Stamps {
                        due: since_epoch(due),
                        sent: Some(since_epoch(sending)),
                    }
                }
                None => Stamps {
                    due: since_epoch(sending),
                    sent: None,
                },
            };
            self.write_body(&mut body, stamps, &mut turn, &mut sent);
            // One request at a time per producer, each answered after the event was ordered
            // (in a fleet: after Redis ran its publish script), so a user's sequence numbers
            // stay in order whichever nodes take the requests.
            let pick = self.pick.below(connections.len());
            let connection = &mut connections[pick];
            let answer = connection
                .send(
                    Method::POST,
                    &endpoint,
                    &self.config.producer_token,
                    Bytes::copy_from_slice(body.as_bytes()),
                )
                .await?;
            record(
                &mut requests.answer_us,
                sending.elapsed().as_micros() as u64,
            );
            if !answer.status.is_success() {
                return Err(BenchError::Refused {
                    what: format!("POST {endpoint}"),
                    status: answer.status.as_u16(),
                    body: String::from_utf8_lossy(&answer.body).into_owned(),
                });
            }
            self.published
                .fetch_add(self.config.batch.max(1) as u64, Ordering::Relaxed);
        }
        let sent = self
            .owned
            .iter()
            .map(|(index, _)| *index)
            .zip(sent)
            .collect();
        Ok((sent, requests))
    }

    /// Writes one request's body into `body`: the next `batch` events of the producer's users in
    /// turn, each numbered in its user's sequence and stamped with `stamps`.
    fn write_body(&self, body: &mut String, stamps: Stamps, turn: &mut usize, sent: &mut [u64]) {
        use std::fmt::Write as _;
        let mut sent_at = String::new();
        if let Some(at) = stamps.sent {
            // Writing to a String cannot fail.
            let _ = write!(sent_at, r#","s":{at}"#);
        }
        let stamp = stamps.due;
        let batch = self.config.batch.max(1);
        let padding = &self.padding;
        body.clear();
        if batch > 1 {
            body.push('[');
        }
        for item in 0..batch {
            let slot = *turn % self.owned.len();
            *turn += 1;
            let (index, user) = &self.owned[slot];
            sent[slot] += 1;
            if item > 0 {
                body.push(',');
            }
            let event = format_args!(
                r#"{{"type":"agent_thinking","u":{index},"seq":{},"t":{stamp}{sent_at},"pad":"{padding}"}}"#,
                sent[slot]
            );
            self.config.route.write_item(body, user, event);
        }
        if batch > 1 {
            body.push(']');
        }
    }
}

/// A producer's choice of gateway for each request: xorshift64*, seeded per producer so that
/// runs repeat. Every request goes to the one gateway when there is one.
struct NodePick(u64);

impl NodePick {
    fn new(producer: u64) -> NodePick {
        NodePick(0x9E37_79B9_7F4A_7C15 ^ (producer + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9))
    }

    /// A number below `n` (`n` ≥ 1).
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
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
    s: Option<u64>,
}

/// The times an event is stamped with, in µs since the run's epoch: when it was due (in a
/// closed loop, when it was sent) and, in an open loop, when it was sent.
#[derive(Clone, Copy)]
struct Stamps {
    due: u64,
    sent: Option<u64>,
}

/// Reads one connection's frames until told to stop, then until it has been quiet for 100 ms
/// (frames still on their way are counted, not taken for lost).
async fn receive(
    mut socket: Socket,
    user_index: usize,
    epoch: Instant,
    stop: CancellationToken,
) -> ClientEnd {
    let mut tally = Tally::new();
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
    fn new() -> Tally {
        Tally {
            received: 0,
            lost: 0,
            duplicated: 0,
            foreign: 0,
            latencies_us: histogram(),
            from_sent_us: histogram(),
        }
    }

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
        let now = epoch.elapsed().as_micros() as u64;
        if let Some(due) = frame.t {
            record(&mut self.latencies_us, now.saturating_sub(due));
        }
        if let Some(sent) = frame.s {
            record(&mut self.from_sent_us, now.saturating_sub(sent));
        }
    }
}
