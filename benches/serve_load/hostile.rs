//! 10,000 malformed or hostile requests against a server, each kind counted by what came back,
//! with its memory before, half way and after, and whether it still answers.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use serde_json::{Value, json};

use crate::fmt;
use crate::server::{Memory, Server, post};

/// Hostile requests in all, slow clients included.
pub const HOSTILE_REQUESTS: usize = 10_000;
/// Memory growth over the second half of the hostile requests still called flat: the
/// allocator keeps what the first half made it take, so only a second rise means growth.
pub const FLAT_MARGIN_MIB: f64 = 8.0;
/// One hostile request, sent over its own connection (`Connection: close`) by hand, so that
/// nothing a client library would refuse to send is left out.
enum Case {
    /// A complete request (or garbage), sent at once.
    Whole(Arc<Vec<u8>>),
    /// Headers announcing this many body bytes, then the body in chunks until the server
    /// answers or closes: a client that stops sending once refused.
    BigBody(usize),
    /// A small valid request sent one byte at a time over about two seconds.
    Trickle(Arc<Vec<u8>>),
    /// Connects and says nothing for three seconds.
    Silent,
    /// Declares more body than it sends, then closes its sending side.
    Truncated(Arc<Vec<u8>>),
}

struct Hostile {
    kind: &'static str,
    case: Case,
}

/// What came back: a status, or how the connection ended without one.
struct Outcome {
    label: String,
    status: Option<u16>,
    /// A JSON `{"error": "...", "error_type": "..."}` body.
    tei_error: bool,
    /// Body bytes written (big bodies: how far the server let the client get).
    sent: usize,
}

fn http(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

fn post_json(body: &[u8]) -> Vec<u8> {
    http("POST", "/predict", &[JSON], body)
}

/// Requests small enough to send whole, by kind.
fn small_cases() -> Vec<(&'static str, Vec<u8>)> {
    let mut cases = Vec::new();
    let bad_json: [&[u8]; 10] = [
        b"{",
        b"{\"inputs\": \"a\"",
        b"not json",
        b"{\"inputs\": \"a\",}",
        b"{\"inputs\": \"\\ud800\"}",
        b"{\"inputs\": \"\xff\xfe\"}",
        b"{\"inputs\": 1e99999}",
        b"{\"inputs\": \"a\"} trailing",
        b"\x00\x00\x00\x00",
        b"{\"inputs\": \"a\", \"inputs\": \"b\"}",
    ];
    for body in bad_json {
        cases.push(("bad JSON", post_json(body)));
    }
    // 100,000 levels of nesting: a recursive parser without a depth limit overflows its stack.
    let depth = 100_000;
    let nested = format!("{{\"inputs\": {}{}}}", "[".repeat(depth), "]".repeat(depth));
    cases.push(("bad JSON", post_json(nested.as_bytes())));
    let wrong_types: [&str; 13] = [
        r#"{"inputs": 5}"#,
        r#"{"inputs": [1, 2]}"#,
        r#"{"inputs": {"a": {"b": 1}}}"#,
        r#"{"inputs": null}"#,
        r#"{}"#,
        r#"[]"#,
        r#""a""#,
        r#"{"inputs": [["a"]]}"#,
        r#"{"inputs": [["a", "b", "c"]]}"#,
        r#"{"inputs": [[{"x": 1}, "b"]]}"#,
        r#"{"inputs": "a", "truncate": "yes"}"#,
        r#"{"inputs": ["a", 1]}"#,
        r#"{"inputs": "a", "raw_scores": 5}"#,
    ];
    for body in wrong_types {
        cases.push(("wrong types", post_json(body.as_bytes())));
    }
    let too_many = json!({ "inputs": vec!["a"; 33] }).to_string();
    cases.push(("too many inputs (33)", post_json(too_many.as_bytes())));
    let too_long = json!({ "inputs": "good ".repeat(5000) }).to_string();
    cases.push(("too long, no truncate", post_json(too_long.as_bytes())));
    cases.push(("empty body", post_json(b"")));
    cases.push(("empty body", http("POST", "/predict", &[], b"")));
    let valid = br#"{"inputs": "a fine film"}"#;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        cases.push((
            "wrong content type",
            http("POST", "/predict", &[("Content-Type", content_type)], valid),
        ));
    }
    cases.push(("wrong content type", http("POST", "/predict", &[], valid)));
    let long_path = format!("/{}", "a".repeat(16 * 1024));
    for (method, path) in [
        ("GET", "/nope"),
        ("POST", "/predict/extra"),
        ("GET", "/predict"),
        ("DELETE", "/health"),
        ("POST", "/../../etc/passwd"),
        ("GET", long_path.as_str()),
    ] {
        cases.push((
            "unknown route or method",
            http(method, path, &[JSON], valid),
        ));
    }
    let malformed: [&[u8]; 7] = [
        b"GARBAGE\r\n\r\n",
        b"POST /predict HTTP/9.9\r\nHost: x\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\nConnection: close\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nConnection: close\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 30\r\nConnection: close\r\n\r\n{}",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    ];
    for bytes in malformed {
        cases.push(("malformed HTTP", bytes.to_vec()));
    }
    let filler = "x".repeat(1024);
    let many_headers: Vec<(String, &str)> = (0..200)
        .map(|i| (format!("X-Filler-{i}"), filler.as_str()))
        .collect();
    let many_headers: Vec<(&str, &str)> =
        many_headers.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    cases.push((
        "oversized headers",
        http("POST", "/predict", &many_headers, valid),
    ));
    cases
}

/// 10,000 hostile requests, shuffled with a fixed seed so that both halves get the same mix.
fn hostile_cases() -> Vec<Hostile> {
    let mut cases = Vec::with_capacity(HOSTILE_REQUESTS);
    for _ in 0..4 {
        let request = Arc::new(post_json(br#"{"inputs": "a slow client"}"#));
        cases.push(Hostile {
            kind: "slow client, a byte at a time",
            case: Case::Trickle(request),
        });
        cases.push(Hostile {
            kind: "slow client, silent",
            case: Case::Silent,
        });
    }
    for _ in 0..20 {
        cases.push(Hostile {
            kind: "10 MB body",
            case: Case::BigBody(10_000_000),
        });
    }
    let batch = Arc::new(post_json(
        json!({ "inputs": vec!["a"; 100_000] })
            .to_string()
            .as_bytes(),
    ));
    for _ in 0..40 {
        cases.push(Hostile {
            kind: "100,000-item batch",
            case: Case::Whole(Arc::clone(&batch)),
        });
    }
    let mut truncated = http("POST", "/predict", &[JSON], b"");
    // Content-Length: 0 becomes 1000, of which 10 bytes come.
    let cut = truncated.len() - 4 - 1;
    truncated.splice(cut..cut + 1, b"1000".iter().copied());
    truncated.extend_from_slice(b"{\"inputs\":");
    let truncated = Arc::new(truncated);
    let small: Vec<(&'static str, Arc<Vec<u8>>)> = small_cases()
        .into_iter()
        .map(|(k, b)| (k, Arc::new(b)))
        .collect();
    let mut i = 0;
    while cases.len() < HOSTILE_REQUESTS {
        if i % 50 == 49 {
            cases.push(Hostile {
                kind: "truncated body",
                case: Case::Truncated(Arc::clone(&truncated)),
            });
        } else {
            let (kind, bytes) = &small[i % small.len()];
            cases.push(Hostile {
                kind,
                case: Case::Whole(Arc::clone(bytes)),
            });
        }
        i += 1;
    }
    // Fisher-Yates with a xorshift: deterministic, no dependency.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for j in (1..cases.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        cases.swap(j, (state % (j as u64 + 1)) as usize);
    }
    cases
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// Reads a response up to its end (Content-Length or close), at most 8 MiB.
fn read_response(stream: &mut TcpStream, sent: usize) -> Outcome {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut timed_out = false;
    while data.len() < 8 << 20 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                timed_out = true;
                break;
            }
            Err(_) => break,
        }
        if response_complete(&data) {
            break;
        }
    }
    let status = std::str::from_utf8(&data[..data.len().min(12)])
        .ok()
        .filter(|s| s.starts_with("HTTP/1."))
        .and_then(|s| s.get(9..12))
        .and_then(|s| s.parse::<u16>().ok());
    let body = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&data[data.len()..], |p| &data[p + 4..]);
    let tei_error = serde_json::from_slice::<Value>(body)
        .is_ok_and(|v| v["error"].is_string() && v["error_type"].is_string());
    let label = match status {
        // Errors are expected to carry TEI's body; say where one does not.
        Some(s) if s >= 400 && !tei_error => format!("{s} without an error body"),
        Some(s) => s.to_string(),
        None if timed_out => "no answer in 10 s".into(),
        None => "closed without a status".into(),
    };
    Outcome {
        label,
        status,
        tei_error,
        sent,
    }
}

/// Whether the headers have come and as much body as their Content-Length says.
fn response_complete(data: &[u8]) -> bool {
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| data.len() >= end + 4 + len)
}

/// Whether the server has said something (or closed) while the client is still sending.
fn server_spoke(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let spoke = match stream.peek(&mut [0u8; 1]) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    spoke || stream.set_nonblocking(false).is_err()
}

fn send_big_body(port: u16, len: usize) -> std::io::Result<Outcome> {
    let mut stream = connect(port)?;
    let head = format!(
        "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes())?;
    let chunk = [b'a'; 64 * 1024];
    let mut sent = 0;
    while sent < len && !server_spoke(&stream) {
        let n = chunk.len().min(len - sent);
        if stream.write_all(&chunk[..n]).is_err() {
            break;
        }
        sent += n;
    }
    stream.set_nonblocking(false)?;
    Ok(read_response(&mut stream, sent))
}

fn trickle(port: u16, request: &[u8]) -> std::io::Result<Outcome> {
    let mut stream = connect(port)?;
    let pause = Duration::from_secs(2) / u32::try_from(request.len()).unwrap_or(u32::MAX).max(1);
    for byte in request {
        if stream.write_all(std::slice::from_ref(byte)).is_err() {
            break;
        }
        std::thread::sleep(pause);
    }
    Ok(read_response(&mut stream, request.len()))
}

fn silent(port: u16) -> std::io::Result<Outcome> {
    let mut stream = connect(port)?;
    std::thread::sleep(Duration::from_secs(3));
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let outcome = read_response(&mut stream, 0);
    Ok(match outcome.label.as_str() {
        "no answer in 10 s" => Outcome {
            label: "still open after 3 s".into(),
            ..outcome
        },
        "closed without a status" => Outcome {
            label: "closed by the server".into(),
            ..outcome
        },
        _ => outcome,
    })
}

fn exchange(port: u16, case: &Case) -> Outcome {
    let result = match case {
        Case::Whole(bytes) => connect(port).map(|mut s| {
            // A server that answers before reading everything may close on a partial write.
            let _ = s.write_all(bytes);
            read_response(&mut s, bytes.len())
        }),
        Case::Truncated(bytes) => connect(port).map(|mut s| {
            let _ = s.write_all(bytes);
            let _ = s.shutdown(Shutdown::Write);
            read_response(&mut s, bytes.len())
        }),
        Case::BigBody(len) => send_big_body(port, *len),
        Case::Trickle(bytes) => trickle(port, bytes),
        Case::Silent => silent(port),
    };
    result.unwrap_or_else(|e| Outcome {
        label: format!("cannot connect: {}", e.kind()),
        status: None,
        tei_error: false,
        sent: 0,
    })
}

#[derive(Debug, Default, Serialize)]
pub struct HostileTally {
    pub sent: usize,
    pub by_kind: BTreeMap<String, BTreeMap<String, usize>>,
    pub outcomes: BTreeMap<String, usize>,
    pub server_errors: usize,
    pub client_errors: usize,
    pub client_errors_with_tei_body: usize,
    pub big_body_most_bytes_sent: usize,
}

impl HostileTally {
    fn add(&mut self, kind: &str, o: &Outcome) {
        self.sent += 1;
        *self
            .by_kind
            .entry(kind.to_string())
            .or_default()
            .entry(o.label.clone())
            .or_default() += 1;
        *self.outcomes.entry(o.label.clone()).or_default() += 1;
        match o.status {
            Some(s) if s >= 500 => self.server_errors += 1,
            Some(s) if s >= 400 => {
                self.client_errors += 1;
                self.client_errors_with_tei_body += usize::from(o.tei_error);
            }
            _ => {}
        }
        if kind == "10 MB body" {
            self.big_body_most_bytes_sent = self.big_body_most_bytes_sent.max(o.sent);
        }
    }

    fn merge(&mut self, other: HostileTally) {
        self.sent += other.sent;
        for (kind, outcomes) in other.by_kind {
            let mine = self.by_kind.entry(kind).or_default();
            for (label, n) in outcomes {
                *mine.entry(label).or_default() += n;
            }
        }
        for (label, n) in other.outcomes {
            *self.outcomes.entry(label).or_default() += n;
        }
        self.server_errors += other.server_errors;
        self.client_errors += other.client_errors;
        self.client_errors_with_tei_body += other.client_errors_with_tei_body;
        self.big_body_most_bytes_sent = self
            .big_body_most_bytes_sent
            .max(other.big_body_most_bytes_sent);
    }
}

/// Sends the cases from 8 threads, none started after the deadline.
fn send_hostile(port: u16, cases: Arc<Vec<Hostile>>, deadline: Instant) -> Result<HostileTally> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (cases, next) = (Arc::clone(&cases), Arc::clone(&next));
        handles.push(std::thread::spawn(move || {
            let mut tally = HostileTally::default();
            while Instant::now() < deadline {
                let Some(h) = cases.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                tally.add(h.kind, &exchange(port, &h.case));
            }
            tally
        }));
    }
    let mut all = HostileTally::default();
    for h in handles {
        all.merge(
            h.join()
                .map_err(|_| anyhow::anyhow!("a hostile client thread panicked"))?,
        );
    }
    Ok(all)
}

#[derive(Debug, Serialize)]
pub struct HostileResult {
    pub tally: HostileTally,
    pub seconds: f64,
    pub memory_before: Memory,
    pub memory_half: Memory,
    pub memory_after: Memory,
    pub health_after: Option<u16>,
    pub predict_after: Option<u16>,
    pub alive: bool,
    pub panics: usize,
    pub flat: bool,
    pub passed: bool,
}

pub fn hostile(server: &mut Server) -> Result<HostileResult> {
    let cases = hostile_cases();
    let half = cases.len() / 2;
    let mut cases = cases;
    let second: Vec<Hostile> = cases.split_off(half);
    let started = Instant::now();
    // Bounded in time as well as in requests: no case starts after 5 minutes.
    let deadline = started + Duration::from_secs(300);
    let memory_before = server.memory()?;
    eprintln!("hostile: {HOSTILE_REQUESTS} requests in two halves");
    let mut tally = send_hostile(server.port, Arc::new(cases), deadline)?;
    let memory_half = server.memory()?;
    tally.merge(send_hostile(server.port, Arc::new(second), deadline)?);
    let memory_after = server.memory()?;
    let seconds = started.elapsed().as_secs_f64();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let health_after = match agent.get(&server.url("/health")).call() {
        Ok(r) => Some(r.status()),
        Err(ureq::Error::Status(code, _)) => Some(code),
        Err(ureq::Error::Transport(_)) => None,
    };
    let predict_after = post(
        &agent,
        &server.url("/predict"),
        br#"{"inputs": "a fine film"}"#,
    );
    let alive = server.alive();
    let panics = server.panics();
    let flat = memory_after.rss_mib - memory_half.rss_mib <= FLAT_MARGIN_MIB;
    let passed = tally.server_errors == 0
        && health_after == Some(200)
        && predict_after == Some(200)
        && alive
        && panics == 0
        && flat;
    Ok(HostileResult {
        tally,
        seconds,
        memory_before,
        memory_half,
        memory_after,
        health_after,
        predict_after,
        alive,
        panics,
        flat,
        passed,
    })
}

impl HostileResult {
    /// The summary and a table of outcomes by kind.
    pub fn markdown(&self) -> String {
        let h = self;
        let mut t = format!(
            "\nHostile phase against bertcls serve: {} requests in {} s from 8 threads (each on its own connection), \
             {} answered 4xx ({} with a JSON {{\"error\", \"error_type\"}} body), {} answered 5xx. \
             RSS before / after 5,000 / after 10,000: {} / {} / {} MiB (peak {} MiB). \
             After: /health {}, a valid /predict {}, process alive: {}, panics in its log: {}. \
             The 10 MB bodies got at most {} KiB out before the server answered or closed.\n\n\
             | kind | outcomes |\n|---|---|\n",
            h.tally.sent,
            fmt(h.seconds, 1),
            h.tally.client_errors,
            h.tally.client_errors_with_tei_body,
            h.tally.server_errors,
            fmt(h.memory_before.rss_mib, 1),
            fmt(h.memory_half.rss_mib, 1),
            fmt(h.memory_after.rss_mib, 1),
            fmt(h.memory_after.peak_mib, 1),
            h.health_after.map_or("no answer".into(), |s| s.to_string()),
            h.predict_after
                .map_or("no answer".into(), |s| s.to_string()),
            h.alive,
            h.panics,
            h.tally.big_body_most_bytes_sent / 1024,
        );
        for (kind, outcomes) in &h.tally.by_kind {
            let list: Vec<String> = outcomes.iter().map(|(l, n)| format!("{n}x {l}")).collect();
            t.push_str(&format!("| {kind} | {} |\n", list.join(", ")));
        }
        t
    }
}
