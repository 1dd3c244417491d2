//! The training report: report.html of a tiny run parses as XML, holds one chart per promised
//! plot, and its loss curve is the logged loss read back from the SVG; log_history.csv holds
//! the log; a report is written on Ctrl-C; `bertcls report` rebuilds it; `eval --report`
//! draws the evaluation charts, with label names from the model escaped.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bertcls::report::charts;
use common::{Fixture, assert_no_temp_files, bertcls, ok, s, stderr};
use roxmltree::{Document, Node, ParsingOptions};

/// The charts every single-label training report with validation holds.
const TRAINING_CHARTS: [&str; 9] = [
    "chart-loss",
    "chart-learning-rate",
    "chart-grad-norm",
    "chart-eval-loss",
    "chart-eval-accuracy",
    "chart-eval-macro-f1",
    "chart-eval-weighted-f1",
    "chart-confusion",
    "chart-per-class",
];

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses a report as XML (the DOCTYPE allowed): a browser reads well-formed XHTML alike.
fn parse(text: &str) -> Document<'_> {
    let options = ParsingOptions {
        allow_dtd: true,
        ..ParsingOptions::default()
    };
    Document::parse_with_options(text, options).unwrap_or_else(|e| panic!("not XML: {e}"))
}

/// No scripts, and nothing a browser would fetch: no element that loads or runs anything, no
/// attribute naming a resource.
fn assert_self_contained(doc: &Document) {
    for node in doc.descendants().filter(|n| n.is_element()) {
        let tag = node.tag_name().name();
        assert!(
            ![
                "script", "link", "img", "iframe", "object", "embed", "image", "use"
            ]
            .contains(&tag),
            "<{tag}> in the report"
        );
        for attribute in node.attributes() {
            let name = attribute.name();
            assert!(
                !["src", "href"].contains(&name) && !name.starts_with("on"),
                "attribute {name} on <{tag}>"
            );
        }
        if tag == "style" {
            let css = node.text().unwrap_or("");
            assert!(!css.contains("url(") && !css.contains("@import"), "{css}");
        }
    }
}

/// The ids of the report's figures, in order; each holds exactly one SVG.
fn figure_ids(doc: &Document) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("figure"))
        .map(|f| {
            let svgs = f.children().filter(|c| c.has_tag_name("svg")).count();
            let id = f.attribute("id").unwrap_or("").to_string();
            assert_eq!(svgs, 1, "figure {id} holds {svgs} SVGs");
            id
        })
        .collect()
}

fn figure<'a>(doc: &'a Document, id: &str) -> Node<'a, 'a> {
    doc.descendants()
        .find(|n| n.has_tag_name("figure") && n.attribute("id") == Some(id))
        .unwrap_or_else(|| panic!("no figure {id}"))
}

fn points(polyline: Node) -> Vec<(f64, f64)> {
    polyline
        .attribute("points")
        .unwrap()
        .split_whitespace()
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

/// `(step, loss)` of each log entry holding a training loss.
fn logged(state: &serde_json::Value, key: &str) -> Vec<(f64, f64)> {
    state["log_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["step"].as_f64()?, e[key].as_f64()?)))
        .collect()
}

/// The y-axis tick labels of a chart: (value, pixel row). plotters writes each label as a
/// right-anchored `<text>` at its tick's row.
fn y_ticks(chart: Node) -> Vec<(f64, f64)> {
    chart
        .descendants()
        .filter(|n| n.has_tag_name("text") && n.attribute("text-anchor") == Some("end"))
        .filter_map(|n| {
            let value: f64 = n.text()?.trim().parse().ok()?;
            Some((value, n.attribute("y")?.parse().ok()?))
        })
        .collect()
}

/// Least-squares line through `pairs`: (slope, intercept).
fn fit(pairs: &[(f64, f64)]) -> (f64, f64) {
    let n = pairs.len() as f64;
    let (sx, sy) = pairs
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxy: f64 = pairs.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = pairs.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    let slope = sxy / sxx;
    (slope, my - slope * mx)
}

/// The polyline of the raw training loss is the logged loss: one vertex per log entry, in
/// step order, each at the pixel row that the chart's own y-axis labels give its value (the
/// axis transform is read from the SVG, not from the code that drew it), within plotters'
/// rounding to whole pixels.
fn assert_loss_curve_is_the_log(doc: &Document, state: &serde_json::Value, learned: bool) {
    let chart = figure(doc, "chart-loss");
    let stroke = charts::svg_color(charts::RAW);
    let lines: Vec<Node> = chart
        .descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some(&*stroke))
        .collect();
    assert_eq!(lines.len(), 1, "one raw loss curve");
    let drawn = points(lines[0]);
    let log = logged(state, "loss");
    assert!(log.len() >= 5, "the run logs its loss: {}", log.len());
    assert_eq!(drawn.len(), log.len(), "one vertex per logged loss");
    // x: steps left to right, evenly (the steps are every logging_steps).
    assert!(drawn.windows(2).all(|w| w[0].0 < w[1].0), "{drawn:?}");
    let (sx, bx) = fit(&log
        .iter()
        .zip(&drawn)
        .map(|(l, d)| (l.0, d.0))
        .collect::<Vec<_>>());
    // y: the transform of the tick labels.
    let ticks = y_ticks(chart);
    assert!(ticks.len() >= 3, "y tick labels: {ticks:?}");
    let (sy, by) = fit(&ticks);
    assert!(sy < 0.0, "larger values are drawn higher");
    for ((step, loss), (x, y)) in log.iter().zip(&drawn) {
        assert!(
            (sx * step + bx - x).abs() <= 1.0,
            "step {step} drawn at x {x}, expected {}",
            sx * step + bx
        );
        assert!(
            (sy * loss + by - y).abs() <= 1.5,
            "loss {loss} at step {step} drawn at y {y}, the axis puts it at {}",
            sy * loss + by
        );
    }
    if learned {
        // The curve moves: the loss of a run that learned falls by many pixels.
        assert!(drawn.last().unwrap().1 - drawn[0].1 > 20.0, "{drawn:?}");
    }
}

/// log_history.csv: step, epoch, loss, learning_rate, grad_norm and each eval metric, one row
/// per log entry with the state's values.
fn assert_csv_is_the_log(dir: &Path, state: &serde_json::Value) {
    let mut reader = csv::Reader::from_path(dir.join("log_history.csv")).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "step",
            "epoch",
            "loss",
            "learning_rate",
            "grad_norm",
            "eval_loss",
            "eval_accuracy",
            "eval_macro_f1",
            "eval_weighted_f1"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let history = state["log_history"].as_array().unwrap();
    assert_eq!(rows.len(), history.len());
    for (row, entry) in rows.iter().zip(history) {
        for (column, cell) in header.iter().zip(row) {
            match entry[column].as_f64() {
                // serde_json's default parser may be one unit in the last place off; the
                // CSV's text is read exactly.
                Some(v) => {
                    let read: f64 = cell.parse().unwrap();
                    assert!(
                        (read - v).abs() <= 1e-12 * v.abs(),
                        "{column}: {cell} vs {v}"
                    );
                }
                None => assert_eq!(cell, "", "{column}"),
            }
        }
    }
}

#[test]
fn a_tiny_run_leaves_a_report_that_rebuilds() {
    let fx = Fixture::new("report");
    let run = fx.train();
    let state: serde_json::Value =
        serde_json::from_str(&read(&run.join("trainer_state.json"))).unwrap();
    let html = read(&run.join("report.html"));
    let doc = parse(&html);
    assert_eq!(figure_ids(&doc), TRAINING_CHARTS);
    assert_self_contained(&doc);
    assert_loss_curve_is_the_log(&doc, &state, true);
    assert_csv_is_the_log(&run, &state);

    // The confusion matrix's cells show the kept model's counts.
    let counts: Vec<u64> = figure(&doc, "chart-confusion")
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text()?.trim().parse().ok())
        .collect();
    let expected: Vec<u64> = state["best_report"]["confusion_matrix"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
        .collect();
    assert_eq!(counts, expected, "the cells are the matrix, row by row");
    // The header names the model, the data and the speed.
    let text: String = doc.descendants().filter_map(|n| n.text()).collect();
    for needle in [
        "tiny-bert",
        "train.csv",
        "dev.tsv",
        "examples/s",
        "peak memory",
    ] {
        assert!(text.contains(needle), "header lacks {needle}");
    }
    assert!(text.contains("Finished"), "status");

    // Each checkpoint holds its own report.
    let checkpoint = bertcls::checkpoint::latest(&run).unwrap();
    parse(&read(&checkpoint.join("report.html")));

    // `bertcls report RUN_DIR` rebuilds both files from the run's files alone.
    std::fs::remove_file(run.join("report.html")).unwrap();
    std::fs::remove_file(run.join("log_history.csv")).unwrap();
    let out = ok(fx.run(&["report", s(&run)]));
    assert_eq!(
        common::stdout(&out).trim(),
        s(&run.join("report.html")),
        "prints the path"
    );
    let rebuilt = read(&run.join("report.html"));
    let doc = parse(&rebuilt);
    assert_eq!(figure_ids(&doc), TRAINING_CHARTS);
    assert_loss_curve_is_the_log(&doc, &state, true);
    assert_csv_is_the_log(&run, &state);
    let elsewhere = fx.path("elsewhere.html");
    ok(fx.run(&["report", s(&run), "--output", s(&elsewhere)]));
    assert_eq!(figure_ids(&parse(&read(&elsewhere))), TRAINING_CHARTS);
    common::fails_with(fx.run(&["report", s(&fx.dir)]), &["no trainer_state.json"]);
    assert_no_temp_files(&fx.dir);
    std::fs::remove_dir_all(&fx.dir).unwrap();
}

#[test]
fn a_report_is_written_on_ctrl_c() {
    let fx = Fixture::new("report-sigint");
    // Long enough to be interrupted: 2,000 rows, batch 4, 3 epochs, a checkpoint every 25
    // updates, the loss logged every 10.
    fx.long_train_file();
    let config = fx.config(&format!(
        "train_file = {:?}\neval_strategy = \"no\"\nper_device_train_batch_size = 4\nnum_train_epochs = 3\nsave_steps = 25\nlearning_rate = 5e-4\nlogging_steps = 10",
        fx.path("long.csv"),
    ));
    let out_dir = fx.path("interrupted");
    let mut child = bertcls(&fx.cache)
        .args(["train", "--config", s(&config), "--output-dir", s(&out_dir)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let first = out_dir.join("checkpoint-100");
    while !first.exists() {
        assert!(child.try_wait().unwrap().is_none(), "ended too soon");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let state: serde_json::Value =
        serde_json::from_str(&read(&out_dir.join("trainer_state.json"))).unwrap();
    let step = state["global_step"].as_u64().unwrap();
    assert!(step < 1500, "stopped part-way");
    let html = read(&out_dir.join("report.html"));
    let doc = parse(&html);
    let status = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("status"))
        .and_then(|n| n.text())
        .unwrap_or("");
    assert!(
        status.contains("Interrupted by SIGINT") && status.contains(&format!("step {step} ")),
        "{status}"
    );
    // No validation: the training charts only, with the loss as logged up to the stop.
    assert_eq!(
        figure_ids(&doc),
        ["chart-loss", "chart-learning-rate", "chart-grad-norm"]
    );
    assert_loss_curve_is_the_log(&doc, &state, false);
    let rows = csv::Reader::from_path(out_dir.join("log_history.csv"))
        .unwrap()
        .records()
        .count();
    assert_eq!(rows as u64, step / 10);
    assert_no_temp_files(&fx.dir);
    std::fs::remove_dir_all(&fx.dir).unwrap();
}

/// `bertcls eval --report` of `model` on `data`, the page beside the data; the run and the
/// page's text.
fn eval_with_report(fx: &Fixture, model: &Path, data: &Path) -> (std::process::Output, String) {
    let report = data.with_extension("html");
    let out = ok(fx.run(&[
        "eval",
        "--model",
        s(model),
        "--data",
        s(data),
        "--device",
        "cpu",
        "--report",
        s(&report),
    ]));
    (out, read(&report))
}

#[test]
fn eval_report_draws_the_evaluation_charts_with_names_escaped() {
    let fx = Fixture::new("report-eval");
    let hostile = ["<b>bold</b> & \"q\" 'a'", "x\u{1b}[31m"];
    let model = fx.path("classifier");
    common::fine_tuned(&model, &hostile, "single_label_classification");
    let mut data = String::new();
    for (i, (text, _)) in common::sentences().iter().enumerate() {
        let row = serde_json::json!({"text": text, "label": hostile[i % 2]});
        data.push_str(&format!("{row}\n"));
    }
    std::fs::write(fx.path("dev.jsonl"), data).unwrap();
    let (out, html) = eval_with_report(&fx, &model, &fx.path("dev.jsonl"));
    assert!(stderr(&out).contains("report written"), "{}", stderr(&out));
    let doc = parse(&html);
    assert_self_contained(&doc);
    assert_eq!(figure_ids(&doc), ["chart-confusion", "chart-per-class"]);
    // The names are text, never markup: no element came from them, and they read back whole.
    assert!(!doc.descendants().any(|n| n.has_tag_name("b")));
    let table: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("td"))
        .filter_map(|n| n.text())
        .collect();
    assert!(table.contains(&hostile[0]), "{table:?}");
    assert!(
        table.contains(&"x\\u{1b}[31m"),
        "control characters shown escaped"
    );
    // The matrix holds every row of the file.
    let cells: u64 = figure(&doc, "chart-confusion")
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text()?.trim().parse::<u64>().ok())
        .sum();
    assert_eq!(cells, common::sentences().len() as u64);
    assert_no_temp_files(&fx.dir);
    std::fs::remove_dir_all(&fx.dir).unwrap();
}

#[test]
fn eval_report_draws_each_tasks_charts() {
    let fx = Fixture::new("report-eval-tasks");
    let rows = common::sentences();

    // Multi-label: per-label bars and table, one row per label with its support.
    let labels = ["joy", "anger", "love"];
    let model = fx.path("multi");
    common::fine_tuned(&model, &labels, "multi_label_classification");
    let mut data = String::new();
    for (i, (text, _)) in rows.iter().enumerate() {
        let row = serde_json::json!({"text": text, "label": [labels[i % 3]]});
        data.push_str(&format!("{row}\n"));
    }
    std::fs::write(fx.path("multi.jsonl"), data).unwrap();
    let (_, html) = eval_with_report(&fx, &model, &fx.path("multi.jsonl"));
    let doc = parse(&html);
    assert_self_contained(&doc);
    assert_eq!(figure_ids(&doc), ["chart-per-class"]);
    let cells: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("td"))
        .filter_map(|n| n.text())
        .collect();
    for label in labels {
        let at = cells.iter().position(|c| *c == label).unwrap();
        let support: usize = cells[at + 4].parse().unwrap();
        let expected = (0..rows.len()).filter(|i| labels[i % 3] == label).count();
        assert_eq!(support, expected, "{label}: {cells:?}");
    }

    // Regression: one dot per row, against the line y = x.
    let model = fx.path("regression");
    common::fine_tuned(&model, &["score"], "regression");
    let mut data = String::from("text,label\n");
    for (i, (text, _)) in rows.iter().enumerate() {
        data.push_str(&format!("{text},{}\n", (i % 5) as f64 * 0.5));
    }
    std::fs::write(fx.path("scores.csv"), data).unwrap();
    let (_, html) = eval_with_report(&fx, &model, &fx.path("scores.csv"));
    let doc = parse(&html);
    assert_self_contained(&doc);
    assert_eq!(figure_ids(&doc), ["chart-scatter"]);
    let dots = figure(&doc, "chart-scatter")
        .descendants()
        .filter(|n| n.has_tag_name("circle"))
        .count();
    assert_eq!(dots, rows.len(), "one dot per row");
    assert_no_temp_files(&fx.dir);
    std::fs::remove_dir_all(&fx.dir).unwrap();
}
