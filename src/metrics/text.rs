//! The two exposition formats: OpenMetrics, and the Prometheus text format
//! for scrapers and tools that do not ask for OpenMetrics.

use super::gateway::Metrics;

impl Metrics {
    /// The Prometheus text format (0.0.4) of every metric, for scrapers and
    /// tools that do not ask for OpenMetrics (promtool, curl): counter
    /// families are named with their `_total` suffix, and the OpenMetrics
    /// `# UNIT` and `# EOF` lines are left out. Hand-written because
    /// prometheus-client only speaks OpenMetrics.
    pub fn encode_text(&self) -> String {
        let om = self.encode();
        let counters: std::collections::HashSet<&str> = om
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(om.len());
        for line in om.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
                let rest = line.strip_prefix(p)?;
                let (name, tail) = rest.split_once(' ')?;
                counters
                    .contains(name)
                    .then(|| format!("{p}{name}_total {tail}"))
            });
            match renamed {
                Some(l) => out.push_str(&l),
                None => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }

    /// The text exposition format (OpenMetrics) of every metric.
    pub fn encode(&self) -> String {
        self.update_crl_staleness();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
