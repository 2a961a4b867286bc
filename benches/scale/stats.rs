//! Latency summaries.

use std::time::Duration;

/// A latency distribution in milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Summary {
    pub count: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of ascending `sorted` (`p` in 0..=100); 0 for no values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn sorted_millis(values: &[Duration]) -> Vec<f64> {
    let mut ms: Vec<f64> = values.iter().copied().map(millis).collect();
    ms.sort_by(f64::total_cmp);
    ms
}

pub fn summarize(values: &[Duration]) -> Summary {
    let ms = sorted_millis(values);
    let mean = if ms.is_empty() { 0.0 } else { ms.iter().sum::<f64>() / ms.len() as f64 };
    Summary {
        count: ms.len(),
        min_ms: ms.first().copied().unwrap_or(0.0),
        p50_ms: percentile(&ms, 50.0),
        p90_ms: percentile(&ms, 90.0),
        p99_ms: percentile(&ms, 99.0),
        max_ms: ms.last().copied().unwrap_or(0.0),
        mean_ms: mean,
    }
}

/// Self-checks of the pure parts, run by `scripts/bench --self-test` (a bench target has no
/// test harness of its own).
pub fn self_test() {
    let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&sorted, 50.0), 50.0);
    assert_eq!(percentile(&sorted, 99.0), 99.0);
    assert_eq!(percentile(&sorted, 100.0), 100.0);
    assert_eq!(percentile(&[7.0], 99.0), 7.0);
    assert_eq!(percentile(&[], 50.0), 0.0);
    let s = summarize(&[Duration::from_millis(30), Duration::from_millis(10), Duration::from_millis(20)]);
    assert_eq!((s.count, s.min_ms, s.p50_ms, s.max_ms, s.mean_ms), (3, 10.0, 20.0, 30.0, 20.0));
}
