//! Bad input of every kind: one `error:` line naming the file and the line or field, exit
//! code 1, never a panic.

mod common;

use std::path::PathBuf;

use bertcls::testing::TinyModel;
use common::{Fixture, bertcls, fails_with, ok, s};

/// Writes `content` as a data file and trains on it.
fn train_on(fx: &Fixture, name: &str, content: &[u8]) -> (PathBuf, std::process::Output) {
    let path = fx.path(name);
    std::fs::write(&path, content).unwrap();
    let out = fx.train_one_step(&format!("train_file = {path:?}"));
    (path, out)
}

#[test]
fn config_errors() {
    let fx = Fixture::new("err-config");
    let missing = fx.path("absent.toml");
    fails_with(
        fx.run(&["train", "--config", s(&missing)]),
        &["cannot read config", "absent.toml"],
    );

    let config = fx.path("syntax.toml");
    std::fs::write(&config, "learning_rate = [1e-5\n").unwrap();
    fails_with(
        fx.run(&["train", "--config", s(&config)]),
        &["syntax.toml:"],
    );

    let line = fails_with(
        fx.train_one_step("lerning_rate = 1e-4"),
        &[
            "unknown config key `lerning_rate`",
            "did you mean `learning_rate`",
        ],
    );
    assert!(line.contains("config.toml:"), "{line}");
    fails_with(
        fx.train_one_step("learning_rate = -1e-5"),
        &["learning_rate must be a positive number"],
    );
    fails_with(
        fx.train_one_step("per_device_train_batch_size = 0"),
        &["per_device_train_batch_size must be at least 1"],
    );
    fails_with(
        fx.train_one_step("learning_rate = \"fast\""),
        &["learning_rate", "expected f64"],
    );
    fails_with(
        fx.train_one_step("max_seq_length = 100"),
        &["max_seq_length 100 exceeds the model's max_position_embeddings 64"],
    );
    // A CUDA build opens the device instead (tests/gpu.rs tests it on a GPU).
    if !cfg!(feature = "cuda") {
        fails_with(
            fx.train_one_step("device = \"cuda:0\""),
            &["without CUDA support"],
        );
    }
    fails_with(
        fx.train_one_step("device = \"tpu\""),
        &["device", "invalid device `tpu`"],
    );
    // A bf16 kernel this CPU does not run: AMX or AVX512-BF16 where it lacks them, else a
    // name no CPU runs (the choice without the variable is unit-tested in model::bf16).
    use bertcls::model::bf16::Kernel;
    let missing = [Kernel::Amx, Kernel::Avx512]
        .into_iter()
        .find(|k| !Kernel::available().contains(k))
        .map_or("avx10", Kernel::name);
    let config = fx.config("device = \"cpu\"\nbf16 = true");
    fails_with(
        bertcls(&fx.cache)
            .env("BERTCLS_BF16_KERNEL", missing)
            .args(["train", "--config", s(&config), "--max-steps", "1"])
            .output()
            .unwrap(),
        &[&format!(
            "bf16 = true: BERTCLS_BF16_KERNEL={missing}: not a kernel this CPU runs"
        )],
    );
    let config = fx.config("");
    fails_with(
        fx.run(&["train", "--config", s(&config), "--set", "learning_rate"]),
        &["expected KEY=VALUE"],
    );
    fails_with(
        fx.run(&[
            "train",
            "--config",
            s(&config),
            "--set",
            "num_train_epoch=1",
        ]),
        &["did you mean `num_train_epochs`"],
    );
}

#[test]
fn data_errors_name_file_and_line() {
    let fx = Fixture::new("err-data");
    let (path, out) = train_on(&fx, "ragged.csv", b"label,text\npos,good\nneg,bad,extra\n");
    fails_with(
        out,
        &[&format!("{}:3:", path.display()), "expected 2 fields"],
    );
    let (path, out) = train_on(&fx, "utf8.csv", b"label,text\npos,good\nneg,caf\xe9\n");
    fails_with(
        out,
        &[
            &format!("{}:3:", path.display()),
            "invalid UTF-8 in column `text`",
        ],
    );
    let (path, out) = train_on(&fx, "empty-text.csv", b"label,text\npos,good\nneg,\n");
    fails_with(
        out,
        &[
            &format!("{}:3:", path.display()),
            "empty text in column `text`",
        ],
    );
    let (path, out) = train_on(&fx, "empty.csv", b"");
    fails_with(out, &[s(&path), "is empty"]);
    let (path, out) = train_on(&fx, "header.csv", b"label,text\n");
    fails_with(out, &[s(&path), "has no data rows"]);
    let (path, out) = train_on(&fx, "tabs.csv", b"label\ttext\npos\tgood\n");
    fails_with(out, &[s(&path), "tab-separated"]);
    let (_, out) = train_on(&fx, "column.csv", b"label,txt\npos,good\nneg,bad\n");
    fails_with(out, &["no text column `text`", "did you mean `txt`"]);
    let (path, out) = train_on(&fx, "one-label.csv", b"label,text\npos,good\npos,great\n");
    fails_with(out, &[s(&path), "a classifier needs at least two"]);
    let (path, out) = train_on(
        &fx,
        "bad.jsonl",
        b"{\"label\":\"pos\",\"text\":\"good\"}\n{\"label\":\"neg\",\n",
    );
    fails_with(out, &[&format!("{}:2:", path.display()), "invalid JSON"]);
    let (path, out) = train_on(&fx, "data.xlsx", b"whatever");
    fails_with(out, &[s(&path), "unknown file type"]);
    let absent = fx.path("absent.csv");
    fails_with(
        fx.train_one_step(&format!("train_file = {absent:?}")),
        &[s(&absent), "cannot read"],
    );

    // Blank lines and a BOM are not errors.
    let (_, out) = train_on(
        &fx,
        "bom.csv",
        b"\xEF\xBB\xBFlabel,text\n\npos,good\n\nneg,bad\n",
    );
    ok(out);

    // A label the training file never had.
    let dev = fx.path("dev-unknown.tsv");
    std::fs::write(&dev, "sentiment\tcontent\npos\tgood\nmeh\tso so\n").unwrap();
    let line = fails_with(
        fx.train_one_step(&format!("validation_file = {dev:?}")),
        &["label `meh` was not seen in training"],
    );
    assert!(line.contains(&format!("{}:3:", dev.display())), "{line}");
}

#[test]
fn model_errors() {
    let fx = Fixture::new("err-model");
    let with_model = |dir: &PathBuf| fx.train_one_step(&format!("model_name_or_path = {dir:?}"));

    fails_with(with_model(&fx.path("no-such-model")), &["no-such-model"]);

    let no_tokenizer = fx.path("no-tokenizer");
    TinyModel::default().write(&no_tokenizer).unwrap();
    std::fs::remove_file(no_tokenizer.join("vocab.txt")).unwrap();
    fails_with(with_model(&no_tokenizer), &["has no tokenizer"]);

    let no_weights = fx.path("no-weights");
    TinyModel::default().write(&no_weights).unwrap();
    std::fs::remove_file(no_weights.join("model.safetensors")).unwrap();
    fails_with(with_model(&no_weights), &["has no weights"]);

    let truncated = fx.path("truncated");
    TinyModel::default().write(&truncated).unwrap();
    let weights = truncated.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(
        with_model(&truncated),
        &["model.safetensors", "not a valid safetensors file"],
    );

    let corrupt = fx.path("corrupt");
    TinyModel::default().write(&corrupt).unwrap();
    std::fs::write(
        corrupt.join("model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\xffgarbage",
    )
    .unwrap();
    fails_with(with_model(&corrupt), &["not a valid safetensors file"]);

    let mismatched = fx.path("mismatched");
    TinyModel::default().write(&mismatched).unwrap();
    let config_path = mismatched.join("config.json");
    let config = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("\"intermediate_size\": 64", "\"intermediate_size\": 48");
    std::fs::write(&config_path, config).unwrap();
    fails_with(
        with_model(&mismatched),
        &[
            "intermediate.dense.weight",
            "has shape [64, 32]",
            "implies [48, 32]",
        ],
    );

    let bad_json = fx.path("bad-json");
    TinyModel::default().write(&bad_json).unwrap();
    std::fs::write(bad_json.join("config.json"), "{\"hidden_size\": 32,").unwrap();
    fails_with(with_model(&bad_json), &["config.json:1:"]);
}

#[test]
fn output_errors() {
    let fx = Fixture::new("err-output");
    let config = fx.config("");
    let out = fx.path("busy");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "work").unwrap();
    fails_with(
        fx.train_one_step_into(&config, &out),
        &["is not empty", "--overwrite-output-dir"],
    );
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "work"
    );
    let under_file = fx.path("train.csv").join("sub");
    fails_with(
        fx.train_one_step_into(&config, &under_file),
        &["cannot create output_dir"],
    );
}

#[test]
fn eval_and_predict_errors() {
    let fx = Fixture::new("err-infer");
    let config = fx.config("");
    let run = fx.path("run");
    ok(fx.run(&["train", "--config", s(&config), "--max-steps", "2"]));
    let dev = fx.path("dev.tsv");

    fails_with(
        fx.run(&[
            "eval",
            "--model",
            s(&fx.model),
            "--data",
            s(&dev),
            "--text-column",
            "content",
            "--label-column",
            "sentiment",
        ]),
        &["no id2label", "not a fine-tuned classifier"],
    );
    let unknown = fx.path("unknown.csv");
    std::fs::write(&unknown, "label,text\npos,good\nmeh,so so\n").unwrap();
    fails_with(
        fx.run(&["eval", "--model", s(&run), "--data", s(&unknown)]),
        &[
            &format!("{}:3:", unknown.display()),
            "label `meh` was not seen in training",
        ],
    );
    fails_with(
        fx.run(&[
            "eval",
            "--model",
            s(&run),
            "--data",
            s(&dev),
            "--label-column",
            "sentiment",
        ]),
        &["no text column `text`", "(columns: `sentiment`, `content`)"],
    );
    fails_with(
        fx.run(&[
            "eval",
            "--model",
            s(&run),
            "--data",
            s(&dev),
            "--batch-size",
            "0",
        ]),
        &["--batch-size"],
    );
    if !cfg!(feature = "cuda") {
        fails_with(
            fx.run(&[
                "eval",
                "--model",
                s(&run),
                "--data",
                s(&dev),
                "--device",
                "cuda",
            ]),
            &["without CUDA support"],
        );
    }

    let input = fx.path("in.csv");
    std::fs::write(&input, "text\ngood\n").unwrap();
    let unwritable = PathBuf::from("/nonexistent-dir/out.csv");
    fails_with(
        fx.run(&[
            "predict",
            "--model",
            s(&run),
            "--input",
            s(&input),
            "--output",
            s(&unwritable),
        ]),
        &["cannot write /nonexistent-dir/out.csv"],
    );
    let clash = fx.path("clash.csv");
    std::fs::write(&clash, "text,predicted_label\ngood,x\n").unwrap();
    fails_with(
        fx.run(&[
            "predict",
            "--model",
            s(&run),
            "--input",
            s(&clash),
            "--output",
            s(&fx.path("o.csv")),
        ]),
        &["already has a column `predicted_label`"],
    );
    // A bad row fails the whole run and leaves no partial output behind.
    let bad_row = fx.path("bad-row.csv");
    std::fs::write(&bad_row, "text,id\ngood,1\nbad,2,3\n").unwrap();
    let target = fx.path("never.csv");
    let out = fx.run(&[
        "predict",
        "--model",
        s(&run),
        "--input",
        s(&bad_row),
        "--output",
        s(&target),
    ]);
    fails_with(out, &[&format!("{}:3:", bad_row.display())]);
    assert!(!target.exists(), "no half-written output");

    // Argument errors are one line too.
    let out = fx.run(&["predict", "--model", s(&run), "--input", s(&input)]);
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--output"), "{err}");
}

#[test]
fn a_ten_megabyte_line_is_truncated_not_an_error() {
    let fx = Fixture::new("err-long");
    let config = fx.config("");
    let run = fx.path("run");
    ok(fx.run(&["train", "--config", s(&config), "--max-steps", "1"]));
    let input = fx.path("long.csv");
    let long = "good film ".repeat(1 << 20);
    std::fs::write(&input, format!("text\n{long}\nbad\n")).unwrap();
    let output = fx.path("long-out.csv");
    ok(fx.run(&[
        "predict",
        "--model",
        s(&run),
        "--input",
        s(&input),
        "--output",
        s(&output),
    ]));
    let rows = csv::Reader::from_path(&output).unwrap().records().count();
    assert_eq!(rows, 2);
}

#[test]
fn an_unbalanced_quote_names_its_line() {
    let fx = Fixture::new("err-quote");
    let (path, out) = train_on(
        &fx,
        "quote.csv",
        b"label,text\npos,good\nneg,\"bad\npos,great\nneg,awful\n",
    );
    fails_with(
        out,
        &[&format!("{}:3:", path.display()), "unbalanced quote"],
    );
    // A stray quote inside an unquoted field is read literally, as Python's csv module does.
    let (_, out) = train_on(
        &fx,
        "inch.csv",
        b"label,text\npos,a 5\" screen is good\nneg,bad\n",
    );
    ok(out);
}

#[test]
fn predict_keeps_every_row_with_skip_row() {
    let fx = Fixture::new("skip-row");
    let config = fx.config("");
    let run = fx.path("run");
    ok(fx.run(&["train", "--config", s(&config), "--max-steps", "2"]));
    let input = fx.path("messy.csv");
    std::fs::write(
        &input,
        b"id,text\n1,good\n2,caf\xe9\n3,\n4,bad,extra\n5,a fun film\n",
    )
    .unwrap();
    let output = fx.path("scored.csv");
    let line = fails_with(
        fx.run(&[
            "predict",
            "--model",
            s(&run),
            "--input",
            s(&input),
            "--output",
            s(&output),
        ]),
        &[
            &format!("{}:3:", input.display()),
            "invalid UTF-8 in column `text`",
            "--on-error skip-row",
        ],
    );
    assert!(!output.exists(), "{line}");
    let out = ok(fx.run(&[
        "predict",
        "--model",
        s(&run),
        "--input",
        s(&input),
        "--output",
        s(&output),
        "--on-error",
        "skip-row",
    ]));
    assert!(
        common::stderr(&out).contains("skipped 3 bad row(s)"),
        "{}",
        common::stderr(&out)
    );
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(&output)
        .unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let ids: Vec<&str> = rows.iter().map(|r| &r[0]).collect();
    assert_eq!(
        ids,
        ["1", "2", "3", "4", "5"],
        "one output row per input row, in order"
    );
    let predicted: Vec<bool> = rows.iter().map(|r| !r[r.len() - 2].is_empty()).collect();
    assert_eq!(predicted, [true, false, false, false, true]);

    let jsonl = fx.path("messy.jsonl");
    std::fs::write(
        &jsonl,
        "{\"text\":\"good\"}\n{\"text\":\n{\"text\":\"bad\"}\n",
    )
    .unwrap();
    let jsonl_out = fx.path("scored.jsonl");
    ok(fx.run(&[
        "predict",
        "--model",
        s(&run),
        "--input",
        s(&jsonl),
        "--output",
        s(&jsonl_out),
        "--on-error",
        "skip-row",
    ]));
    let objects: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl_out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 3);
    assert!(objects[1]["predicted_label"].is_null());
    assert_eq!(objects[1]["raw_line"], "{\"text\":");
    assert!(objects[1]["error"].as_str().unwrap().contains(":2:"));
    assert!(objects[2]["predicted_label"].is_string());
}
