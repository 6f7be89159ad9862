//! CPU time of a process, read from `/proc/<pid>/stat`, so a run can say how much of the machine
//! the generator (and, given its pid, the server under load) took: on a shared two-core box every
//! core-second the generator spends is one the server does not get.

use crate::BenchError;

/// The kernel's `USER_HZ`: `/proc` reports CPU times in ticks of 1/100 s on every Linux
/// architecture, whatever the kernel's internal tick rate.
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU seconds used so far by process `pid` (`self` for this one), all its
/// threads, the exited ones included.
pub(crate) fn cpu_seconds(pid: &str) -> Result<f64, BenchError> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)
        .map_err(|error| BenchError::Cpu(format!("reading {path}: {error}")))?;
    parse_stat(&stat).ok_or_else(|| BenchError::Cpu(format!("{path}: no utime and stime in it")))
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses
/// and may hold spaces and parentheses itself, so fields are counted after its last `)`: state is
/// field 3, utime 14, stime 15.
fn parse_stat(stat: &str) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// A CPU-time reading of a process, turned into cores used over the time since it was taken.
pub(crate) struct CpuClock {
    pid: String,
    start: f64,
}

impl CpuClock {
    pub(crate) fn start(pid: String) -> Result<CpuClock, BenchError> {
        let start = cpu_seconds(&pid)?;
        Ok(CpuClock { pid, start })
    }

    /// Cores the process used on average over `seconds` since [`CpuClock::start`]: 1.0 is one
    /// core busy the whole time.
    pub(crate) fn cores(&self, seconds: f64) -> Result<f64, BenchError> {
        let used = cpu_seconds(&self.pid)? - self.start;
        Ok(if seconds > 0.0 { used / seconds } else { 0.0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_are_read_after_the_command_name() {
        // A command name with a space and a parenthesis, as `/proc` shows it.
        let line = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_stat(line), Some(3.25));
        assert_eq!(parse_stat("4242 (cut) S 1 2"), None);
    }

    #[test]
    fn this_process_uses_cpu_time_that_grows() {
        let before = cpu_seconds("self").unwrap();
        // Busy until the clock moves a tick (10 ms of CPU), or give up after 5 s of wall time.
        let start = tokio::time::Instant::now();
        let mut after = before;
        while after == before && start.elapsed() < std::time::Duration::from_secs(5) {
            for _ in 0..100_000 {
                std::hint::black_box(after);
            }
            after = cpu_seconds("self").unwrap();
        }
        assert!(after > before, "{before} -> {after}");
        assert!(cpu_seconds("0").is_err(), "pid 0 has no /proc entry");
    }
}
