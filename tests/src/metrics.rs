//! Reading the admin listener's `/metrics` text (Prometheus exposition format) in tests.

/// The sum of the samples of `name` whose labels include all of `labels`.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let (n, rest) = key.split_once('{')?;
            let rest = format!(",{rest}");
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!(",{k}=\"{v}\"")));
            (n == name && all).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
