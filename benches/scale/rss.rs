//! Resident memory of a process, sampled from /proc/PID/status in the background.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// VmRSS: resident now.
    pub rss_kib: u64,
    /// VmHWM: the peak resident size since the process started.
    pub hwm_kib: u64,
}

/// A number of /proc/PID/status (`VmRSS:`, `Threads:`...), without its `kB`.
pub fn status_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
}

/// (VmRSS, VmHWM) in KiB from the text of /proc/PID/status.
pub fn parse_status(text: &str) -> Option<(u64, u64)> {
    Some((status_field(text, "VmRSS:")?, status_field(text, "VmHWM:")?))
}

pub fn read(pid: u32) -> Option<(u64, u64)> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Samples one process every `every` until dropped (or the process is gone).
pub struct Sampler {
    pub pid: u32,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    pub fn start(pid: u32, every: Duration) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some((rss_kib, hwm_kib)) = read(pid) else { break };
                    samples.lock().unwrap().push(Sample { at: Instant::now(), rss_kib, hwm_kib });
                    std::thread::sleep(every);
                }
            })
        };
        Sampler { pid, samples, stop, thread: Some(thread) }
    }

    /// Samples taken in `[from, to]`, plus one read now if `to` is in the future.
    pub fn between(&self, from: Instant, to: Instant) -> Vec<Sample> {
        let mut within: Vec<Sample> =
            self.samples.lock().unwrap().iter().filter(|s| s.at >= from && s.at <= to).copied().collect();
        if let Some((rss_kib, hwm_kib)) = (Instant::now() <= to).then(|| read(self.pid)).flatten() {
            within.push(Sample { at: Instant::now(), rss_kib, hwm_kib });
        }
        within
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// RSS over one phase, in MiB.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Phase {
    pub samples: usize,
    /// Highest VmRSS sampled in the phase.
    pub peak_rss_mib: f64,
    /// Median VmRSS of the phase.
    pub median_rss_mib: f64,
    /// Last VmRSS of the phase.
    pub last_rss_mib: f64,
    /// VmHWM at the end of the phase: the peak since start, including between samples.
    pub hwm_mib: f64,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn phase(samples: &[Sample]) -> Option<Phase> {
    let last = samples.last()?;
    let mut rss: Vec<u64> = samples.iter().map(|s| s.rss_kib).collect();
    rss.sort_unstable();
    Some(Phase {
        samples: samples.len(),
        peak_rss_mib: mib(*rss.last()?),
        median_rss_mib: mib(rss[rss.len() / 2]),
        last_rss_mib: mib(last.rss_kib),
        hwm_mib: mib(samples.iter().map(|s| s.hwm_kib).max()?),
    })
}

pub fn self_test() {
    let status = "Name:\tmoltmate\nVmPeak:\t  900 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   20480 kB\n";
    assert_eq!(parse_status(status), Some((20480, 40960)));
    assert_eq!(parse_status("Name: x\n"), None);
    let now = Instant::now();
    let s = |rss, hwm| Sample { at: now, rss_kib: rss, hwm_kib: hwm };
    let p = phase(&[s(1024, 2048), s(3072, 3072), s(2048, 3072)]).unwrap();
    assert_eq!((p.peak_rss_mib, p.median_rss_mib, p.last_rss_mib, p.hwm_mib), (3.0, 2.0, 2.0, 3.0));
    assert!(phase(&[]).is_none());
}
