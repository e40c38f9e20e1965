//! Reading the Prometheus text exposition (`/metrics`) of the operator and the runner, for
//! the tests and benchmarks that report their figures.

/// The sum of every sample of `metric` over all its label sets (a counter's total).
pub fn metric_sum(exposition: &str, metric: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sample of `metric` whose labels contain `label` (such as `step="schema"`), if any.
pub fn metric_where(exposition: &str, metric: &str, label: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') && rest.contains(label))
        })
        .find_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
}

/// The cumulative buckets of `histogram`: (upper bound, count), in the exposition's order
/// (ascending, `+Inf` last).
pub fn histogram_buckets(exposition: &str, histogram: &str) -> Vec<(f64, f64)> {
    histogram_buckets_where(exposition, histogram, "")
}

/// [`histogram_buckets`] of one label set of a histogram family: the lines whose labels
/// contain `label` (such as `step="schema"`).
pub fn histogram_buckets_where(exposition: &str, histogram: &str, label: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{histogram}_bucket{{");
    exposition
        .lines()
        .filter(|line| line.starts_with(&prefix) && line.contains(label))
        .filter_map(|line| {
            let bound = line.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            Some((bound, line.rsplit(' ').next()?.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
# TYPE rtdp_records_written counter
rtdp_records_written_total{table=\"a\"} 3
rtdp_records_written_total{table=\"b\"} 4
rtdp_records_written_total_other 100
# TYPE rtdp_latency_seconds histogram
rtdp_latency_seconds_bucket{le=\"0.1\"} 2
rtdp_latency_seconds_bucket{le=\"1.0\"} 5
rtdp_latency_seconds_bucket{le=\"+Inf\"} 6
";

    #[test]
    fn sums_every_label_set_of_the_metric_only() {
        assert_eq!(metric_sum(EXPOSITION, "rtdp_records_written_total"), 7.0);
        assert_eq!(metric_sum(EXPOSITION, "rtdp_missing_total"), 0.0);
    }

    #[test]
    fn reads_one_label_set_of_a_family() {
        let family = "\
rtdp_step_seconds_bucket{le=\"1.0\",step=\"schema\"} 1
rtdp_step_seconds_bucket{le=\"+Inf\",step=\"schema\"} 2
rtdp_step_seconds_sum{step=\"schema\"} 3.5
rtdp_step_seconds_bucket{le=\"1.0\",step=\"topics\"} 7
rtdp_step_seconds_bucket{le=\"+Inf\",step=\"topics\"} 7
rtdp_step_seconds_sum{step=\"topics\"} 0.5
";
        assert_eq!(
            histogram_buckets_where(family, "rtdp_step_seconds", "step=\"schema\""),
            vec![(1.0, 1.0), (f64::INFINITY, 2.0)]
        );
        assert_eq!(
            metric_where(family, "rtdp_step_seconds_sum", "step=\"topics\""),
            Some(0.5)
        );
        assert_eq!(
            metric_where(family, "rtdp_step_seconds_sum", "step=\"status\""),
            None
        );
    }

    #[test]
    fn reads_the_cumulative_buckets_in_order() {
        assert_eq!(
            histogram_buckets(EXPOSITION, "rtdp_latency_seconds"),
            vec![(0.1, 2.0), (1.0, 5.0), (f64::INFINITY, 6.0)]
        );
    }
}
