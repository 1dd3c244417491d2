//! Training each task transformers knows (`problem_type`) on a tiny model: multi-label with
//! class weights and tuned thresholds, regression on sentence pairs, class weights and label
//! smoothing for single-label, early stopping; and the bad input each refuses.

mod common;

use std::path::Path;

use common::{Fixture, fails_with, ok, s, sentences, stdout};
use serde_json::Value;

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON Lines file whose label lists follow from words: `pos` for a positive sentence,
/// `neg` for a negative one, `film` when the text says "film", and no label for "!" alone
/// with a neutral word.
fn write_multi_label(path: &Path) {
    let mut lines = String::new();
    for (text, sentiment) in sentences() {
        let mut labels = vec![sentiment];
        if text.contains("film") {
            labels.push("film");
        }
        lines.push_str(&serde_json::json!({"text": text, "labels": labels}).to_string());
        lines.push('\n');
    }
    for text in ["ok !", "so so !", "fine ."] {
        lines.push_str(&serde_json::json!({"text": text, "labels": []}).to_string());
        lines.push('\n');
    }
    std::fs::write(path, lines).unwrap();
}

fn eval_json(fx: &Fixture, model: &Path, data: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["eval", "--model", s(model), "--data", s(data)];
    args.extend(["--device", "cpu", "--json"]);
    args.extend(extra);
    serde_json::from_str(&stdout(&ok(fx.run(&args)))).unwrap()
}

#[test]
fn multi_label_trains_with_pos_weight_and_tuned_thresholds_that_eval_and_predict_use() {
    let fx = Fixture::new("train-multi");
    let data = fx.path("multi.jsonl");
    write_multi_label(&data);
    let config = fx.config(&format!(
        "train_file = {data:?}\nvalidation_file = {data:?}\nvalidation_text_column = \"text\"\n\
         validation_label_column = \"labels\"\nlabel_column = \"labels\"\n\
         class_weights = \"balanced\"\nmax_class_weight = 2.5\ntune_thresholds = true"
    ));
    let out = ok(fx.run(&["train", "--config", s(&config)]));
    let err = common::stderr(&out);
    assert!(
        err.contains("task: multi_label_classification (detected: the label cells hold lists)"),
        "{err}"
    );
    assert!(err.contains("pos_weight: film "), "{err}");
    assert!(
        err.contains("thresholds tuned on the validation set"),
        "{err}"
    );
    let run = fx.path("run");

    let config_json = json(&run.join("config.json"));
    assert_eq!(config_json["problem_type"], "multi_label_classification");
    assert_eq!(config_json["num_labels"], 3);
    assert_eq!(config_json["id2label"]["0"], "film");
    let thresholds: Vec<f64> = config_json["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    assert_eq!(thresholds.len(), 3);
    assert!(thresholds.iter().all(|t| *t > 0.0 && *t < 1.0));

    // Balanced pos_weight: n_negative / n_positive, capped at 2.5: `film` is on 16 of 43
    // rows (27 / 16), `neg` and `pos` on 20 each (23 / 20).
    let args = json(&run.join("training_args.json"));
    let used = &args["class_weights_used"];
    assert!(
        (used["film"].as_f64().unwrap() - 27.0 / 16.0).abs() < 1e-6,
        "{used}"
    );
    assert!(
        (used["neg"].as_f64().unwrap() - 23.0 / 20.0).abs() < 1e-6,
        "{used}"
    );

    let results = json(&run.join("eval_results.json"));
    let macro_f1 = results["eval_macro_f1"].as_f64().unwrap();
    assert!(macro_f1 > 0.9, "the words decide the labels: {results}");
    assert_eq!(
        results["thresholds"]["film"].as_f64().unwrap(),
        thresholds[0]
    );

    // eval and predict use the saved thresholds: the same figures as the trainer's.
    // The training report draws the kept model's per-label bars.
    let report = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(report.contains("best model: precision, recall and F1 per label"));

    let evaluated = eval_json(&fx, &run, &data, &["--label-column", "labels"]);
    assert!(
        (evaluated["macro_f1"].as_f64().unwrap() - macro_f1).abs() < 1e-9,
        "{evaluated} vs {results}"
    );
    // --threshold decides every label at one threshold instead: never better on the data the
    // thresholds were tuned on, and only for multi-label models.
    let at_half = eval_json(
        &fx,
        &run,
        &data,
        &["--label-column", "labels", "--threshold", "0.5"],
    );
    assert!(at_half["macro_f1"].as_f64().unwrap() <= macro_f1 + 1e-12);
    let mut args = vec![
        "eval",
        "--model",
        s(&run),
        "--data",
        s(&data),
        "--label-column",
    ];
    args.extend(["labels", "--threshold", "1.5"]);
    fails_with(fx.run(&args), &["--threshold 1.5: must be between 0 and 1"]);

    let predicted = fx.path("predicted.jsonl");
    ok(fx.run(&[
        "predict",
        "--model",
        s(&run),
        "--input",
        s(&data),
        "--output",
        s(&predicted),
        "--device",
        "cpu",
    ]));
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&predicted)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(first["predicted_labels"].is_array(), "{first}");
}

#[test]
fn regression_on_sentence_pairs_is_detected_trained_and_reloaded() {
    let fx = Fixture::new("train-regression");
    // Similarity: 4.5 when both sentences have the same sentiment, 1.5 otherwise. The rows
    // alternate positive and negative: an even row is paired with the next (the other
    // sentiment), an odd one with the one after (the same).
    let rows = sentences();
    let mut csv = String::from("sentence1,sentence2,score\n");
    for (i, (a, la)) in rows.iter().enumerate() {
        let (b, lb) = &rows[(i + 1 + i % 2) % rows.len()];
        let score = if la == lb { "4.5" } else { "1.5" };
        csv.push_str(&format!("{a},{b},{score}\n"));
    }
    let data = fx.path("pairs.csv");
    std::fs::write(&data, csv).unwrap();
    let config = fx.config(&format!(
        "train_file = {data:?}\nvalidation_file = {data:?}\ntext_column = \"sentence1\"\n\
         text_pair_column = \"sentence2\"\nlabel_column = \"score\"\nvalidation_text_column = \"sentence1\"\n\
         validation_label_column = \"score\""
    ));
    let out = ok(fx.run(&["train", "--config", s(&config)]));
    let err = common::stderr(&out);
    assert!(
        err.contains("task: regression (detected: the labels are decimal numbers)"),
        "{err}"
    );
    assert!(err.contains("best model by eval_pearson"), "{err}");
    let run = fx.path("run");
    let config_json = json(&run.join("config.json"));
    assert_eq!(config_json["problem_type"], "regression");
    assert_eq!(config_json["num_labels"], 1);
    assert_eq!(config_json["id2label"]["0"], "LABEL_0");
    let results = json(&run.join("eval_results.json"));
    let pearson = results["eval_pearson"].as_f64().unwrap();
    assert!(pearson > 0.8, "{results}");
    assert_eq!(results["eval_loss"], results["eval_mse"]);
    // The training report draws the kept model's predictions against gold: one dot per row.
    let state = json(&run.join("trainer_state.json"));
    assert_eq!(state["best_predictions"].as_array().unwrap().len(), 40);
    let report = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(report.contains("best model: predicted against gold"));
    let evaluated = eval_json(
        &fx,
        &run,
        &data,
        &[
            "--text-column",
            "sentence1",
            "--text-pair-column",
            "sentence2",
            "--label-column",
            "score",
        ],
    );
    assert!(
        (evaluated["pearson"].as_f64().unwrap() - pearson).abs() < 1e-6,
        "{evaluated} vs {results}"
    );
}

#[test]
fn single_label_class_weights_and_label_smoothing_are_used_and_recorded() {
    let fx = Fixture::new("train-weights");
    let out = ok(fx.train_one_step(
        "class_weights = { pos = 3.0 }\nlabel_smoothing_factor = 0.1\nmetric_for_best_model = \"macro_f1\"",
    ));
    let err = common::stderr(&out);
    assert!(err.contains("class weights: neg 1.000, pos 3.000"), "{err}");
    assert!(err.contains("best model by eval_macro_f1"), "{err}");
    let out = ok(fx.train_one_step("class_weights = \"balanced\""));
    assert!(
        common::stderr(&out).contains("class weights: neg 1.000, pos 1.000"),
        "balanced data: {}",
        common::stderr(&out)
    );
}

#[test]
fn early_stopping_ends_training_when_the_metric_stops_improving() {
    let fx = Fixture::new("train-early");
    // A learning rate too small to change a prediction: every evaluation equals the first.
    let config = fx.config(
        "learning_rate = 1e-12\neval_strategy = \"steps\"\neval_steps = 1\n\
         early_stopping_patience = 2\nsave_strategy = \"no\"\nnum_train_epochs = 3",
    );
    let out = ok(fx.run(&["train", "--config", s(&config)]));
    let err = common::stderr(&out);
    assert!(
        err.contains("early stopping at step 3: eval_accuracy did not improve by more than 0 in 2 evaluation(s)"),
        "{err}"
    );
    let state = json(&fx.path("run/trainer_state.json"));
    assert_eq!(state["global_step"], 3);
    assert_eq!(state["stopped_early_at"], 3);
    let report = std::fs::read_to_string(fx.path("run/report.html")).unwrap();
    assert!(report.contains("stopped early (step 3)"));
    assert!(report.contains("Finished"));
}

#[test]
fn bad_task_input_is_one_line_naming_file_line_and_field() {
    let fx = Fixture::new("train-task-errors");
    let lists = fx.path("lists.jsonl");
    std::fs::write(
        &lists,
        "{\"text\": \"good\", \"labels\": [\"pos\"]}\n{\"text\": \"bad\", \"labels\": 3.5}\n",
    )
    .unwrap();
    let base = format!(
        "train_file = {lists:?}\nvalidation_file = {lists:?}\nvalidation_text_column = \"text\"\n\
         label_column = \"labels\"\nvalidation_label_column = \"labels\""
    );
    fails_with(
        fx.train_one_step(&base),
        &["lists.jsonl:2", "column `labels`", "the number `3.5`"],
    );

    let scores = fx.path("scores.csv");
    std::fs::write(
        &scores,
        "text,score\ngood,4.5\nbad,\"[\"\"neg\"\"]\"\nok,nan\n",
    )
    .unwrap();
    let base = format!(
        "train_file = {scores:?}\nvalidation_file = {scores:?}\nvalidation_text_column = \"text\"\n\
         label_column = \"score\"\nvalidation_label_column = \"score\"\nproblem_type = \"regression\""
    );
    fails_with(
        fx.train_one_step(&base),
        &["scores.csv:3", "column `score`", "not a finite number"],
    );
    std::fs::write(&scores, "text,score\ngood,4.5\nbad,1.5\nok,NaN\n").unwrap();
    fails_with(
        fx.train_one_step(&base),
        &["scores.csv:4", "`NaN`", "not a finite number"],
    );
    std::fs::write(&scores, "text,score\ngood,4.5\nbad,1.5\n").unwrap();
    fails_with(
        fx.train_one_step(&format!("{base}\nclass_weights = \"balanced\"")),
        &["config.toml:", "class_weights does not apply to regression"],
    );
    fails_with(
        fx.train_one_step(&format!("{base}\nmetric_for_best_model = \"accuracy\"")),
        &[
            "metric_for_best_model = \"accuracy\" does not apply to regression",
            "pearson",
        ],
    );

    let single = fx.train();
    let dev = fx.path("dev.tsv");
    let mut args = vec![
        "eval",
        "--model",
        s(&single),
        "--data",
        s(&dev),
        "--text-column",
    ];
    args.extend([
        "content",
        "--label-column",
        "sentiment",
        "--threshold",
        "0.3",
    ]);
    fails_with(
        fx.run(&args),
        &["--threshold 0.3: applies to multi-label models only"],
    );
    fails_with(
        fx.train_one_step("threshold = 1.5"),
        &["config.toml:", "threshold must be between 0 and 1"],
    );
    fails_with(
        fx.train_one_step("class_weights = { joy = 2.0 }"),
        &["class_weights names label `joy`", "labels: neg, pos"],
    );
    fails_with(
        fx.train_one_step("class_weights = [1.0, 2.0, 3.0]"),
        &["class_weights lists 3 weights for 2 labels"],
    );
    fails_with(
        fx.train_one_step("tune_thresholds = true"),
        &[
            "tune_thresholds applies to multi_label_classification only",
            "one label name per row",
        ],
    );
}
