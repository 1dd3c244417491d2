//! What predict and eval write and print, and the sizes they accept: an output never replaces
//! its input, never holds more lines than rows or a field under the wrong column, never
//! leaves a temporary file behind (errors, a full disk, signals), keeps an existing file's
//! permissions; batch sizes and sequence lengths are bounded alike everywhere; names from a
//! model reach the terminal escaped.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bertcls::data::LabelSet;
use bertcls::testing::TinyModel;
use common::{Fixture, assert_no_temp_files, bertcls, fails_with, ok, s, stderr, stdout, temp_dir};

/// A folder with a tiny fine-tuned classifier for `labels` and a private cache.
struct Setup {
    dir: PathBuf,
    model: PathBuf,
}

impl Setup {
    fn new(tag: &str, labels: &[&str]) -> Self {
        let dir = temp_dir(tag);
        let model = dir.join("classifier");
        TinyModel {
            seed: 5,
            labels: Some(LabelSet::from_names(
                labels.iter().map(|l| l.to_string()).collect(),
            )),
            ..TinyModel::default()
        }
        .write(&model)
        .unwrap();
        Self { dir, model }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = bertcls(&self.dir.join("cache"));
        cmd.args(args).arg("--model").arg(&self.model);
        cmd
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.command(args).output().unwrap()
    }

    fn predict(&self, input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["predict", "--input", s(input), "--output", s(output)];
        args.extend(extra);
        self.run(&args)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_no_temp_files(&self.dir);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn the_output_is_never_the_input() {
    let t = Setup::new("out-same", &["neg", "pos"]);
    let data = b"id,text\n1,good\n2,bad\n";
    let input = t.file("in.csv", data);
    let link = t.path("link.csv");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    let hard = t.path("hard.csv");
    std::fs::hard_link(&input, &hard).unwrap();
    for output in [&input, &link, &hard] {
        fails_with(
            t.predict(&input, output, &[]),
            &[
                &format!(
                    "{}: is the input file {} itself",
                    output.display(),
                    s(&input)
                ),
                "another file",
            ],
        );
        assert_eq!(std::fs::read(&input).unwrap(), data, "the input is intact");
    }
    // Through the link the other way round, too.
    fails_with(t.predict(&link, &input, &[]), &["is the input file"]);
    assert_eq!(std::fs::read(&input).unwrap(), data);
    ok(t.predict(&input, &t.path("out.csv"), &[]));
}

#[test]
fn tsv_output_refuses_fields_it_cannot_hold() {
    let t = Setup::new("out-tsv", &["neg", "pos"]);
    let tab = t.file("tab.csv", b"id,text\n1,good\n2,\"a\tgood film\"\n");
    let newline = t.file(
        "newline.csv",
        b"id,text\n1,good\n2,bad\n3,\"a good\nfilm\"\n",
    );
    let carriage = t.file("cr.csv", b"id,note,text\n1,\"x\ry\",good\n");
    let output = t.path("out.tsv");
    fails_with(
        t.predict(&tab, &output, &[]),
        &[
            &format!("{}:3: column `text` holds a tab", tab.display()),
            "TSV has no quoting",
            "CSV or JSON Lines",
        ],
    );
    fails_with(
        t.predict(&newline, &output, &[]),
        &[&format!(
            "{}:4: column `text` holds a line break",
            newline.display()
        )],
    );
    fails_with(
        t.predict(&carriage, &output, &["--on-error", "skip-row"]),
        &[&format!(
            "{}:2: column `note` holds a line break",
            carriage.display()
        )],
    );
    assert!(!output.exists());

    // The same rows go to CSV whole, one record per row.
    let csv_out = t.path("out.csv");
    ok(t.predict(&newline, &csv_out, &[]));
    let records: Vec<csv::StringRecord> = csv::Reader::from_path(&csv_out)
        .unwrap()
        .records()
        .map(Result::unwrap)
        .collect();
    assert_eq!(records.len(), 3);
    assert_eq!(&records[2][1], "a good\nfilm");

    // Plain rows still make a TSV with exactly one line per row.
    let plain = t.file("plain.csv", b"id,text\n1,good\n2,\"bad, really\"\n");
    ok(t.predict(&plain, &output, &[]));
    let text = std::fs::read_to_string(&output).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
}

#[test]
fn repeated_column_names_are_refused() {
    let t = Setup::new("out-dup", &["neg", "pos"]);
    let input = t.file("dup.csv", b"text,id,text\ngood,1,bad\n");
    let output = t.path("out.jsonl");
    fails_with(
        t.predict(&input, &output, &[]),
        &[
            &format!("{}:1:", input.display()),
            "repeated column names",
            "`text` (columns 1, 3)",
        ],
    );
    assert!(!output.exists());
    let labelled = t.file("dup-label.tsv", b"label\ttext\tlabel\npos\tgood\tneg\n");
    fails_with(
        t.run(&["eval", "--data", s(&labelled)]),
        &[
            &format!("{}:1:", labelled.display()),
            "`label` (columns 1, 3)",
        ],
    );
}

#[test]
fn a_skipped_ragged_row_keeps_the_columns_in_place() {
    let t = Setup::new("out-ragged", &["neg", "pos"]);
    let input = t.file(
        "ragged.csv",
        b"id,text\n1,good\n2,bad,extra,more\n3\n4,fun\n",
    );
    let output = t.path("out.csv");
    ok(t.predict(&input, &output, &["--on-error", "skip-row"]));
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(&output)
        .unwrap();
    let header = reader.headers().unwrap().clone();
    assert_eq!(
        header.iter().collect::<Vec<_>>(),
        ["id", "text", "predicted_label", "probability"]
    );
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    for row in &rows {
        assert_eq!(row.len(), header.len(), "{rows:?}");
    }
    assert_eq!(rows[1], ["2", "bad", "", ""]);
    assert_eq!(rows[2], ["3", "", "", ""]);
    assert!(["neg", "pos"].contains(&rows[3][2].as_str()), "{rows:?}");
}

#[test]
fn a_folder_as_output_is_one_line_and_leaves_nothing() {
    let t = Setup::new("out-folder", &["neg", "pos"]);
    let input = t.file("in.csv", b"text\ngood\n");
    let folder = t.path("results");
    std::fs::create_dir(&folder).unwrap();
    fails_with(
        t.predict(&input, &folder, &[]),
        &[&format!("{}: is a folder", folder.display())],
    );
    assert!(std::fs::read_dir(&folder).unwrap().next().is_none());
    // Setup's drop checks that no temporary file is left beside it.
}

#[test]
fn an_existing_outputs_permissions_are_kept() {
    let t = Setup::new("out-mode", &["neg", "pos"]);
    let input = t.file("in.csv", b"text\ngood\n");
    let output = t.file("private.csv", b"old\n");
    std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o600)).unwrap();
    ok(t.predict(&input, &output, &[]));
    let mode = std::fs::metadata(&output).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "predict kept the mode {mode:o}");
    assert!(
        std::fs::read_to_string(&output)
            .unwrap()
            .starts_with("text,predicted_label")
    );
}

/// Unmounts on drop, even when the test fails.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_one_line_and_leaves_the_old_output() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("note: skipped: mounting a small tmpfs to fill needs root");
        return;
    }
    let t = Setup::new("out-full", &["neg", "pos"]);
    let small = t.path("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&small)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("note: skipped: cannot mount a tmpfs here");
        return;
    }
    let mount = Mount(small.clone());
    let input = t.file("in.csv", many_rows(20_000).as_bytes());
    let output = small.join("out.csv");
    std::fs::write(&output, b"old\n").unwrap();
    fails_with(
        t.predict(&input, &output, &[]),
        &[
            &format!("cannot write {}", output.display()),
            "No space left on device",
        ],
    );
    assert_eq!(std::fs::read(&output).unwrap(), b"old\n");
    assert_no_temp_files(&small);
    drop(mount);
}

/// A CSV of one text column and `n` short rows.
fn many_rows(n: usize) -> String {
    let mut text = String::from("text\n");
    for i in 0..n {
        text.push_str(if i % 2 == 0 { "a good film\n" } else { "bad\n" });
    }
    text
}

/// Starts a predict over many rows, waits until it has opened its output (the signal handler
/// is installed by then), sends `signals`, and returns how it ended.
fn interrupted_predict(tag: &str, signals: &[i32]) -> (std::process::Output, Setup, PathBuf) {
    let t = Setup::new(tag, &["neg", "pos"]);
    let input = t.file("big.csv", many_rows(400_000).as_bytes());
    let out_dir = t.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    let output = out_dir.join("scored.csv");
    let child = t
        .command(&["predict", "--input", s(&input), "--output", s(&output)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let opened = std::fs::read_dir(&out_dir).unwrap().next().is_some();
        if opened {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "predict never opened its output"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for &signal in signals {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(child.id() as i32, signal) };
    }
    let out = child.wait_with_output().unwrap();
    (out, t, output)
}

#[test]
fn sigterm_during_predict_exits_143_and_leaves_nothing() {
    let (out, t, output) = interrupted_predict("out-sigterm", &[libc::SIGTERM]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(143), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: interrupted by SIGTERM") && last.contains("was not written"),
        "{err}"
    );
    assert!(!output.exists());
    assert_no_temp_files(&t.dir);
}

#[test]
fn sigint_twice_during_predict_exits_130_and_leaves_nothing() {
    let (out, t, output) = interrupted_predict("out-sigint", &[libc::SIGINT, libc::SIGINT]);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"));
    assert!(!output.exists());
    assert_no_temp_files(&t.dir);
}

#[test]
fn batch_sizes_are_bounded() {
    let t = Setup::new("out-batch", &["neg", "pos"]);
    let input = t.file("in.csv", b"label,text\npos,good\nneg,bad\n");
    let output = t.path("out.csv");
    let bound = "over the limit of 131072: use --batch-size 2048 or less";
    fails_with(
        t.predict(&input, &output, &["--batch-size", "100000"]),
        &["--batch-size 100000 with max_seq_length 64", bound],
    );
    fails_with(
        t.run(&["predict", "--text", "good", "--batch-size", "100000"]),
        &[bound],
    );
    fails_with(
        t.run(&["eval", "--data", s(&input), "--batch-size", "100000"]),
        &[bound],
    );
    // A shorter length allows more rows.
    ok(t.predict(
        &input,
        &output,
        &["--batch-size", "4096", "--max-seq-length", "32"],
    ));

    let fx = Fixture::new("out-batch-config");
    let config = fx.config("per_device_eval_batch_size = 100000");
    fails_with(
        fx.run(&["train", "--config", s(&config), "--max-steps", "1"]),
        &[
            "config.toml:",
            "per_device_eval_batch_size 100000 with max_seq_length 16",
            "use per_device_eval_batch_size 8192 or less",
        ],
    );
    let config = fx.config("per_device_train_batch_size = 100000");
    fails_with(
        fx.run(&["train", "--config", s(&config), "--max-steps", "1"]),
        &[
            "config.toml:",
            "per_device_train_batch_size 100000 with max_seq_length 16",
        ],
    );
    assert!(!fx.path("run").exists());
    assert_no_temp_files(&fx.dir);
    std::fs::remove_dir_all(&fx.dir).unwrap();
}

#[test]
fn sequence_lengths_are_bounded_alike() {
    let t = Setup::new("out-seq", &["neg", "pos"]);
    let input = t.file("in.csv", b"label,text\npos,good\nneg,bad\n");
    let output = t.path("out.csv");
    for length in ["0", "1", "2"] {
        let too_short =
            format!("--max-seq-length must leave room for [CLS], [SEP] and a token (got {length})");
        let args = ["--max-seq-length", length];
        fails_with(t.predict(&input, &output, &args), &[&too_short]);
        fails_with(
            t.run(&["predict", "--text", "good", "--max-seq-length", length]),
            &[&too_short],
        );
        fails_with(
            t.run(&["eval", "--data", s(&input), "--max-seq-length", length]),
            &[&too_short],
        );
        fails_with(
            t.run(&["tokenize", "--text", "good", "--max-seq-length", length]),
            &[&too_short],
        );
    }
    let too_long = "--max-seq-length 65 exceeds the model's max_position_embeddings 64";
    fails_with(
        t.predict(&input, &output, &["--max-seq-length", "65"]),
        &[too_long],
    );
    fails_with(
        t.run(&["tokenize", "--text", "good", "--max-seq-length", "65"]),
        &[too_long],
    );
    assert!(!output.exists());
    ok(t.predict(&input, &output, &["--max-seq-length", "3"]));
}

#[test]
fn label_names_reach_the_terminal_escaped() {
    let (neg, pos) = ("\x1b[31mneg", "\x1b]0;owned\x07pos");
    let t = Setup::new("out-escape", &[neg, pos]);
    let hostile = |text: &str| text.contains(['\x1b', '\x07']);

    let out = ok(t.run(&["predict", "--text", "good", "--text", "a\x1b[2Jbad"]));
    let printed = stdout(&out);
    assert!(!hostile(&printed), "{printed:?}");
    assert!(printed.contains("\\u{1b}"), "{printed}");
    assert!(printed.contains("a\\u{1b}[2Jbad"), "{printed}");

    // Programs get the exact names.
    let out = ok(t.run(&["predict", "--text", "good", "--json"]));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!([neg, pos].contains(&json[0]["label"].as_str().unwrap()));

    let data = t.file(
        "dev.csv",
        format!("label,text\n{neg},bad\n{pos},good\n").as_bytes(),
    );
    let out = ok(t.run(&["eval", "--data", s(&data)]));
    let table = stdout(&out);
    assert!(!hostile(&table), "{table:?}");
    assert!(table.contains("\\u{1b}[31mneg"), "{table}");
    let out = ok(t.run(&["eval", "--data", s(&data), "--json"]));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["labels"], serde_json::json!([neg, pos]));

    let unknown = t.file("unknown.csv", b"label,text\n\x1b[2Jmeh,bad\n");
    let out = t.run(&["eval", "--data", s(&unknown)]);
    assert!(!hostile(&stderr(&out)), "{:?}", stderr(&out));
    fails_with(
        out,
        &["label `\\u{1b}[2Jmeh` was not seen", "\\u{1b}[31mneg"],
    );

    let output = t.path("out.csv");
    let input = t.file("in.csv", b"text\ngood\n");
    ok(t.predict(&input, &output, &[]));
    let written = std::fs::read_to_string(&output).unwrap();
    assert!(
        written.contains(neg) || written.contains(pos),
        "files keep the exact names: {written:?}"
    );
}
