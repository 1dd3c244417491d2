//! Training targets: how a data file's label cells become what a task's loss compares the
//! logits with, which task a file holds when the config does not say, and the class weights
//! of imbalanced data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{ProblemType, multi_label};
use crate::data::{DataError, LabelSet, Row};

/// The targets of a data set, one per row.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Single-label: class ids.
    Classes(Vec<usize>),
    /// Multi-label: per row, whether each label applies.
    LabelSets(Vec<Vec<bool>>),
    /// Regression: the values.
    Values(Vec<f32>),
}

impl Targets {
    pub fn len(&self) -> usize {
        match self {
            Self::Classes(v) => v.len(),
            Self::LabelSets(v) => v.len(),
            Self::Values(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The targets of the rows `indices` as the loss takes them: u32 class ids, a rows ×
    /// labels f32 matrix of 0/1, or f32 values.
    pub fn batch(&self, indices: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Self::Classes(v) => {
                let ids: Vec<u32> = indices.iter().map(|&i| v[i] as u32).collect();
                Tensor::new(ids.as_slice(), device)
            }
            Self::LabelSets(v) => {
                let k = indices.first().map_or(0, |&i| v[i].len());
                let flat: Vec<f32> = indices
                    .iter()
                    .flat_map(|&i| v[i].iter().map(|&b| f32::from(u8::from(b))))
                    .collect();
                Tensor::from_vec(flat, (indices.len(), k), device)
            }
            Self::Values(v) => {
                let values: Vec<f32> = indices.iter().map(|&i| v[i]).collect();
                Tensor::new(values.as_slice(), device)
            }
        }
    }
}

/// `class_weights` in the config: computed from the training data, or given per label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClassWeights {
    /// `"balanced"`.
    Computed(WeightRule),
    /// One weight per label, in label order.
    List(Vec<f64>),
    /// Weights by label name; labels not named weigh 1.
    Table(BTreeMap<String, f64>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightRule {
    /// Single-label: n_samples / (n_classes · count), as scikit-learn's
    /// `compute_class_weight("balanced")`. Multi-label: n_negative / n_positive per label,
    /// PyTorch's recipe for `BCEWithLogitsLoss(pos_weight)`.
    Balanced,
    /// Every label weighs 1: the default, written out to switch a config's weights off
    /// from the command line (`--set 'class_weights="none"'`).
    None,
}

/// Where a label column is read from, for errors.
#[derive(Debug, Clone, Copy)]
pub struct LabelColumn<'a> {
    pub file: &'a Path,
    pub column: &'a str,
    /// Separates the labels of a multi-label cell (`joy,love`).
    pub delimiter: &'a str,
}

impl LabelColumn<'_> {
    fn error(&self, row: &Row, message: String) -> DataError {
        DataError::Row {
            file: self.file.to_path_buf(),
            line: row.line,
            message: format!("column `{}` {message}", self.column),
        }
    }
}

fn cell(row: &Row) -> &str {
    row.label.as_deref().unwrap_or("")
}

/// Whether `text` is written as a number with a fraction or exponent (`3.8`, `5.000`): what
/// makes transformers read a label column as floats.
fn is_float(text: &str) -> bool {
    let text = text.trim();
    text.parse::<i64>().is_err() && text.parse::<f64>().is_ok()
}

fn has_lists(rows: &[Row]) -> bool {
    rows.iter().any(|r| multi_label::is_list(cell(r)))
}

/// The task of a training file, as `run_classification.py` decides it, and why: JSON lists
/// of labels (or a `label_delimiter` in the config) make it multi-label; numbers with a
/// fraction make it a regression; anything else is single-label.
pub fn detect(rows: &[Row], delimiter_given: bool) -> (ProblemType, &'static str) {
    if has_lists(rows) {
        return (
            ProblemType::MultiLabelClassification,
            "the label cells hold lists",
        );
    }
    if delimiter_given {
        return (
            ProblemType::MultiLabelClassification,
            "label_delimiter is set",
        );
    }
    let numbers = rows.iter().all(|r| cell(r).trim().parse::<f64>().is_ok());
    if numbers && rows.iter().any(|r| is_float(cell(r))) {
        return (ProblemType::Regression, "the labels are decimal numbers");
    }
    (
        ProblemType::SingleLabelClassification,
        "one label name per row",
    )
}

/// The labels of a training file for `problem`, sorted as [`LabelSet::from_rows`] sorts:
/// each distinct cell (single-label), each name any cell lists (multi-label), or the one
/// output `LABEL_0` that transformers names a regression's.
pub fn label_set(
    problem: ProblemType,
    rows: &[Row],
    column: &LabelColumn,
) -> Result<LabelSet, DataError> {
    match problem {
        ProblemType::SingleLabelClassification => {
            if let Some(row) = rows.iter().find(|r| cell(r).trim().is_empty()) {
                return Err(column.error(row, "holds an empty label".into()));
            }
            if let Some(row) = rows.iter().find(|r| multi_label::is_list(cell(r))) {
                return Err(column.error(
                    row,
                    "holds a list of labels: set problem_type = \
                     \"multi_label_classification\" (or leave it out to detect it)"
                        .into(),
                ));
            }
            Ok(LabelSet::from_rows(rows))
        }
        ProblemType::MultiLabelClassification => {
            let lists = has_lists(rows);
            let mut names = BTreeSet::new();
            for row in rows {
                names.extend(multi_label_names(row, lists, column)?);
            }
            Ok(LabelSet::sorted(names))
        }
        ProblemType::Regression => Ok(LabelSet::from_names(vec!["LABEL_0".into()])),
    }
}

/// The names of a multi-label row. A file that lists labels as JSON lists must do so on
/// every row, and a bare decimal number is no label name: both point at a wrong file or
/// task.
/// `lists`: whether any row of the file holds a JSON list.
fn multi_label_names(
    row: &Row,
    lists: bool,
    column: &LabelColumn,
) -> Result<Vec<String>, DataError> {
    let text = cell(row);
    if is_float(text) {
        return Err(column.error(
            row,
            format!("holds the number `{text}`, not label names (the task is multi-label)"),
        ));
    }
    if !text.trim().is_empty() && !multi_label::is_list(text) && lists {
        return Err(column.error(
            row,
            format!("holds `{text}`, not a JSON list of labels as other rows do"),
        ));
    }
    multi_label::cell_names(text, column.delimiter).map_err(|why| column.error(row, why))
}

/// The targets of `rows` for `problem` and the training labels `labels`. A label not among
/// them, an empty single-label cell or a regression value that is not a finite number is an
/// error naming the row.
pub fn targets(
    problem: ProblemType,
    rows: &[Row],
    labels: &LabelSet,
    column: &LabelColumn,
) -> Result<Targets, DataError> {
    match problem {
        ProblemType::SingleLabelClassification => rows
            .iter()
            .map(|row| crate::data::label_id(column.file, row, labels))
            .collect::<Result<_, _>>()
            .map(Targets::Classes),
        ProblemType::MultiLabelClassification => {
            let lists = has_lists(rows);
            rows.iter()
                .map(|row| {
                    let names = multi_label_names(row, lists, column)?;
                    multi_label::flags(names, labels).map_err(|name| {
                        column.error(
                            row,
                            format!(
                                "label `{name}` was not seen in training (known labels: {})",
                                labels.names().join(", ")
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()
                .map(Targets::LabelSets)
        }
        ProblemType::Regression => rows
            .iter()
            .map(|row| {
                let text = cell(row);
                match text.trim().parse::<f32>() {
                    Ok(v) if v.is_finite() => Ok(v),
                    _ => Err(column.error(
                        row,
                        format!("holds `{text}`, not a finite number (the task is regression)"),
                    )),
                }
            })
            .collect::<Result<_, _>>()
            .map(Targets::Values),
    }
}

/// The weight of each label that `weights` gives for `targets`: class weights of the
/// cross-entropy (single-label) or `pos_weight` of the binary cross-entropy (multi-label).
/// Computed weights are capped at `cap`; a multi-label label without positive examples
/// weighs 1 (its positive term never occurs). Errors name the offending label or value.
pub fn class_weights(
    weights: &ClassWeights,
    targets: &Targets,
    labels: &LabelSet,
    cap: Option<f64>,
) -> Result<Vec<f32>, String> {
    let k = labels.len();
    let computed: Vec<f64> = match (weights, targets) {
        (_, Targets::Values(_)) => {
            return Err("does not apply to a regression".into());
        }
        (ClassWeights::Computed(WeightRule::None), _) => vec![1.0; k],
        (ClassWeights::Computed(WeightRule::Balanced), Targets::Classes(ids)) => {
            let mut counts = vec![0usize; k];
            for &id in ids {
                counts[id] += 1;
            }
            counts
                .iter()
                .map(|&c| ids.len() as f64 / (k as f64 * c.max(1) as f64))
                .collect()
        }
        (ClassWeights::Computed(WeightRule::Balanced), Targets::LabelSets(rows)) => (0..k)
            .map(|l| {
                let positive = rows.iter().filter(|r| r[l]).count();
                if positive == 0 {
                    1.0
                } else {
                    (rows.len() - positive) as f64 / positive as f64
                }
            })
            .collect(),
        (ClassWeights::List(list), _) => {
            if list.len() != k {
                return Err(format!(
                    "lists {} weights for {k} labels ({})",
                    list.len(),
                    labels.names().join(", ")
                ));
            }
            list.clone()
        }
        (ClassWeights::Table(table), _) => {
            let mut w = vec![1.0; k];
            for (name, &value) in table {
                let id = labels.id(name).ok_or_else(|| {
                    format!(
                        "names label `{name}`, which the training data does not have (labels: {})",
                        labels.names().join(", ")
                    )
                })?;
                w[id] = value;
            }
            w
        }
    };
    if let Some((i, w)) = computed
        .iter()
        .enumerate()
        .find(|(_, w)| !(w.is_finite() && **w > 0.0))
    {
        return Err(format!(
            "gives label `{}` the weight {w}; weights must be positive numbers",
            labels.name(i)
        ));
    }
    let capped = match (weights, cap) {
        (ClassWeights::Computed(_), Some(cap)) => computed.iter().map(|w| w.min(cap)).collect(),
        _ => computed,
    };
    Ok(capped.iter().map(|&w| w as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(cells: &[&str]) -> Vec<Row> {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| Row {
                line: i as u64 + 2,
                text: "t".into(),
                text_pair: None,
                label: Some(c.to_string()),
            })
            .collect()
    }

    fn column() -> LabelColumn<'static> {
        LabelColumn {
            file: Path::new("data.csv"),
            column: "label",
            delimiter: ",",
        }
    }

    #[test]
    fn detection_follows_run_classification() {
        let detect = |cells: &[&str], d| detect(&rows(cells), d).0;
        use ProblemType::*;
        assert_eq!(
            detect(&[r#"["joy"]"#, "[]"], false),
            MultiLabelClassification
        );
        assert_eq!(detect(&["joy,love", "joy"], true), MultiLabelClassification);
        assert_eq!(detect(&["3.8", "5"], false), Regression);
        assert_eq!(detect(&["5.000", "1.000"], false), Regression);
        assert_eq!(detect(&["0", "1"], false), SingleLabelClassification);
        assert_eq!(detect(&["pos", "3.5"], false), SingleLabelClassification);
    }

    #[test]
    fn each_task_reads_its_targets() {
        let multi = rows(&[r#"["joy", "love"]"#, "[]", r#"["anger"]"#]);
        let problem = ProblemType::MultiLabelClassification;
        let labels = label_set(problem, &multi, &column()).unwrap();
        assert_eq!(labels.names(), ["anger", "joy", "love"]);
        let t = targets(problem, &multi, &labels, &column()).unwrap();
        assert_eq!(
            t,
            Targets::LabelSets(vec![
                vec![false, true, true],
                vec![false; 3],
                vec![true, false, false]
            ])
        );
        let batch = t.batch(&[2, 0], &Device::Cpu).unwrap();
        assert_eq!(
            batch.to_vec2::<f32>().unwrap(),
            [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]
        );

        let delimited = rows(&["joy,love", "", "anger"]);
        let t = targets(problem, &delimited, &labels, &column()).unwrap();
        assert_eq!(t.len(), 3);

        let scores = rows(&["3.8", "0.5"]);
        let problem = ProblemType::Regression;
        let labels = label_set(problem, &scores, &column()).unwrap();
        assert_eq!(labels.names(), ["LABEL_0"]);
        assert_eq!(
            targets(problem, &scores, &labels, &column()).unwrap(),
            Targets::Values(vec![3.8, 0.5])
        );
    }

    #[test]
    fn wrong_cells_are_errors_naming_the_row() {
        let message = |r: Result<Targets, DataError>| r.unwrap_err().to_string();
        let labels = LabelSet::from_names(vec!["LABEL_0".into()]);
        let e = message(targets(
            ProblemType::Regression,
            &rows(&["1.5", "nan"]),
            &labels,
            &column(),
        ));
        assert!(
            e.starts_with("data.csv:3: column `label` holds `nan`"),
            "{e}"
        );
        let e = message(targets(
            ProblemType::Regression,
            &rows(&["1.5", r#"["joy"]"#]),
            &labels,
            &column(),
        ));
        assert!(
            e.contains("data.csv:3:") && e.contains("not a finite number"),
            "{e}"
        );

        let problem = ProblemType::MultiLabelClassification;
        let e = label_set(problem, &rows(&[r#"["joy"]"#, "3.5"]), &column()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("data.csv:3: column `label` holds the number `3.5`"),
            "{e}"
        );
        let e = label_set(problem, &rows(&[r#"["joy"]"#, "joy"]), &column()).unwrap_err();
        assert!(e.to_string().contains("not a JSON list"), "{e}");
        let labels = LabelSet::from_names(vec!["joy".into()]);
        let e = targets(problem, &rows(&["joy,fear"]), &labels, &column()).unwrap_err();
        assert!(
            e.to_string()
                .contains("label `fear` was not seen in training"),
            "{e}"
        );
    }

    #[test]
    fn balanced_weights_as_scikit_learn_and_pytorch() {
        let labels = LabelSet::from_names(vec!["a".into(), "b".into()]);
        // 3 a, 1 b: 4 / (2·3) and 4 / (2·1).
        let single = Targets::Classes(vec![0, 0, 0, 1]);
        let balanced = ClassWeights::Computed(WeightRule::Balanced);
        let w = class_weights(&balanced, &single, &labels, None).unwrap();
        assert!((w[0] - 2.0 / 3.0).abs() < 1e-6 && w[1] == 2.0, "{w:?}");
        assert_eq!(
            class_weights(&balanced, &single, &labels, Some(1.5)).unwrap()[1],
            1.5
        );
        // a on 1 of 4 rows: 3 negatives per positive; b on none: 1.
        let multi = Targets::LabelSets(vec![
            vec![true, false],
            vec![false, false],
            vec![false, false],
            vec![false, false],
        ]);
        assert_eq!(
            class_weights(&balanced, &multi, &labels, None).unwrap(),
            [3.0, 1.0]
        );
        let table = ClassWeights::Table([("b".to_string(), 4.0)].into_iter().collect());
        assert_eq!(
            class_weights(&table, &single, &labels, None).unwrap(),
            [1.0, 4.0]
        );
        let unknown = ClassWeights::Table([("c".to_string(), 4.0)].into_iter().collect());
        let e = class_weights(&unknown, &single, &labels, None).unwrap_err();
        assert!(e.contains("`c`"), "{e}");
        let e = class_weights(&ClassWeights::List(vec![1.0]), &single, &labels, None).unwrap_err();
        assert!(e.contains("1 weights for 2 labels"), "{e}");
        let e = class_weights(&ClassWeights::List(vec![1.0, -1.0]), &single, &labels, None)
            .unwrap_err();
        assert!(e.contains("label `b` the weight -1"), "{e}");
        assert!(class_weights(&balanced, &Targets::Values(vec![1.0]), &labels, None).is_err());
    }
}
