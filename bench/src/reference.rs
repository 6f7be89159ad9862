//! The loopback reference: what this box delivers when the "server" does nothing but write one
//! WebSocket frame per `write()` (issue 16's target for batches is half of it). One OS thread
//! writes ~200-byte text frames round-robin over the connections, each frame its own blocking
//! `write`; the generator's runtime reads them, one task per connection as in a load run, and
//! counts whole frames. No parsing, no HTTP, no queues: the ceiling of the one-syscall-per-frame
//! design on this machine, measured in the same session as the gateway.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::BenchError;
use crate::cpu::CpuClock;

/// A frame's payload length: the load runs' events with `--padding 120` are about this long.
const PAYLOAD_BYTES: usize = 200;

/// A whole frame: two header bytes, the 16-bit length, the payload.
const FRAME_BYTES: usize = 4 + PAYLOAD_BYTES;

/// What a reference run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReferenceReport {
    pub connections: usize,
    pub seconds: f64,
    /// Whole frames read, per second.
    pub deliveries_per_second: f64,
    /// The whole process (writer thread and readers) in cores.
    pub cores: f64,
}

/// Writes frames over `connections` loopback connections for `duration` and reports how many
/// arrived.
pub async fn loopback_reference(
    connections: usize,
    duration: Duration,
) -> Result<ReferenceReport, BenchError> {
    let io = |what: &str, error: std::io::Error| BenchError::Config(format!("{what}: {error}"));
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| io("binding", e))?;
    let address = listener.local_addr().map_err(|e| io("binding", e))?;
    let mut writers = Vec::with_capacity(connections);
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        let writer = TcpStream::connect(address).map_err(|e| io("connecting", e))?;
        writer.set_nodelay(true).map_err(|e| io("TCP_NODELAY", e))?;
        let (reader, _) = listener.accept().map_err(|e| io("accepting", e))?;
        reader
            .set_nonblocking(true)
            .map_err(|e| io("non-blocking", e))?;
        let reader = tokio::net::TcpStream::from_std(reader).map_err(|e| io("registering", e))?;
        writers.push(writer);
        readers.push(tokio::spawn(read_all(reader, Arc::clone(&received))));
    }
    let frame = frame();
    let stop = Arc::new(AtomicBool::new(false));
    let cpu = CpuClock::start("self".to_owned())?;
    let started = Instant::now();
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || write_round_robin(writers, &frame, &stop))
    };
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Release);
    // The writer drops every connection when it stops, which ends the readers.
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    for reader in readers {
        reader.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let frames = received.load(Ordering::Acquire) / FRAME_BYTES as u64;
    Ok(ReferenceReport {
        connections,
        seconds,
        deliveries_per_second: frames as f64 / seconds,
        cores: cpu.cores(seconds)?,
    })
}

/// One unmasked text frame of [`PAYLOAD_BYTES`], as a server sends it.
fn frame() -> Vec<u8> {
    let mut frame = vec![0x81, 126];
    frame.extend_from_slice(&(PAYLOAD_BYTES as u16).to_be_bytes());
    frame.resize(FRAME_BYTES, b'x');
    frame
}

/// Until `stop`, one `write` per frame, connection after connection.
fn write_round_robin(mut writers: Vec<TcpStream>, frame: &[u8], stop: &AtomicBool) {
    'writing: while !stop.load(Ordering::Acquire) {
        for writer in &mut writers {
            if writer.write_all(frame).is_err() {
                break 'writing;
            }
        }
    }
}

/// Reads a connection to its end, adding up the bytes.
async fn read_all(mut reader: tokio::net::TcpStream, received: Arc<AtomicU64>) {
    let mut buffer = vec![0u8; 4096];
    while let Ok(n @ 1..) = reader.read(&mut buffer).await {
        received.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_a_text_frame_with_a_16_bit_length() {
        let frame = frame();
        assert_eq!(frame.len(), 204);
        assert_eq!(&frame[..4], &[0x81, 126, 0, 200]);
    }

    #[tokio::test]
    async fn frames_written_are_counted_once_read() {
        let report = loopback_reference(4, Duration::from_millis(200))
            .await
            .unwrap();
        assert_eq!(report.connections, 4);
        assert!(report.deliveries_per_second > 0.0, "{report:?}");
    }
}
