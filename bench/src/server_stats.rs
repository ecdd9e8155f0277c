//! The server's own resource use, read from /proc: CPU time stays meaningful when the
//! load generator (on the same 2 cores) is the bottleneck.

use std::fs;
use std::io;
use std::time::Duration;

/// Clock ticks per second of /proc/PID/stat on Linux (USER_HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// A process to observe.
#[derive(Debug, Clone, Copy)]
pub struct ServerProcess {
    pid: u32,
}

impl ServerProcess {
    /// Checks that `pid` exists.
    pub fn new(pid: u32) -> io::Result<Self> {
        fs::metadata(format!("/proc/{pid}"))?;
        Ok(Self { pid })
    }

    /// User plus system CPU time used so far.
    pub fn cpu_time(&self) -> io::Result<Duration> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let after = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .ok_or_else(|| io::Error::other("odd /proc/PID/stat"))?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
        let ticks = |i: usize| -> io::Result<f64> {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .ok_or_else(|| io::Error::other("odd /proc/PID/stat"))
        };
        Ok(Duration::from_secs_f64(
            (ticks(11)? + ticks(12)?) / TICKS_PER_SECOND,
        ))
    }

    /// Resident set size in bytes.
    pub fn rss_bytes(&self) -> io::Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .ok_or_else(|| io::Error::other("no VmRSS in /proc/PID/status"))
    }
}
