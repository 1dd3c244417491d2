//! `bertcls serve` through the binary: every route, every error status with TEI's error body,
//! the API key, graceful shutdown with a request in flight, hostile requests, and answers
//! equal to `bertcls predict`'s for each task a model folder can hold.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::{bertcls, ok, s, temp_dir};
use serde_json::{Value, json};

/// A `bertcls serve` process on an ephemeral port, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(model: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let cache = model.parent().unwrap().join("cache");
        let mut cmd = bertcls(&cache);
        cmd.args([
            "serve",
            "--model",
            s(model),
            "--port",
            "0",
            "--device",
            "cpu",
        ])
        .args(args)
        .env_remove("BERTCLS_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (ready, port) = mpsc::channel();
        let shared = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("bertcls serve: listening on http://") {
                    let _ = ready.send(addr.rsplit(':').next().unwrap().parse::<u16>().unwrap());
                }
                shared.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let port = port
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no readiness line; stderr: {}", log.lock().unwrap()));
        Self { child, port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends a request; returns the status and the body.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        self.try_call(method, path, body, headers)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// As [`Self::call`]; a transport error (a reset connection...) is an `Err`.
    fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, String), String> {
        let mut request = ureq::request(method, &self.url(path)).timeout(Duration::from_secs(60));
        for (k, v) in headers {
            request = request.set(k, v);
        }
        let result = match body {
            Some(b) => request.send_string(b),
            None => request.call(),
        };
        match result {
            Ok(r) => Ok((r.status(), r.into_string().unwrap())),
            Err(ureq::Error::Status(code, r)) => Ok((code, r.into_string().unwrap())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The value of a metric without labels in `/metrics`.
    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.call("GET", "/metrics", None, &[]);
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    fn post(&self, body: &str) -> (u16, String) {
        self.call(
            "POST",
            "/predict",
            Some(body),
            &[("Content-Type", "application/json")],
        )
    }

    fn predict(&self, body: Value) -> Value {
        let (status, text) = self.post(&body.to_string());
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits for the process to end; its exit code.
    fn wait(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the server did not exit; stderr: {}", self.log());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts TEI's error body with `error_type`; returns the message.
fn error_body(status: u16, body: &str, want_status: u16, want_type: &str) -> String {
    assert_eq!(status, want_status, "{body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert_eq!(v["error_type"], want_type, "{body}");
    v["error"].as_str().unwrap().to_string()
}

/// A tiny fine-tuned model folder of a task, in a fresh folder.
fn model(tag: &str, labels: &[&str], problem_type: &str) -> PathBuf {
    let dir = temp_dir(tag).join("model");
    common::fine_tuned(&dir, labels, problem_type);
    dir
}

const TEXTS: [&str; 5] = [
    "a great film",
    "the movie was very good and fun",
    "awful",
    "not a boring film , what a fun movie !",
    "我喜欢这本书",
];

/// `bertcls predict --all-probs` over TEXTS (and, for pairs, the next text as the pair).
fn offline(model: &Path, pairs: bool) -> Vec<Value> {
    offline_with(model, pairs, &[])
}

/// [`offline`] with `extra` arguments for `bertcls predict`.
fn offline_with(model: &Path, pairs: bool, extra: &[&str]) -> Vec<Value> {
    let dir = model.parent().unwrap();
    let input = dir.join("in.jsonl");
    let output = dir.join("out.jsonl");
    let rows: String = TEXTS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let pair = TEXTS[(i + 1) % TEXTS.len()];
            let row = if pairs {
                json!({"text": t, "pair": pair})
            } else {
                json!({"text": t})
            };
            format!("{row}\n")
        })
        .collect();
    std::fs::write(&input, rows).unwrap();
    let mut args = vec![
        "predict",
        "--model",
        s(model),
        "--input",
        s(&input),
        "--output",
        s(&output),
        "--all-probs",
        "--device",
        "cpu",
    ];
    if pairs {
        args.extend(["--text-pair-column", "pair"]);
    }
    args.extend(extra);
    ok(bertcls(&dir.join("cache")).args(&args).output().unwrap());
    std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5
}

/// Checks one /predict answer against predict's row for the same input.
fn same_answer(answer: &Value, row: &Value, problem_type: &str) {
    let scores = answer.as_array().unwrap();
    match problem_type {
        "regression" => {
            assert_eq!(scores.len(), 1);
            let value = scores[0]["score"].as_f64().unwrap();
            assert!(
                close(value, row["prediction"].as_f64().unwrap()),
                "{answer} vs {row}"
            );
        }
        _ => {
            let sorted: Vec<f64> = scores
                .iter()
                .map(|s| s["score"].as_f64().unwrap())
                .collect();
            assert!(
                sorted.windows(2).all(|w| w[0] >= w[1]),
                "sorted by score: {answer}"
            );
            for s in scores {
                let label = s["label"].as_str().unwrap();
                let p = row[format!("prob_{label}")].as_f64().unwrap();
                assert!(
                    close(s["score"].as_f64().unwrap(), p),
                    "{label}: {answer} vs {row}"
                );
            }
            if problem_type == "single_label_classification" {
                assert_eq!(
                    scores[0]["label"], row["predicted_label"],
                    "{answer} vs {row}"
                );
                assert!(scores.iter().all(|s| s.get("predicted").is_none()));
            } else {
                let mut chosen: Vec<&str> = scores
                    .iter()
                    .filter(|s| s["predicted"] == json!(true))
                    .map(|s| s["label"].as_str().unwrap())
                    .collect();
                chosen.sort_unstable();
                let mut expected: Vec<&str> = row["predicted_labels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                expected.sort_unstable();
                assert_eq!(chosen, expected, "{answer} vs {row}");
            }
        }
    }
}

#[test]
fn answers_equal_bertcls_predict_for_every_task() {
    for (labels, problem_type) in [
        (
            &["neg", "neutral", "pos"][..],
            "single_label_classification",
        ),
        (
            &["joy", "anger", "love", "fear"][..],
            "multi_label_classification",
        ),
        (&["score"][..], "regression"),
    ] {
        let dir = model(&format!("same-{problem_type}"), labels, problem_type);
        let server = Server::start(&dir, &[], &[]);
        let info: Value = serde_json::from_str(&server.call("GET", "/info", None, &[]).1).unwrap();
        assert_eq!(info["problem_type"], problem_type);
        assert_eq!(info["labels"], json!(labels));
        for pairs in [false, true] {
            let rows = offline(&dir, pairs);
            let inputs: Vec<Value> = TEXTS
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    if pairs {
                        json!([t, TEXTS[(i + 1) % TEXTS.len()]])
                    } else {
                        json!([t])
                    }
                })
                .collect();
            // One at a time (a text, or a pair as TEI sends it), then all as one batch.
            for (input, row) in inputs.iter().zip(&rows) {
                let single = if pairs {
                    input.clone()
                } else {
                    input[0].clone()
                };
                let answer = server.predict(json!({ "inputs": single }));
                same_answer(&answer, row, problem_type);
            }
            let batch = server.predict(json!({ "inputs": inputs }));
            for (answer, row) in batch.as_array().unwrap().iter().zip(&rows) {
                same_answer(answer, row, problem_type);
            }
        }
        if problem_type == "multi_label_classification" {
            let answer = server.predict(json!({"inputs": TEXTS[0]}));
            let predicted_flags = answer
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["predicted"].is_boolean())
                .count();
            assert_eq!(
                predicted_flags,
                labels.len(),
                "every label says whether it is predicted"
            );
        }
    }
}

#[test]
fn int8_serving_answers_as_int8_predict_whatever_the_batch() {
    let problem_type = "single_label_classification";
    let dir = model("int8", &["neg", "neutral", "pos"], problem_type);
    let server = Server::start(&dir, &["--quantize", "int8"], &[]);
    let rows = offline_with(&dir, false, &["--quantize", "int8"]);
    // Activations are quantized per token, so batching and padding change nothing.
    for (text, row) in TEXTS.iter().zip(&rows) {
        same_answer(
            &server.predict(json!({ "inputs": text })),
            row,
            problem_type,
        );
    }
    let inputs: Vec<Value> = TEXTS.iter().map(|t| json!([t])).collect();
    let batch = server.predict(json!({ "inputs": inputs }));
    for (answer, row) in batch.as_array().unwrap().iter().zip(&rows) {
        same_answer(answer, row, problem_type);
    }
}

#[test]
fn raw_scores_are_the_logits_and_truncate_is_opt_in() {
    let dir = model("raw", &["neg", "pos"], "single_label_classification");
    let server = Server::start(&dir, &["--max-seq-length", "8"], &[]);
    let probs = server.predict(json!({"inputs": "a great film"}));
    let raw = server.predict(json!({"inputs": "a great film", "raw_scores": true}));
    let value = |v: &Value, label: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|s| s["label"] == label)
            .unwrap()["score"]
            .as_f64()
            .unwrap()
    };
    let (neg, pos) = (value(&raw, "neg"), value(&raw, "pos"));
    let softmax_pos = 1.0 / (1.0 + (neg - pos).exp());
    assert!(close(value(&probs, "pos"), softmax_pos), "{probs} vs {raw}");

    let long = "the movie was very good and great fun , what a fun film";
    let (status, body) = server.post(&json!({"inputs": long}).to_string());
    let message = error_body(status, &body, 422, "validation");
    assert!(
        message.contains("over the model's maximum of 8") && message.contains("truncate"),
        "{message}"
    );
    let cut = server.predict(json!({"inputs": long, "truncate": true}));
    let same = server.predict(json!({"inputs": "the movie was very good and"}));
    assert_eq!(cut, same, "truncated to 8 tokens: [CLS] + 6 words + [SEP]");
}

#[test]
fn routes_answer_and_metrics_count_them() {
    let dir = model("routes", &["neg", "pos"], "single_label_classification");
    let server = Server::start(&dir, &[], &[]);
    assert_eq!(server.call("GET", "/health", None, &[]).0, 200);
    let info: Value = serde_json::from_str(&server.call("GET", "/info", None, &[]).1).unwrap();
    assert_eq!(info["model_type"]["classifier"]["id2label"]["1"], "pos");
    assert_eq!(info["max_input_length"], 64);
    assert_eq!(info["max_client_batch_size"], 32);
    for _ in 0..3 {
        server.predict(json!({"inputs": [["good"], ["bad"]]}));
    }
    server.post("{");
    let (status, body) = server.call("GET", "/nowhere", None, &[]);
    error_body(status, &body, 404, "not_found");
    let (status, body) = server.call("GET", "/predict", None, &[]);
    error_body(status, &body, 405, "method_not_allowed");
    let (status, metrics) = server.call("GET", "/metrics", None, &[]);
    assert_eq!(status, 200);
    for line in [
        "bertcls_requests_total{route=\"/predict\",status=\"200\"} 3",
        "bertcls_requests_total{route=\"/predict\",status=\"422\"} 1",
        "bertcls_requests_total{route=\"other\",status=\"404\"} 1",
        "bertcls_request_failures_total{error_type=\"validation\"} 1",
        "bertcls_batch_size_sum 6",
        "bertcls_queue_duration_seconds_count 3",
        "bertcls_inference_duration_seconds_count 3",
        "bertcls_batch_tokens_count 3",
        "bertcls_request_duration_seconds_count",
    ] {
        assert!(metrics.contains(line), "`{line}` not in:\n{metrics}");
    }
    let log = server.log();
    assert!(
        log.contains("POST /predict 200"),
        "one log line per request: {log}"
    );
    assert!(log.contains("GET /nowhere 404"), "{log}");
}

#[test]
fn every_refusal_has_its_status_and_teis_error_body() {
    let dir = model("errors", &["neg", "pos"], "single_label_classification");
    let server = Server::start(
        &dir,
        &["--payload-limit", "2000", "--max-client-batch-size", "4"],
        &[],
    );
    let json_header = [("Content-Type", "application/json")];
    let big = json!({"inputs": "good ".repeat(1000)}).to_string();
    let (status, body) = server.post(&big);
    assert!(error_body(status, &body, 413, "validation").contains("payload limit of 2000"));
    for (body, needle) in [
        ("{", "EOF"),
        ("not json", "expected"),
        (r#"{"inputs": 5}"#, "invalid type: integer"),
        (r#"{"inputs": [1, 2]}"#, "invalid type: integer"),
        (r#"{"inputs": {"text": "a"}}"#, "invalid type: map"),
        (
            r#"{"inputs": "a", "truncate": "yes"}"#,
            "invalid type: string",
        ),
        (r#"{"text": "a"}"#, "unknown field `text`"),
        (
            r#"{"inputs": [["a"], ["b"], ["c"], ["d"], ["e"]]}"#,
            "more than 4 inputs",
        ),
    ] {
        let (status, answer) = server.post(body);
        let message = error_body(status, &answer, 422, "validation");
        assert!(message.contains(needle), "{body}: {message}");
    }
    for blank in [r#"{"inputs": "  "}"#, r#"{"inputs": ["a", ""]}"#] {
        let (status, body) = server.post(blank);
        error_body(status, &body, 422, "empty");
    }
    let (status, body) = server.post(r#"{"inputs": []}"#);
    error_body(status, &body, 422, "empty");
    let (status, body) = server.call(
        "POST",
        "/predict",
        Some(r#"{"inputs": "a"}"#),
        &[("Content-Type", "text/plain")],
    );
    error_body(status, &body, 415, "validation");
    let (status, _) = server.call("POST", "/predict", Some(r#"{"inputs": "a"}"#), &json_header);
    assert_eq!(status, 200, "the server still answers");
}

/// Sends a request's headers and the first half of its body, as a slow client does.
fn half_request(port: u16, body: &str, headers: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..body.len() / 2]
    )
    .unwrap();
    stream.flush().unwrap();
    stream
}

/// Reads a whole HTTP/1.1 response (the server closes or sends Content-Length).
fn read_response(stream: &mut TcpStream) -> (u16, String) {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

#[test]
fn concurrency_limit_answers_429_and_slow_bodies_time_out() {
    let dir = model("limits", &["neg", "pos"], "single_label_classification");
    let server = Server::start(
        &dir,
        &["--max-concurrent-requests", "1", "--request-timeout", "5"],
        &[],
    );
    let body = json!({"inputs": "a great film"}).to_string();
    let mut slow = half_request(server.port, &body, "");
    // The slow request holds the only permit until its body times out.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metric("bertcls_requests_in_progress") < 1.0 {
        assert!(Instant::now() < deadline, "the slow request never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, answer) = server.post(&body);
    error_body(status, &answer, 429, "overloaded");
    let (status, answer) = read_response(&mut slow);
    assert!(error_body(status, &answer, 408, "timeout").contains("within 5 s"));
    let (status, _) = server.post(&body);
    assert_eq!(status, 200, "the permit came back");
}

#[test]
fn api_key_guards_every_route_but_health_and_never_shows() {
    let key = "s3cret-key-0123456789";
    let dir = model("auth", &["neg", "pos"], "single_label_classification");
    let mut server = Server::start(&dir, &[], &[("BERTCLS_API_KEY", key)]);
    let body = Some(r#"{"inputs": "good"}"#);
    let json_header = ("Content-Type", "application/json");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("s3cret-key-0123456789"),
        Some("Bearer s3cret-key-012345678"),
    ] {
        let mut headers = vec![json_header];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        let (status, answer) = server.call("POST", "/predict", body, &headers);
        error_body(status, &answer, 401, "unauthorized");
        let (status, _) = server.call("GET", "/metrics", None, &headers);
        assert_eq!(status, 401);
    }
    let bearer = format!("Bearer {key}");
    let (status, answer) = server.call(
        "POST",
        "/predict",
        body,
        &[json_header, ("Authorization", &bearer)],
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(server.call("GET", "/health", None, &[]).0, 200);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(), Some(0));
    assert!(!server.log().contains("s3cret"), "{}", server.log());
    let help = ok(bertcls(&dir)
        .args(["serve", "--help"])
        .env("BERTCLS_API_KEY", key)
        .output()
        .unwrap());
    assert!(!common::stdout(&help).contains("s3cret"));
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let dir = model("shutdown", &["neg", "pos"], "single_label_classification");
    let mut server = Server::start(&dir, &[], &[]);
    let expected = server.predict(json!({"inputs": "a great film"}));
    let body = json!({"inputs": "a great film"}).to_string();
    let mut in_flight = half_request(server.port, &body, "");
    // Let the server start reading the request before it is told to stop.
    std::thread::sleep(Duration::from_millis(300));
    server.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", server.port)).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    in_flight
        .write_all(&body.as_bytes()[body.len() / 2..])
        .unwrap();
    let (status, answer) = read_response(&mut in_flight);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(serde_json::from_str::<Value>(&answer).unwrap(), expected);
    assert_eq!(server.wait(), Some(0), "{}", server.log());
    assert!(server.log().contains("shutting down"), "{}", server.log());
}

#[test]
fn hostile_requests_leave_the_server_answering() {
    let dir = model("hostile", &["neg", "pos"], "single_label_classification");
    let server = Server::start(&dir, &["--payload-limit", "100000"], &[]);
    let huge_batch = format!("{{\"inputs\": [{}]}}", vec!["[\"a\"]"; 20_000].join(","));
    let flat_batch = format!("{{\"inputs\": [{}]}}", vec!["\"a\""; 20_000].join(","));
    let deep = format!(
        "{{\"inputs\": {}{}}}",
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    let bodies: Vec<String> = vec![
        huge_batch,
        flat_batch,
        deep,
        "\u{0}\u{1}\u{2}".into(),
        r#"{"inputs": "\ud800"}"#.into(),
        format!("{{\"inputs\": \"{}\"}}", "é ".repeat(30_000)),
        r#"{"inputs": [["a", null]]}"#.into(),
        r#"{"inputs": 1e999}"#.into(),
    ];
    for body in &bodies {
        let headers = [("Content-Type", "application/json")];
        match server.try_call("POST", "/predict", Some(body), &headers) {
            Ok((status, answer)) => {
                assert!((400..500).contains(&status), "{status} {answer}");
                let v: Value = serde_json::from_str(&answer).unwrap();
                assert!(v["error_type"].is_string(), "{answer}");
            }
            // The server answers 413 as soon as the headers announce too large a body and
            // closes the connection; a client still sending may see a reset instead.
            Err(e) => assert!(body.len() > 100_000, "{e}"),
        }
    }
    // Headers that never end, and a connection that says nothing.
    let mut silent = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let mut endless = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    endless
        .write_all(b"POST /predict HTTP/1.1\r\nX-Long: ")
        .unwrap();
    endless.write_all(&vec![b'a'; 200_000]).unwrap_or(());
    let mut buf = [0u8; 512];
    endless
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = endless.read(&mut buf).unwrap_or(0);
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || reply.starts_with("HTTP/1.1 431"), "{reply}");
    silent
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let _ = silent.read(&mut buf);
    assert_eq!(server.call("GET", "/health", None, &[]).0, 200);
    server.predict(json!({"inputs": "still fine"}));
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
