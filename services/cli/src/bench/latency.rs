//! Latency distributions: HdrHistogram in nanoseconds (1 µs to 10 min, three significant
//! digits), carried between processes as (value, count) pairs and summarised as the
//! percentiles the report shows.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Lowest distinguishable value: 1 µs.
const LOW_NS: u64 = 1_000;
/// Highest trackable value: 10 minutes; longer waits are recorded as this.
const HIGH_NS: u64 = 600_000_000_000;

/// A latency histogram.
#[derive(Debug, Clone)]
pub(crate) struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // Bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low, 3 digits).
        #[allow(clippy::expect_used)]
        Self(Histogram::new_with_bounds(LOW_NS, HIGH_NS, 3).expect("valid histogram bounds"))
    }
}

/// A histogram on the wire: (value, count) of every non-empty bucket.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Buckets(pub(crate) Vec<(u64, u64)>);

/// The figures of a distribution, in milliseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// Samples.
    pub(crate) count: u64,
    /// Median.
    pub(crate) p50_ms: f64,
    /// 90th percentile.
    pub(crate) p90_ms: f64,
    /// 99th percentile.
    pub(crate) p99_ms: f64,
    /// 99.9th percentile.
    pub(crate) p999_ms: f64,
    /// Largest.
    pub(crate) max_ms: f64,
    /// Mean.
    pub(crate) mean_ms: f64,
}

impl Latency {
    /// Records one sample of `ns` nanoseconds (clamped into the tracked range).
    pub(crate) fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.clamp(LOW_NS, HIGH_NS));
    }

    /// Samples recorded.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.0.len()
    }

    /// The buckets, for sending to the driver.
    pub(crate) fn buckets(&self) -> Buckets {
        Buckets(
            self.0
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    /// Adds buckets a worker sent.
    pub(crate) fn add(&mut self, buckets: &Buckets) {
        for (value, count) in &buckets.0 {
            // Values outside the range were clamped on the way in; clamp again for safety.
            let _ = self.0.record_n((*value).clamp(LOW_NS, HIGH_NS), *count);
        }
    }

    /// Percentiles in milliseconds.
    pub(crate) fn summary(&self) -> Summary {
        let ms = |ns: u64| ns as f64 / 1e6;
        if self.0.is_empty() {
            return Summary::default();
        }
        Summary {
            count: self.0.len(),
            p50_ms: ms(self.0.value_at_quantile(0.5)),
            p90_ms: ms(self.0.value_at_quantile(0.9)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            p999_ms: ms(self.0.value_at_quantile(0.999)),
            max_ms: ms(self.0.max()),
            mean_ms: self.0.mean() / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_survive_the_trip_between_processes() {
        let mut worker = Latency::default();
        for ms in 1..=1000u64 {
            worker.record(ms * 1_000_000);
        }
        let mut driver = Latency::default();
        driver.add(&worker.buckets());
        driver.add(&worker.buckets());
        let s = driver.summary();
        assert_eq!(s.count, 2000);
        assert!((s.p50_ms - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() < 1.0, "{s:?}");
    }

    #[test]
    fn out_of_range_samples_are_clamped_not_lost() {
        let mut h = Latency::default();
        h.record(0);
        h.record(u64::MAX);
        assert_eq!(h.count(), 2);
        assert!(h.summary().max_ms >= 599_000.0);
    }
}
