//! Multi-label metrics, computed as scikit-learn's `classification_report` and `f1_score`
//! with `zero_division=0`: a label never predicted has precision 0, a sample with no true
//! and no predicted label has F1 0 in the samples average.

use serde::{Deserialize, Serialize};

use crate::data::LabelSet;
use crate::metrics::ClassReport;

/// Whether a label cell holds a JSON list (`["joy", "love"]`), as multi-label JSON Lines
/// files do.
pub fn is_list(cell: &str) -> bool {
    let cell = cell.trim();
    cell.starts_with('[') && serde_json::from_str::<Vec<serde_json::Value>>(cell).is_ok()
}

/// The label names a cell holds: a JSON list of names (or of integer ids for models with
/// transformers' default names), or names joined with `delimiter` (`joy,love`). An empty
/// list or cell holds none.
pub fn cell_names(cell: &str, delimiter: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = if cell.trim_start().starts_with('[') {
        let items: Vec<serde_json::Value> = serde_json::from_str(cell.trim())
            .map_err(|e| format!("label list `{cell}` is not valid JSON: {e}"))?;
        items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s),
                serde_json::Value::Number(n) => Ok(n.to_string()),
                other => Err(format!(
                    "label list `{cell}` holds {other}, not a label name"
                )),
            })
            .collect::<Result<_, _>>()?
    } else if delimiter.is_empty() {
        vec![cell.trim().to_string()]
    } else {
        cell.split(delimiter)
            .map(|n| n.trim().to_string())
            .collect()
    };
    Ok(names.into_iter().filter(|n| !n.is_empty()).collect())
}

/// `names` as one flag per label of `labels`; a name `labels` lacks is the error.
pub fn flags(
    names: impl IntoIterator<Item = String>,
    labels: &LabelSet,
) -> Result<Vec<bool>, String> {
    let mut flags = vec![false; labels.len()];
    for name in names {
        flags[labels.id(&name).ok_or(name)?] = true;
    }
    Ok(flags)
}

/// The mean binary cross-entropy of `logits` against `truth`, over rows and labels, as
/// transformers computes a multi-label model's loss.
pub fn mean_bce(logits: &[Vec<f32>], truth: &[Vec<bool>]) -> Option<f64> {
    let (mut loss, mut count) = (0.0, 0usize);
    for (l, t) in logits.iter().zip(truth) {
        for (&x, &y) in l.iter().zip(t) {
            // max(x, 0) − x·y + ln(1 + e^−|x|): the binary cross-entropy of the logit.
            let x = x as f64;
            loss += x.max(0.0) - x * f64::from(u8::from(y)) + (-x.abs()).exp().ln_1p();
            count += 1;
        }
    }
    (count > 0).then(|| loss / count as f64)
}

/// The metrics of multi-label `logits` with one threshold per label on the sigmoid.
pub fn evaluate(
    logits: &[Vec<f32>],
    truth: &[Vec<bool>],
    thresholds: &[f32],
    labels: &[String],
) -> MultiLabelReport {
    let predicted: Vec<Vec<bool>> = logits
        .iter()
        .map(|l| {
            l.iter()
                .zip(thresholds)
                .map(|(&x, &t)| super::sigmoid(x) >= t)
                .collect()
        })
        .collect();
    MultiLabelReport::compute(truth, &predicted, labels, mean_bce(logits, truth))
}

/// Candidate thresholds of [`tune_thresholds`]: 0.01 to 0.99.
const THRESHOLD_GRID: std::ops::RangeInclusive<u32> = 1..=99;

/// Per label, the threshold of 0.01, 0.02, ..., 0.99 that maximises the label's F1 on
/// (`logits`, `truth`); among equal F1s the one nearest `default`. A label without positive
/// examples keeps `default` (no threshold finds what is not there).
pub fn tune_thresholds(logits: &[Vec<f32>], truth: &[Vec<bool>], default: f32) -> Vec<f32> {
    let k = logits.first().map_or(0, Vec::len);
    (0..k)
        .map(|l| {
            let probabilities: Vec<f32> = logits.iter().map(|r| super::sigmoid(r[l])).collect();
            let actual = truth.iter().filter(|t| t[l]).count();
            if actual == 0 {
                return default;
            }
            let mut best = (f64::NEG_INFINITY, default);
            for step in THRESHOLD_GRID {
                let t = step as f32 / 100.0;
                let (mut tp, mut chosen) = (0, 0);
                for (p, truth) in probabilities.iter().zip(truth) {
                    if *p >= t {
                        chosen += 1;
                        tp += usize::from(truth[l]);
                    }
                }
                let f1 = f1(tp, chosen, actual);
                let nearer = (t - default).abs() < (best.1 - default).abs();
                if f1 > best.0 || (f1 == best.0 && nearer) {
                    best = (f1, t);
                }
            }
            best.1
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MultiLabelReport {
    pub examples: usize,
    /// F1 over every (example, label) decision pooled.
    pub micro_f1: f64,
    /// Mean of the labels' F1.
    pub macro_f1: f64,
    /// Mean of the labels' F1 weighted by their support.
    pub weighted_f1: f64,
    /// Mean of the examples' F1.
    pub samples_f1: f64,
    /// Share of examples whose predicted label set is exactly the true one.
    pub subset_accuracy: f64,
    /// Share of (example, label) decisions that are wrong.
    pub hamming_loss: f64,
    /// Mean binary cross-entropy, when the caller computed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    pub per_label: Vec<ClassReport>,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn f1(tp: usize, predicted: usize, actual: usize) -> f64 {
    // 2 tp / (2 tp + fp + fn), which is 0 when there is nothing to find or found.
    ratio(2 * tp, predicted + actual)
}

impl MultiLabelReport {
    /// `truth[i][l]` and `predicted[i][l]`: whether example `i` has label `l`.
    pub fn compute(
        truth: &[Vec<bool>],
        predicted: &[Vec<bool>],
        labels: &[String],
        loss: Option<f64>,
    ) -> Self {
        let k = labels.len();
        let n = truth.len();
        let (mut tp, mut actual, mut chosen) = (vec![0; k], vec![0; k], vec![0; k]);
        let (mut exact, mut wrong, mut samples_f1) = (0usize, 0usize, 0.0);
        for (t, p) in truth.iter().zip(predicted) {
            let (mut s_tp, mut s_actual, mut s_chosen) = (0, 0, 0);
            for l in 0..k {
                let (t, p) = (t[l], p[l]);
                tp[l] += usize::from(t && p);
                actual[l] += usize::from(t);
                chosen[l] += usize::from(p);
                s_tp += usize::from(t && p);
                s_actual += usize::from(t);
                s_chosen += usize::from(p);
                wrong += usize::from(t != p);
            }
            exact += usize::from(t == p);
            samples_f1 += f1(s_tp, s_chosen, s_actual);
        }
        let per_label: Vec<ClassReport> = (0..k)
            .map(|l| ClassReport {
                label: labels[l].clone(),
                precision: ratio(tp[l], chosen[l]),
                recall: ratio(tp[l], actual[l]),
                f1: f1(tp[l], chosen[l], actual[l]),
                support: actual[l],
            })
            .collect();
        let total_support: usize = actual.iter().sum();
        Self {
            examples: n,
            micro_f1: f1(tp.iter().sum(), chosen.iter().sum(), total_support),
            macro_f1: if k == 0 {
                0.0
            } else {
                per_label.iter().map(|c| c.f1).sum::<f64>() / k as f64
            },
            weighted_f1: if total_support == 0 {
                0.0
            } else {
                per_label
                    .iter()
                    .map(|c| c.f1 * c.support as f64)
                    .sum::<f64>()
                    / total_support as f64
            },
            samples_f1: if n == 0 { 0.0 } else { samples_f1 / n as f64 },
            subset_accuracy: ratio(exact, n),
            hamming_loss: ratio(wrong, n * k),
            loss,
            per_label,
        }
    }
}

impl std::fmt::Display for MultiLabelReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "examples         {}", self.examples)?;
        writeln!(f, "micro F1         {:.4}", self.micro_f1)?;
        writeln!(f, "macro F1         {:.4}", self.macro_f1)?;
        writeln!(f, "weighted F1      {:.4}", self.weighted_f1)?;
        writeln!(f, "samples F1       {:.4}", self.samples_f1)?;
        writeln!(f, "subset accuracy  {:.4}", self.subset_accuracy)?;
        writeln!(f, "Hamming loss     {:.4}", self.hamming_loss)?;
        if let Some(loss) = self.loss {
            writeln!(f, "loss             {loss:.4}")?;
        }
        writeln!(f)?;
        crate::metrics::write_per_class(f, "label", &self.per_label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_cells_are_lists_or_delimited_names() {
        let labels = LabelSet::from_names(vec!["joy".into(), "anger".into(), "love".into()]);
        let parse = |cell| flags(cell_names(cell, ",").unwrap(), &labels);
        assert_eq!(parse(r#"["joy", "love"]"#).unwrap(), [true, false, true]);
        assert_eq!(parse("anger, love").unwrap(), [false, true, true]);
        assert_eq!(parse("[]").unwrap(), [false; 3], "no label applies");
        assert_eq!(parse("").unwrap(), [false; 3]);
        assert_eq!(parse("joy,fear").unwrap_err(), "fear");
        assert!(
            cell_names("[1.5, {}]", ",")
                .unwrap_err()
                .contains("not a label name")
        );
        assert!(is_list(r#"["a"]"#) && is_list("[]") && !is_list("[a]") && !is_list("joy"));
    }

    #[test]
    fn tuned_thresholds_maximise_each_labels_f1() {
        // Label 0: positives at probabilities 0.355 and 0.45, negatives at 0.1 and 0.2: every
        // threshold from 0.21 to 0.35 separates them; 0.35 is the one nearest 0.5.
        // Label 1: no positives: keeps the default.
        let logit = |p: f32| (p / (1.0 - p)).ln();
        let logits: Vec<Vec<f32>> = [0.355, 0.45, 0.1, 0.2]
            .iter()
            .map(|&p| vec![logit(p), logit(0.9)])
            .collect();
        let truth = rows(&["10", "10", "00", "00"]);
        let t = tune_thresholds(&logits, &truth, 0.5);
        assert!((t[0] - 0.35).abs() < 1e-6, "{t:?}");
        assert_eq!(t[1], 0.5);
        let names = ["a".to_string(), "b".to_string()];
        assert_eq!(evaluate(&logits, &truth, &t, &names).per_label[0].f1, 1.0);
        assert_eq!(
            evaluate(&logits, &truth, &[0.5, 0.5], &names).per_label[0].f1,
            0.0
        );
    }

    fn rows(bits: &[&str]) -> Vec<Vec<bool>> {
        bits.iter()
            .map(|r| r.chars().map(|c| c == '1').collect())
            .collect()
    }

    /// The figures scikit-learn 1.9 gives for the same arrays (micro 0.6667, macro 0.5556,
    /// weighted 0.6667, samples 0.5, accuracy 0.25, Hamming loss 0.25):
    /// y_true = [[1,0,1],[0,1,0],[1,1,0],[0,0,0]], y_pred = [[1,0,0],[0,1,1],[1,0,0],[0,0,0]];
    /// f1_score(average=micro/macro/weighted/samples, zero_division=0), accuracy_score,
    /// hamming_loss.
    #[test]
    fn matches_scikit_learn() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let truth = rows(&["101", "010", "110", "000"]);
        let predicted = rows(&["100", "011", "100", "000"]);
        let r = MultiLabelReport::compute(&truth, &predicted, &labels, None);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        // tp 3, predicted 4, actual 5.
        assert!(close(r.micro_f1, 6.0 / 9.0), "{}", r.micro_f1);
        // a: tp 2 of 2 predicted, 2 actual → 1; b: 1/1, 1/2 → 2/3; c: 0 of 1 and 1 → 0.
        assert!(close(r.macro_f1, (1.0 + 2.0 / 3.0 + 0.0) / 3.0));
        assert!(close(
            r.weighted_f1,
            (2.0 * 1.0 + 2.0 * 2.0 / 3.0 + 0.0) / 5.0
        ));
        // Per sample: 2/3, 2/3, 2/3 and 0 (nothing to find, nothing found).
        assert!(close(r.samples_f1, 0.5), "{}", r.samples_f1);
        assert!(close(r.subset_accuracy, 0.25));
        assert!(close(r.hamming_loss, 3.0 / 12.0));
        assert_eq!(r.per_label[1].support, 2);
        assert!(close(r.per_label[1].precision, 1.0) && close(r.per_label[1].recall, 0.5));
    }
}
