//! How long the archiver took to store what a run sent: its
//! `chat_archiver_store_delay_seconds` histogram (each record's time from
//! its logging to its storing), read from its `/metrics` before and after
//! the run; a quantile is the upper bound of the bucket it falls in.

const HISTOGRAM: &str = "chat_archiver_store_delay_seconds_bucket";

/// The histogram's cumulative counts by upper bound, in order.
#[derive(Debug, Clone, Default)]
pub struct Buckets(Vec<(f64, u64)>);

/// The histogram as the archiver's `/metrics` at `url` shows it now; empty
/// if it cannot be read (no archiver given, or not up).
pub async fn read(http: &reqwest::Client, url: Option<&str>) -> Buckets {
    let Some(url) = url else { return Buckets::default() };
    match http.get(url).send().await.and_then(reqwest::Response::error_for_status) {
        Ok(answer) => parse(&answer.text().await.unwrap_or_default()),
        Err(_) => Buckets::default(),
    }
}

/// The buckets of the Prometheus text format's `..._bucket{le="…"} N` lines.
fn parse(text: &str) -> Buckets {
    let bound = |line: &str| -> Option<(f64, u64)> {
        let rest = line.strip_prefix(HISTOGRAM)?;
        let le = rest.split("le=\"").nth(1)?.split('"').next()?;
        let count = rest.rsplit(' ').next()?.parse().ok()?;
        Some((if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? }, count))
    };
    Buckets(text.lines().filter_map(bound).collect())
}

/// How many records were stored between `before` and `after`.
pub fn stored(before: &Buckets, after: &Buckets) -> u64 {
    let counted = |buckets: &Buckets| buckets.0.last().map_or(0, |(_, count)| *count);
    counted(after).saturating_sub(counted(before))
}

/// What was stored between `before` and `after`: the record count, the p50
/// and p99 (as bucket bounds, in ms), or nothing if no record was stored.
pub fn report(before: &Buckets, after: &Buckets) -> Option<String> {
    let counted = |bound: f64| before.0.iter().find(|(le, _)| *le == bound).map_or(0, |(_, count)| *count);
    let delta: Vec<(f64, u64)> = after.0.iter().map(|(le, count)| (*le, count.saturating_sub(counted(*le)))).collect();
    let total = delta.last()?.1;
    if total == 0 {
        return None;
    }
    let quantile = |q: f64| {
        let wanted = (q * total as f64).ceil() as u64;
        delta.iter().find(|(_, count)| *count >= wanted).map_or(f64::INFINITY, |(le, _)| *le)
    };
    let ms = |seconds: f64| {
        if seconds.is_finite() {
            format!("≤ {:.0} ms", seconds * 1000.0)
        } else {
            "over the largest bucket".to_owned()
        }
    };
    Some(format!("archiver store delay p50 {}, p99 {} ({total} records)", ms(quantile(0.5)), ms(quantile(0.99))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "chat_archiver_store_delay_seconds_bucket{le=\"0.1\"} 10\n\
        chat_archiver_store_delay_seconds_bucket{le=\"0.5\"} 10\n\
        chat_archiver_store_delay_seconds_bucket{le=\"+Inf\"} 10\n";
    const AFTER: &str = "# TYPE chat_archiver_store_delay_seconds histogram\n\
        chat_archiver_store_delay_seconds_bucket{le=\"0.1\"} 120\n\
        chat_archiver_store_delay_seconds_bucket{le=\"0.5\"} 209\n\
        chat_archiver_store_delay_seconds_bucket{le=\"+Inf\"} 210\n\
        chat_archiver_store_delay_seconds_sum 12.5\n";

    #[test]
    fn the_quantiles_are_of_what_the_run_stored() {
        let report = report(&parse(BEFORE), &parse(AFTER)).unwrap();
        assert_eq!(report, "archiver store delay p50 ≤ 100 ms, p99 ≤ 500 ms (200 records)");
    }

    #[test]
    fn a_run_that_stored_nothing_or_no_archiver_reports_nothing() {
        assert_eq!(report(&parse(AFTER), &parse(AFTER)), None);
        assert_eq!(report(&Buckets::default(), &Buckets::default()), None);
    }
}
