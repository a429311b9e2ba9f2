//! The resident memory of the server under test, sampled from `/proc/<pid>/status` while a
//! run goes on (Linux; elsewhere nothing is reported).

use std::time::Duration;

use serde::Serialize;

/// A process's resident set size over a run.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Rss {
    /// When sampling started.
    pub start_mib: f64,
    /// The largest sample.
    pub peak_mib: f64,
    /// When sampling stopped.
    pub end_mib: f64,
    /// Samples taken.
    pub samples: usize,
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "  server memory (RSS): start {:.1} MiB, peak {:.1} MiB, end {:.1} MiB ({} samples)",
            self.start_mib, self.peak_mib, self.end_mib, self.samples
        )
    }
}

/// `VmRSS` of `pid` in KiB, when `/proc` tells.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// CPU time `pid` has used so far (user + system), in seconds, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    parse_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `utime` and `stime` are the 14th and 15th fields, in clock ticks of `USER_HZ`, which Linux
/// fixes at 100 for what it reports to user space. The 2nd field (the command) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    const USER_HZ: f64 = 100.0;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..].trim().strip_suffix("kB")?.trim().parse().ok()
}

/// Samples a process's RSS every `every` in the background until [`Sampler::finish`].
pub struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Option<Rss>>,
}

impl Sampler {
    /// Starts sampling `pid`; `None` when its RSS cannot be read.
    pub fn start(pid: u32, every: Duration) -> Option<Sampler> {
        let first = rss_kib(pid)?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let (mut peak, mut samples) = (first, 1);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(every) => {}
                }
                let kib = rss_kib(pid)?;
                peak = peak.max(kib);
                samples += 1;
            }
            let end = rss_kib(pid)?;
            let mib = |kib: u64| kib as f64 / 1024.0;
            Some(Rss { start_mib: mib(first), peak_mib: mib(peak.max(end)), end_mib: mib(end), samples: samples + 1 })
        });
        Some(Sampler { stop, task })
    }

    /// Stops sampling (taking one last sample); `None` when the process went away meanwhile.
    pub async fn finish(self) -> Option<Rss> {
        let _ = self.stop.send(());
        self.task.await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_a_status_file() {
        let status = "Name:\tbackroom\nVmPeak:\t  900000 kB\nVmRSS:\t   51200 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(51_200));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn this_process_is_sampled() {
        let sampler = Sampler::start(std::process::id(), Duration::from_millis(5)).expect("readable on Linux");
        let hold = vec![1u8; 8 << 20];
        tokio::time::sleep(Duration::from_millis(30)).await;
        let rss = sampler.finish().await.expect("still running");
        assert!(hold.iter().all(|b| *b == 1));
        assert!(rss.samples >= 2, "{rss:?}");
        assert!(rss.start_mib > 0.0 && rss.end_mib > 0.0, "{rss:?}");
        assert!(rss.peak_mib >= rss.start_mib && rss.peak_mib >= rss.end_mib, "{rss:?}");
    }

    #[test]
    fn cpu_time_is_read_after_the_command_field() {
        let stat = "4242 (backroom (x) y) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 9 0 100 0 0";
        assert_eq!(super::parse_cpu_seconds(stat), Some(4.0));
        assert_eq!(super::parse_cpu_seconds("garbage"), None);
    }
}
