//! `log_history` as columns: the CSV file for spreadsheets, and the series the charts draw.

use anyhow::{Context, Result};

use crate::checkpoint::LogEntry;

/// The file written beside `trainer_state.json`.
pub const LOG_CSV: &str = "log_history.csv";

/// The columns every log_history.csv starts with; the evaluation metrics follow.
pub const FIXED_COLUMNS: [&str; 5] = ["step", "epoch", "loss", "learning_rate", "grad_norm"];

/// The trainer's evaluation metrics, in the order people read them.
const EVAL_ORDER: [&str; 4] = [
    "eval_loss",
    "eval_accuracy",
    "eval_macro_f1",
    "eval_weighted_f1",
];

/// The value columns after step and epoch: the training ones, the evaluation metrics logged
/// (known ones first), then any other key logged, by name.
pub fn value_columns(history: &[LogEntry]) -> Vec<String> {
    let mut columns: Vec<String> = FIXED_COLUMNS[2..].iter().map(|c| c.to_string()).collect();
    let logged = |key: &str| history.iter().any(|e| e.values.contains_key(key));
    columns.extend(
        EVAL_ORDER
            .iter()
            .filter(|k| logged(k))
            .map(|k| k.to_string()),
    );
    let mut others: Vec<String> = history
        .iter()
        .flat_map(|e| e.values.keys())
        .filter(|k| !columns.contains(k))
        .cloned()
        .collect();
    others.sort();
    others.dedup();
    columns.extend(others);
    columns
}

/// The numeric value of `key` in an entry, if it holds one.
pub fn number(entry: &LogEntry, key: &str) -> Option<f64> {
    entry.values.get(key).and_then(serde_json::Value::as_f64)
}

/// log_history.csv: one row per log entry; a value an entry lacks is an empty cell.
pub fn to_csv(history: &[LogEntry]) -> Result<Vec<u8>> {
    let columns = value_columns(history);
    let mut out = csv::Writer::from_writer(Vec::new());
    let header = ["step", "epoch"]
        .into_iter()
        .chain(columns.iter().map(String::as_str));
    out.write_record(header)?;
    for entry in history {
        let mut row = vec![entry.step.to_string(), entry.epoch.to_string()];
        for column in &columns {
            // Numbers as JSON writes them (shortest round trip); anything else as its JSON.
            row.push(match entry.values.get(column) {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            });
        }
        out.write_record(&row)?;
    }
    out.into_inner().context("cannot write log_history.csv")
}

/// `(step, value)` of every entry holding `key`.
pub fn series(history: &[LogEntry], key: &str) -> Vec<(f64, f64)> {
    history
        .iter()
        .filter_map(|e| Some((e.step as f64, number(e, key)?)))
        .collect()
}

/// TensorBoard's smoothing: an exponential moving average, debiased so the first points are
/// not pulled towards zero.
pub fn smoothed(points: &[(f64, f64)], weight: f64) -> Vec<(f64, f64)> {
    let mut last = 0.0;
    let mut debias = 1.0;
    points
        .iter()
        .map(|&(x, y)| {
            last = last * weight + (1.0 - weight) * y;
            debias *= weight;
            (x, last / (1.0 - debias))
        })
        .collect()
}

/// At most about `max` points for drawing: beyond that, each bucket of consecutive points
/// keeps its lowest and highest (in x order), so spikes stay visible while a long run's
/// report stays small.
pub fn thinned(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max || max < 4 {
        return points.to_vec();
    }
    let bucket = points.len().div_ceil(max / 2);
    let mut out = Vec::with_capacity(max + 2);
    for chunk in points.chunks(bucket) {
        let lo = chunk
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.1.total_cmp(&b.1.1));
        let hi = chunk
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.1.total_cmp(&b.1.1));
        if let (Some((i, a)), Some((j, b))) = (lo, hi) {
            match i.cmp(&j) {
                std::cmp::Ordering::Less => out.extend([*a, *b]),
                std::cmp::Ordering::Greater => out.extend([*b, *a]),
                std::cmp::Ordering::Equal => out.push(*a),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(step: usize, values: serde_json::Value) -> LogEntry {
        LogEntry {
            step,
            epoch: step as f64 / 10.0,
            values: values.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn csv_has_the_fixed_columns_then_each_metric() {
        let history = vec![
            entry(
                5,
                json!({"loss": 0.5, "learning_rate": 1e-4, "grad_norm": 2.0}),
            ),
            entry(
                10,
                json!({"eval_zeta": 1, "eval_loss": 0.4, "eval_accuracy": 0.75}),
            ),
        ];
        let text = String::from_utf8(to_csv(&history).unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "step,epoch,loss,learning_rate,grad_norm,eval_loss,eval_accuracy,eval_zeta",
                "5,0.5,0.5,0.0001,2.0,,,",
                "10,1,,,,0.4,0.75,1",
            ]
        );
    }

    #[test]
    fn smoothing_starts_at_the_first_value_and_thinning_keeps_extremes() {
        let points = [(1.0, 2.0), (2.0, 0.0), (3.0, 0.0)];
        let s = smoothed(&points, 0.6);
        assert!((s[0].1 - 2.0).abs() < 1e-12);
        assert!(s[2].1 < s[1].1 && s[1].1 < s[0].1);
        let many: Vec<(f64, f64)> = (0..1000)
            .map(|i| (i as f64, if i == 517 { 9.0 } else { 1.0 }))
            .collect();
        let thin = thinned(&many, 100);
        assert!(thin.len() <= 102, "{}", thin.len());
        assert!(thin.contains(&(517.0, 9.0)));
        assert!(thin.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
