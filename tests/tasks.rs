//! predict and eval on models of each task transformers saves (`problem_type`): the columns
//! and answers each task gets, and what is refused.

mod common;

use std::path::{Path, PathBuf};

use bertcls::infer::{Batching, Classifier, LoadOptions};
use bertcls::task::Prediction;
use common::{bertcls, fails_with, fine_tuned, ok, s, stdout, temp_dir};

const TEXTS: [&str; 4] = [
    "a great film",
    "awful",
    "the movie was fun",
    "not a boring film",
];

/// A model folder of a task, and a CSV of TEXTS beside it.
fn setup(tag: &str, labels: &[&str], problem_type: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(tag);
    let model = dir.join("model");
    fine_tuned(&model, labels, problem_type);
    let input = dir.join("in.csv");
    let rows: String = TEXTS.iter().map(|t| format!("{t}\n")).collect();
    std::fs::write(&input, format!("text\n{rows}")).unwrap();
    (model, input)
}

fn predict_csv(
    model: &Path,
    input: &Path,
    extra: &[&str],
) -> (Vec<String>, Vec<csv::StringRecord>) {
    let output = input.with_file_name("out.csv");
    let mut args = vec!["predict", "--model", s(model), "--input", s(input)];
    args.extend(["--output", s(&output), "--device", "cpu"]);
    args.extend(extra);
    ok(bertcls(&model.join("cache")).args(&args).output().unwrap());
    let mut reader = csv::Reader::from_path(&output).unwrap();
    let headers = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    (headers, reader.records().map(Result::unwrap).collect())
}

fn library_predictions(model: &Path) -> Vec<Prediction> {
    let classifier = Classifier::load(model, &LoadOptions::cpu()).unwrap();
    let inputs: Vec<_> = TEXTS.iter().map(|&t| t.into()).collect();
    classifier.predict(&inputs, Batching::rows(8)).unwrap()
}

/// `predict --text "a great film" --json`.
fn predict_text_json(model: &Path) -> serde_json::Value {
    let out = ok(bertcls(&model.join("cache"))
        .args([
            "predict",
            "--model",
            s(model),
            "--text",
            "a great film",
            "--json",
        ])
        .output()
        .unwrap());
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn multi_label_rows_get_the_labels_over_threshold_and_each_probability() {
    let labels = ["joy", "anger", "love"];
    let (model, input) = setup("multi", &labels, "multi_label_classification");
    let (headers, rows) = predict_csv(&model, &input, &["--all-probs", "--label-delimiter", "|"]);
    assert_eq!(
        headers,
        [
            "text",
            "predicted_labels",
            "prob_joy",
            "prob_anger",
            "prob_love"
        ]
    );
    let expected = library_predictions(&model);
    let mut chosen_any = 0;
    for (row, prediction) in rows.iter().zip(expected) {
        let Prediction::MultiLabel {
            probabilities,
            labels: chosen,
        } = prediction
        else {
            panic!("a multi-label prediction");
        };
        let names: Vec<&str> = chosen.iter().map(|&i| labels[i]).collect();
        assert_eq!(&row[1], names.join("|"));
        chosen_any += chosen.len();
        for (i, p) in probabilities.iter().enumerate() {
            let written: f32 = row[2 + i].parse().unwrap();
            assert!((written - p).abs() < 1e-6);
            assert_eq!(*p >= 0.5, names.contains(&labels[i]), "threshold 0.5");
        }
    }
    assert!(chosen_any > 0, "some label is predicted somewhere");
}

#[test]
fn regression_rows_get_the_predicted_value() {
    let (model, input) = setup("regression", &["similarity"], "regression");
    let (headers, rows) = predict_csv(&model, &input, &["--all-probs"]);
    assert_eq!(
        headers,
        ["text", "prediction"],
        "no probabilities for a regression"
    );
    for (row, prediction) in rows.iter().zip(library_predictions(&model)) {
        let Prediction::Regression { values } = prediction else {
            panic!("a regression prediction");
        };
        let written: f32 = row[1].parse().unwrap();
        assert!((written - values[0]).abs() < 1e-5);
    }
    let json = predict_text_json(&model);
    assert!(json[0]["value"].is_f64(), "{json}");
}

#[test]
fn predict_text_answers_in_each_tasks_terms() {
    let (model, _) = setup(
        "text-multi",
        &["joy", "anger"],
        "multi_label_classification",
    );
    let json = predict_text_json(&model);
    assert!(
        json[0]["labels"].is_array() && json[0]["probabilities"].is_array(),
        "{json}"
    );
    assert!(json[0].get("label").is_none(), "{json}");
}

#[test]
fn what_a_task_cannot_do_is_refused_naming_why() {
    let (model, input) = setup(
        "refused",
        &["joy", "anger,rage"],
        "multi_label_classification",
    );
    let output = input.with_file_name("out.csv");
    let cache = model.join("cache");
    let predict = |out: &PathBuf| {
        bertcls(&cache)
            .args([
                "predict",
                "--model",
                s(&model),
                "--input",
                s(&input),
                "--output",
                s(out),
            ])
            .output()
            .unwrap()
    };
    fails_with(
        predict(&output),
        &["label `anger,rage`", "--label-delimiter"],
    );
    assert!(!output.exists());
    ok(predict(&input.with_file_name("out.jsonl")));

    let config = model.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("multi_label_classification", "ranking"),
    )
    .unwrap();
    fails_with(
        bertcls(&cache)
            .args(["predict", "--model", s(&model), "--text", "good"])
            .output()
            .unwrap(),
        &["config.json", "problem_type `ranking`"],
    );
}

#[test]
fn eval_of_a_regression_measures_its_errors_and_correlations() {
    let (model, _) = setup("eval-regression", &["similarity"], "regression");
    let data = model.with_file_name("scored.csv");
    let truth = [4.5, 0.5, 3.0, 1.0];
    let rows: String = TEXTS
        .iter()
        .zip(truth)
        .map(|(t, v)| format!("{v},{t}\n"))
        .collect();
    std::fs::write(&data, format!("score,text\n{rows}")).unwrap();
    let cache = model.join("cache");
    let eval = |data: &Path| {
        bertcls(&cache)
            .args(["eval", "--model", s(&model), "--data", s(data)])
            .args(["--label-column", "score", "--json"])
            .output()
            .unwrap()
    };
    let report: serde_json::Value = serde_json::from_str(&stdout(&ok(eval(&data)))).unwrap();
    let predicted: Vec<f64> = library_predictions(&model)
        .into_iter()
        .map(|p| match p {
            Prediction::Regression { values } => values[0] as f64,
            other => panic!("a regression prediction, not {other:?}"),
        })
        .collect();
    let mse = predicted
        .iter()
        .zip(truth)
        .map(|(p, t)| (p - t) * (p - t))
        .sum::<f64>()
        / 4.0;
    assert_eq!(report["examples"], 4);
    assert!(
        (report["mse"].as_f64().unwrap() - mse).abs() < 1e-5,
        "{report}"
    );
    for key in ["rmse", "mae", "pearson", "spearman", "r2"] {
        assert!(report[key].is_f64(), "{key} in {report}");
    }

    std::fs::write(&data, "score,text\n4.5,good\nhigh,bad\n").unwrap();
    fails_with(
        eval(&data),
        &[
            "scored.csv:3",
            "column `score` holds `high`, not a finite number",
        ],
    );
}

#[test]
fn eval_of_a_multi_label_model_reads_lists_and_delimited_cells() {
    let labels = ["joy", "anger", "love"];
    let (model, _) = setup("eval-multi", &labels, "multi_label_classification");
    let truth: [&[&str]; 4] = [&["joy", "love"], &[], &["anger"], &["joy"]];
    let jsonl = model.with_file_name("labelled.jsonl");
    let csv = model.with_file_name("labelled.csv");
    let mut jsonl_rows = String::new();
    let mut csv_rows = String::from("text,labels\n");
    for (text, labels) in TEXTS.iter().zip(truth) {
        let row = serde_json::json!({"text": text, "labels": labels});
        jsonl_rows.push_str(&format!("{row}\n"));
        csv_rows.push_str(&format!("{text},{}\n", labels.join("|")));
    }
    std::fs::write(&jsonl, jsonl_rows).unwrap();
    std::fs::write(&csv, csv_rows).unwrap();
    let cache = model.join("cache");
    let eval = |data: &Path, extra: &[&str]| {
        bertcls(&cache)
            .args(["eval", "--model", s(&model), "--data", s(data)])
            .args(["--label-column", "labels", "--json"])
            .args(extra)
            .output()
            .unwrap()
    };
    let from_lists: serde_json::Value =
        serde_json::from_str(&stdout(&ok(eval(&jsonl, &[])))).unwrap();
    let from_cells: serde_json::Value =
        serde_json::from_str(&stdout(&ok(eval(&csv, &["--label-delimiter", "|"])))).unwrap();
    assert_eq!(from_lists, from_cells, "the same labels, read two ways");

    let predicted: Vec<Vec<usize>> = library_predictions(&model)
        .into_iter()
        .map(|p| match p {
            Prediction::MultiLabel { labels, .. } => labels,
            other => panic!("a multi-label prediction, not {other:?}"),
        })
        .collect();
    let exact = predicted
        .iter()
        .zip(truth)
        .filter(|(p, t)| {
            let names: Vec<&str> = p.iter().map(|&i| labels[i]).collect();
            names.len() == t.len() && t.iter().all(|l| names.contains(l))
        })
        .count();
    assert_eq!(from_lists["examples"], 4);
    assert_eq!(from_lists["subset_accuracy"], exact as f64 / 4.0);
    let support: Vec<u64> = from_lists["per_label"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["support"].as_u64().unwrap())
        .collect();
    assert_eq!(support, [2, 1, 1]);
    assert!(from_lists["loss"].as_f64().unwrap() > 0.0);

    std::fs::write(&csv, "text,labels\ngood,joy\nbad,fear|joy\n").unwrap();
    fails_with(
        eval(&csv, &["--label-delimiter", "|"]),
        &[
            "labelled.csv:3: column `labels`",
            "label `fear` was not seen in training (known labels: joy, anger, love)",
        ],
    );
}

#[test]
fn training_on_mixed_or_empty_labels_is_refused_naming_the_row() {
    let fx = common::Fixture::new("train-lists");
    let data = fx.path("lists.jsonl");
    std::fs::write(
        &data,
        "{\"text\": \"good\", \"label\": [\"pos\"]}\n{\"text\": \"bad\", \"label\": \"neg\"}\n",
    )
    .unwrap();
    let config = fx.config(&format!("train_file = {data:?}\nvalidation_file = {data:?}\nvalidation_text_column = \"text\"\nvalidation_label_column = \"label\""));
    fails_with(
        fx.train_one_step_into(&config, &fx.path("out")),
        &["lists.jsonl:2", "holds `neg`, not a JSON list of labels"],
    );
    // An empty cell is "no label applies" to a multi-label model, never a class.
    std::fs::write(
        &data,
        "{\"text\": \"good\", \"label\": \"pos\"}\n{\"text\": \"bad\", \"label\": \" \"}\n",
    )
    .unwrap();
    fails_with(
        fx.train_one_step_into(&config, &fx.path("out2")),
        &["lists.jsonl:2", "column `label` holds an empty label"],
    );
}
