//! OpenMetrics, as `prometheus-client` writes it, turned into the Prometheus text format 0.0.4
//! for scrapers that do not ask for OpenMetrics (`curl`, `promtool check metrics`). Both the
//! aggregator's and the collector's `/metrics` serve either.

/// What to answer a scrape with, given its `Accept` header values and the exposition in
/// OpenMetrics: OpenMetrics for a scraper that asks for it (Prometheus does), else the
/// Prometheus text format; the content type and the body.
pub fn negotiate<'a>(
    accept: impl IntoIterator<Item = &'a str>,
    openmetrics: String,
) -> (&'static str, String) {
    if accept
        .into_iter()
        .any(|value| value.contains("application/openmetrics-text"))
    {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            openmetrics,
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            to_prometheus_text(&openmetrics),
        )
    }
}

/// An OpenMetrics exposition in the Prometheus text format (0.0.4), for scrapers that do not
/// ask for OpenMetrics (`curl`, `promtool check metrics`): a counter's HELP and TYPE name its
/// samples (`…_total`), and there are no UNIT lines or `# EOF`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            counters.insert(name.to_owned());
        }
    }
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        text.push_str(described.as_deref().unwrap_or(line));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prometheus_text_names_counters_by_their_samples_and_drops_units_and_eof() {
        let openmetrics = "# HELP x_joules Energy.\n# TYPE x_joules counter\n# UNIT x_joules joules\n\
                           x_joules_total{a=\"b\"} 1.5\n# HELP y_watts Power.\n# TYPE y_watts gauge\n\
                           # UNIT y_watts watts\ny_watts 2.0\n# EOF\n";
        assert_eq!(
            to_prometheus_text(openmetrics),
            "# HELP x_joules_total Energy.\n# TYPE x_joules_total counter\n\
             x_joules_total{a=\"b\"} 1.5\n# HELP y_watts Power.\n# TYPE y_watts gauge\ny_watts 2.0\n"
        );
    }

    #[test]
    fn a_scraper_gets_openmetrics_only_when_it_asks() {
        let text = "# TYPE x counter\nx_total 1\n# EOF\n".to_owned();
        let (kind, body) = negotiate(["application/openmetrics-text;version=1.0.0"], text.clone());
        assert!(kind.starts_with("application/openmetrics-text") && body == text);
        let (kind, body) = negotiate(["*/*"], text);
        assert!(kind.starts_with("text/plain; version=0.0.4"));
        assert!(!body.contains("# EOF"), "{body}");
    }
}
