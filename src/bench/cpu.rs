//! CPU time of processes, from `/proc`: how benchmarks report efficiency as CPU per
//! operation, a figure that does not depend on how fast the machine is.

/// CPU seconds (user + system) process `pid` has used, from `/proc/PID/stat` (`None`
/// when the process is gone or `/proc` is not there).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_seconds(&stat)
}

/// The user + system time in a `/proc/PID/stat` line, in seconds.
fn parse_stat_cpu_seconds(stat: &str) -> Option<f64> {
    // Fields after the command name (which may hold spaces) start after ") ".
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // In USER_HZ ticks, which Linux fixes at 100 per second for user space.
    Some((utime + stime) / 100.0)
}

/// The CPU time a set of processes uses between [`CpuMeter::start`] and
/// [`CpuMeter::seconds`].
#[derive(Clone, Debug)]
pub struct CpuMeter {
    pids: Vec<u32>,
    start: Option<f64>,
}

impl CpuMeter {
    /// Starts measuring `pids` (`None` readings, as for a process gone, make the whole
    /// measure `None`).
    pub fn start(pids: Vec<u32>) -> Self {
        let start = total(&pids);
        Self { pids, start }
    }

    /// CPU seconds all the processes used since the start.
    pub fn seconds(&self) -> Option<f64> {
        Some(total(&self.pids)? - self.start?)
    }
}

fn total(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| process_cpu_seconds(*p)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_in_the_name_parses() {
        let line = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 9 0 0";
        assert_eq!(parse_stat_cpu_seconds(line), Some(3.0));
        assert_eq!(parse_stat_cpu_seconds("garbage"), None);
    }

    #[test]
    fn this_process_uses_cpu() {
        let me = CpuMeter::start(vec![std::process::id()]);
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(me.seconds().is_some_and(|s| s >= 0.0));
        assert!(process_cpu_seconds(u32::MAX).is_none());
    }
}
