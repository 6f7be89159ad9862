//! Memory per idle connection, read from the gateway's `/proc/<pid>/status`.

use std::time::Duration;

use crate::BenchError;
use crate::wire::connect_client;

/// Opens `n` idle connections (spread over `users` users) and measures the gateway's resident
/// memory before and after. Returns (RSS before, RSS after) in KiB.
pub async fn idle_rss(
    target: &str,
    gateway_pid: u32,
    n: usize,
    users: usize,
) -> Result<(u64, u64), BenchError> {
    let before = rss_kib(gateway_pid)?;
    let mut sockets = Vec::with_capacity(n);
    for i in 0..n {
        let user = format!("idle-{:05}", i % users.max(1));
        sockets.push(connect_client(target, &user).await?);
    }
    // Let allocations settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(gateway_pid)?;
    drop(sockets);
    Ok((before, after))
}

fn rss_kib(pid: u32) -> Result<u64, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|error| BenchError::Rss(format!("reading /proc/{pid}/status: {error}")))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| BenchError::Rss(format!("no VmRSS in /proc/{pid}/status")))
}
