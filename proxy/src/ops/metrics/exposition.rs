//! OpenMetrics text to the classic Prometheus text format (0.0.4).
//!
//! `prometheus-client` writes OpenMetrics, where a counter family `x` has
//! samples `x_total`. The classic format names the family after its samples,
//! has no `# UNIT` and no `# EOF`. Scrapers that do not ask for OpenMetrics
//! (older Prometheus, most ad-hoc tools) get the classic format.

use std::collections::HashSet;

/// Rewrites counter family names and drops OpenMetrics-only lines.
pub(super) fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len() + counters.len() * 12);
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|kw| {
            let rest = line.strip_prefix(kw)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{kw}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(l.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_their_sample_name() {
        let om =
            "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{x=\"1\"} 2\n\
                  # HELP a_g G.\n# TYPE a_g gauge\n# UNIT a_g seconds\na_g 1\n# EOF\n";
        let prom = openmetrics_to_prometheus(om);
        assert_eq!(
            prom,
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{x=\"1\"} 2\n\
             # HELP a_g G.\n# TYPE a_g gauge\na_g 1\n"
        );
    }
}
