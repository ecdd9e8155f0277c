//! Results: a readable table, or one JSON object per line with `--json`.

use serde_json::{Map, Value};

/// The results of one run, in the order they were added.
#[derive(Debug)]
pub struct Report {
    fields: Vec<(String, Value)>,
}

impl Report {
    /// A report for `scenario`.
    pub fn new(scenario: &str) -> Self {
        Self {
            fields: vec![("scenario".into(), scenario.into())],
        }
    }

    /// Adds one named value.
    pub fn add(&mut self, name: &str, value: impl Into<Value>) {
        self.fields.push((name.into(), value.into()));
    }

    /// Adds a float rounded to `digits` decimals.
    pub fn add_f64(&mut self, name: &str, value: f64, digits: i32) {
        let scale = 10f64.powi(digits);
        self.add(name, (value * scale).round() / scale);
    }

    /// Prints the report to stdout.
    pub fn print(&self, json: bool) {
        if json {
            let map: Map<String, Value> = self.fields.iter().cloned().collect();
            println!("{}", Value::Object(map));
            return;
        }
        let width = self.fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (name, value) in &self.fields {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{name:<width$}  {value}");
        }
    }
}

/// Latency samples in nanoseconds.
#[derive(Debug, Default)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    /// Adds the samples of another recorder.
    pub fn extend(&mut self, other: Vec<u64>) {
        self.0.extend(other);
    }

    /// Adds p50, p90, p99 and max, in microseconds, to `report`.
    pub fn report(mut self, report: &mut Report) {
        self.0.sort_unstable();
        for (name, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0)] {
            let micros = percentile(&self.0, q).map(|ns| ns as f64 / 1000.0);
            match micros {
                Some(us) => report.add_f64(&format!("latency_{name}_us"), us, 1),
                None => report.add(&format!("latency_{name}_us"), Value::Null),
            }
        }
    }
}

fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.5), Some(50));
        assert_eq!(percentile(&sorted, 0.99), Some(99));
        assert_eq!(percentile(&sorted, 1.0), Some(100));
        assert_eq!(percentile(&[7], 0.5), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
