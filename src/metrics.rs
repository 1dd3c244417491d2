//! Classification metrics: accuracy, per-class precision/recall/F1, macro and weighted F1 and
//! the confusion matrix, computed as scikit-learn does (a class never predicted has
//! precision 0).

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassReport {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub examples: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub weighted_f1: f64,
    /// Mean cross-entropy, when the caller computed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    pub per_class: Vec<ClassReport>,
    /// `confusion_matrix[true][predicted]`
    pub confusion_matrix: Vec<Vec<usize>>,
    pub labels: Vec<String>,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl Report {
    /// `truth` and `predicted` are label ids below `labels.len()`.
    pub fn compute(
        truth: &[usize],
        predicted: &[usize],
        labels: &[String],
        loss: Option<f64>,
    ) -> Self {
        let k = labels.len();
        let mut confusion = vec![vec![0usize; k]; k];
        for (&t, &p) in truth.iter().zip(predicted) {
            confusion[t][p] += 1;
        }
        let n = truth.len();
        let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
        let per_class: Vec<ClassReport> = (0..k)
            .map(|c| {
                let tp = confusion[c][c];
                let support: usize = confusion[c].iter().sum();
                let predicted: usize = confusion.iter().map(|row| row[c]).sum();
                let precision = ratio(tp, predicted);
                let recall = ratio(tp, support);
                let f1 = if precision + recall == 0.0 {
                    0.0
                } else {
                    2.0 * precision * recall / (precision + recall)
                };
                ClassReport {
                    label: labels[c].clone(),
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect();
        let macro_f1 = if k == 0 {
            0.0
        } else {
            per_class.iter().map(|c| c.f1).sum::<f64>() / k as f64
        };
        let weighted_f1 = if n == 0 {
            0.0
        } else {
            per_class
                .iter()
                .map(|c| c.f1 * c.support as f64)
                .sum::<f64>()
                / n as f64
        };
        Self {
            examples: n,
            accuracy: ratio(correct, n),
            macro_f1,
            weighted_f1,
            loss,
            per_class,
            confusion_matrix: confusion,
            labels: labels.to_vec(),
        }
    }
}

/// The per-class table of precision, recall, F1 and support, its first column headed
/// `heading`; no line break after the last row.
pub fn write_per_class(
    f: &mut fmt::Formatter<'_>,
    heading: &str,
    classes: &[ClassReport],
) -> fmt::Result {
    let width = classes
        .iter()
        .map(|c| c.label.chars().count())
        .max()
        .unwrap_or(5)
        .max(12);
    write!(f, "{heading:<width$}  precision  recall      f1  support")?;
    for c in classes {
        write!(
            f,
            "\n{:<width$}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}",
            c.label, c.precision, c.recall, c.f1, c.support
        )?;
    }
    Ok(())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .labels
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(5)
            .max(12);
        writeln!(f, "examples     {}", self.examples)?;
        writeln!(f, "accuracy     {:.4}", self.accuracy)?;
        writeln!(f, "macro F1     {:.4}", self.macro_f1)?;
        writeln!(f, "weighted F1  {:.4}", self.weighted_f1)?;
        if let Some(loss) = self.loss {
            writeln!(f, "loss         {loss:.4}")?;
        }
        writeln!(f)?;
        write_per_class(f, "class", &self.per_class)?;
        writeln!(f)?;
        writeln!(f)?;
        writeln!(f, "confusion matrix (rows: true, columns: predicted)")?;
        let cell = self
            .confusion_matrix
            .iter()
            .flatten()
            .map(|v| v.to_string().len())
            .chain(self.labels.iter().map(|l| l.chars().count()))
            .max()
            .unwrap_or(1);
        write!(f, "{:<width$}", "")?;
        for l in &self.labels {
            write!(f, "  {l:>cell$}")?;
        }
        for (l, row) in self.labels.iter().zip(&self.confusion_matrix) {
            writeln!(f)?;
            write!(f, "{l:<width$}")?;
            for v in row {
                write!(f, "  {v:>cell$}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scikit_learn_on_a_worked_example() {
        // sklearn.metrics.classification_report(y, p) for
        // y = [0,0,0,1,1,2], p = [0,0,1,1,2,2]
        let labels = vec!["a".to_string(), "b".into(), "c".into()];
        let r = Report::compute(&[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 2, 2], &labels, None);
        assert!((r.accuracy - 4.0 / 6.0).abs() < 1e-12);
        let a = &r.per_class[0];
        assert_eq!((a.precision, a.recall), (1.0, 2.0 / 3.0));
        assert!((a.f1 - 0.8).abs() < 1e-12);
        let b = &r.per_class[1];
        assert_eq!((b.precision, b.recall, b.f1), (0.5, 0.5, 0.5));
        let c = &r.per_class[2];
        assert!((c.f1 - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.macro_f1 - (0.8 + 0.5 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert!((r.weighted_f1 - (0.8 * 3.0 + 0.5 * 2.0 + 2.0 / 3.0) / 6.0).abs() < 1e-12);
        assert_eq!(
            r.confusion_matrix,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]
        );
    }

    #[test]
    fn never_predicted_class_has_zero_precision() {
        let labels = vec!["x".to_string(), "y".into()];
        let r = Report::compute(&[0, 1], &[0, 0], &labels, Some(0.5));
        assert_eq!(r.per_class[1].precision, 0.0);
        assert_eq!(r.per_class[1].f1, 0.0);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["accuracy"], 0.5);
        assert!(json["macro_f1"].is_number());
        assert!(r.to_string().contains("confusion matrix"));
    }
}
