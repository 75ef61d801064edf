//! Process metrics read from /proc at scrape time.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Process metrics read from /proc at scrape time (prometheus-client has
/// no process collector).
#[derive(Debug)]
pub(super) struct ProcessCollector {
    /// Process start, seconds since the Unix epoch.
    pub(super) start: i64,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let rss_kib: i64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(0) as i64;
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // utime and stime are fields 14 and 15, after the ")" that ends the
        // command name; the clock tick is 100 Hz on Linux.
        let cpu = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect::<Vec<_>>())
            .map(|f| {
                let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                (t(11) + t(12)) / 100.0
            })
            .unwrap_or(0.0);
        let rss = ConstGauge::new(rss_kib * 1024);
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory",
            "Resident memory",
            Some(&Unit::Bytes),
            rss.metric_type(),
        )?)?;
        let open = ConstGauge::new(fds);
        open.encode(encoder.encode_descriptor(
            "process_open_fds",
            "Open file descriptors",
            None,
            open.metric_type(),
        )?)?;
        let cpu = ConstCounter::new(cpu);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "User and system CPU time",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let start = ConstGauge::new(self.start);
        start.encode(encoder.encode_descriptor(
            "process_start_time",
            "Start time, seconds since the Unix epoch",
            Some(&Unit::Seconds),
            start.metric_type(),
        )?)?;
        Ok(())
    }
}
