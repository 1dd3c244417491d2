//! `bertcls serve` under load (issue 11), in one run: N concurrent clients send single-text
//! `POST /predict` requests drawn from SST-2 dev for T seconds at 1, 8, 32 and 128 clients;
//! requests/s, texts/s, p50/p95/p99 latency, errors and the server's memory; offline
//! `bertcls predict` over the same texts and the single-text forward pass for comparison; the
//! same load against the Python reference server (scripts/reference/serve_reference.py); then
//! 10,000 malformed or hostile requests against `bertcls serve`.
//!
//!   cargo bench --bench serve_load                                  # the full run
//!   cargo bench --bench serve_load -- --seconds 3 --clients 1,8     # a short one
//!   cargo bench --bench serve_load -- --no-reference                # bertcls only
//!   cargo bench --bench serve_load -- --model DIR                   # another model folder
//!
//! Other flags: `--max-requests N` (per client count, default 100,000), `--no-hostile`,
//! `--no-bertcls` (the reference only). Without `--model`, configs/sentiment.toml is trained
//! into target/bench/serve-sentiment once and reused. The reference runs in the virtual
//! environment of scripts/reference/setup.sh. All traffic goes to 127.0.0.1, bounded in
//! requests and in time. Writes target/bench/serve_load.md and serve_load.json.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

const BERTCLS: &str = env!("CARGO_BIN_EXE_bertcls");
/// What both servers print on standard error once ready, before the port.
const READY: &str = "listening on http://";
/// Hostile requests in all, slow clients included.
const HOSTILE_REQUESTS: usize = 10_000;
/// Memory growth over the second half of the hostile requests still called flat: the
/// allocator keeps what the first half made it take, so only a second rise means growth.
const FLAT_MARGIN_MIB: f64 = 8.0;
/// Issue 11's figures.
const TARGET_VS_OFFLINE: f64 = 0.80;
const TARGET_VS_REFERENCE: f64 = 2.0;
const TARGET_P50_OVER_FORWARD: f64 = 1.20;

struct Options {
    seconds: f64,
    clients: Vec<usize>,
    max_requests: usize,
    model: Option<PathBuf>,
    bertcls: bool,
    reference: bool,
    hostile: bool,
}

fn options() -> Result<Options> {
    let mut opts = Options {
        seconds: 10.0,
        clients: vec![1, 8, 32, 128],
        max_requests: 100_000,
        model: None,
        bertcls: true,
        reference: true,
        hostile: true,
    };
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(arg) = args.next() {
        let mut value = |what: &str| args.next().with_context(|| format!("{arg} needs {what}"));
        match arg.as_str() {
            "--seconds" => opts.seconds = value("a number of seconds")?.parse()?,
            "--clients" => {
                opts.clients = value("a list such as 1,8,32,128")?
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()?
            }
            "--max-requests" => opts.max_requests = value("a number")?.parse()?,
            "--model" => opts.model = Some(value("a model folder")?.into()),
            "--no-bertcls" => opts.bertcls = false,
            "--no-reference" => opts.reference = false,
            "--no-hostile" => opts.hostile = false,
            other => bail!("unknown argument {other}"),
        }
    }
    if opts.clients.is_empty() || opts.clients.contains(&0) {
        bail!("--clients needs counts of at least 1");
    }
    if !(opts.seconds > 0.0 && opts.seconds <= 600.0) {
        bail!("--seconds must be in (0, 600]");
    }
    Ok(opts)
}

/// Runs a command, failing with its standard error if it fails; returns standard output.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json_of(text: &str) -> Result<Value> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("no JSON output")?;
    serde_json::from_str(line).context("cannot parse the JSON summary")
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

/// The 1-minute load average: the coordinator's builds may share the cores with this run.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The sentences of SST-2 dev (column `content`).
fn dev_texts(repo: &Path) -> Result<Vec<String>> {
    let path = repo.join("data/sst2/dev.tsv");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    let header = lines.next().context("dev.tsv is empty")?;
    let column = header
        .split('\t')
        .position(|c| c == "content")
        .context("dev.tsv has no content column")?;
    let texts: Vec<String> = lines
        .filter_map(|l| l.split('\t').nth(column).map(str::to_string))
        .collect();
    if texts.is_empty() {
        bail!("dev.tsv has no rows");
    }
    Ok(texts)
}

/// The model folder: `--model`, else configs/sentiment.toml trained once into target/bench.
fn model_folder(repo: &Path, work: &Path, given: Option<&PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir.clone());
    }
    let dir = work.join("serve-sentiment");
    if dir.join("config.json").is_file() && dir.join("model.safetensors").is_file() {
        eprintln!("model: reusing {}", dir.display());
        return Ok(dir);
    }
    eprintln!(
        "model: training configs/sentiment.toml into {}",
        dir.display()
    );
    run(Command::new(BERTCLS)
        .current_dir(repo)
        .args([
            "train",
            "--config",
            "configs/sentiment.toml",
            "--output-dir",
        ])
        .arg(&dir)
        .arg("--overwrite-output-dir")
        .args(["--set", "save_strategy=\"no\""]))?;
    Ok(dir)
}

// ---------------------------------------------------------------------------------------------
// Servers

/// Server standard error, drained by a thread so that the server never blocks on a full pipe.
#[derive(Default)]
struct ServerLog {
    last: Vec<String>,
    panics: usize,
}

impl ServerLog {
    fn push(&mut self, line: String) {
        if line.contains("panicked") {
            self.panics += 1;
        }
        if self.last.len() == 20 {
            self.last.remove(0);
        }
        self.last.push(line);
    }
}

struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    log: Arc<Mutex<ServerLog>>,
    ready_seconds: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Memory {
    rss_mib: f64,
    peak_mib: f64,
}

/// User and system CPU time of a process ("self" for this one), from /proc/PID/stat.
fn cpu_seconds(pid: &str) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // Fields after the command name, which is in parentheses and may hold spaces: utime and
    // stime are the 14th and 15th fields of the line, the 12th and 13th after it.
    let after = stat.rsplit_once(')').context("no command name")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .with_context(|| format!("{path} is short"))?
            .parse::<f64>()?)
    };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(11)? + ticks(12)?) / per_second.max(1.0))
}

fn port_of(line: &str) -> Option<u16> {
    let address = &line[line.find(READY)? + READY.len()..];
    address
        .trim()
        .rsplit(':')
        .next()?
        .trim_end_matches('/')
        .parse()
        .ok()
}

impl Server {
    /// Starts a server and waits for its readiness line, which gives the port.
    fn start(name: &'static str, mut cmd: Command) -> Result<Self> {
        let started = Instant::now();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        let stderr = child.stderr.take().context("no standard error pipe")?;
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let (ready, port) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(p) = port_of(&line) {
                    let _ = ready.send(p);
                }
                if let Ok(mut log) = sink.lock() {
                    log.push(line);
                }
            }
        });
        // Loading a model (torch's import for the reference) takes seconds; a minute is a hang.
        match port.recv_timeout(Duration::from_secs(120)) {
            Ok(port) => Ok(Self {
                name,
                child,
                port,
                log,
                ready_seconds: started.elapsed().as_secs_f64(),
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                let last = log.lock().map(|l| l.last.join("\n")).unwrap_or_default();
                bail!("{name} printed no readiness line; its standard error ends with:\n{last}")
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(&self.child.id().to_string())
    }

    /// Current and peak resident memory, from /proc/PID/status (VmRSS, VmHWM).
    fn memory(&self) -> Result<Memory> {
        let path = format!("/proc/{}/status", self.child.id());
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let kib = |key: &str| -> Result<f64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(key))
                .with_context(|| format!("{path} has no {key}"))?;
            let value = line.split_whitespace().nth(1).context("empty field")?;
            Ok(value.parse::<f64>()?)
        };
        Ok(Memory {
            rss_mib: kib("VmRSS:")? / 1024.0,
            peak_mib: kib("VmHWM:")? / 1024.0,
        })
    }

    fn panics(&self) -> usize {
        self.log.lock().map_or(0, |l| l.panics)
    }

    /// SIGTERM, then up to 30 s for the graceful shutdown; a kill after that.
    fn stop(mut self) -> Result<ExitStatus> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        bail!("{} did not exit within 30 s of SIGTERM", self.name)
    }
}

impl Drop for Server {
    /// A bench that fails half way leaves no server behind.
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start_bertcls(model: &Path) -> Result<Server> {
    let mut cmd = Command::new(BERTCLS);
    cmd.args(["serve", "--model"])
        .arg(model)
        // One log line per request would cost the server time the reference (access log off)
        // does not spend.
        .args(["--host", "127.0.0.1", "--port", "0", "--log-level", "warn"]);
    Server::start("bertcls serve", cmd)
}

fn start_reference(repo: &Path, python: &str, model: &Path) -> Result<Server> {
    let mut cmd = Command::new(python);
    cmd.arg(repo.join("scripts/reference/serve_reference.py"))
        .arg("--model")
        .arg(model)
        .args(["--port", "0"]);
    Server::start("reference server", cmd)
}

// ---------------------------------------------------------------------------------------------
// Load

#[derive(Debug, Clone, Serialize)]
struct LoadResult {
    server: String,
    clients: usize,
    seconds: f64,
    requests: usize,
    ok: usize,
    errors: usize,
    /// Non-200 statuses and transport failures ("transport").
    error_kinds: BTreeMap<String, usize>,
    requests_per_second: f64,
    texts_per_second: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    memory: Memory,
    /// CPU time over the wall time, in cores: the server's, and this process's (the clients).
    server_cores: f64,
    client_cores: f64,
}

/// What one client thread saw: latencies of the 200s in microseconds, and the rest.
#[derive(Default)]
struct ClientTally {
    latencies_us: Vec<u32>,
    requests: usize,
    errors: BTreeMap<String, usize>,
}

/// Sends one request and reads its body to the end (so that the connection is reused);
/// returns the status, or None when the transport failed.
fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> Option<u16> {
    let response = match agent
        .post(url)
        .set("Content-Type", "application/json")
        .send_bytes(body)
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(_)) => return None,
    };
    let status = response.status();
    let mut reader = response.into_reader().take(1 << 20);
    std::io::copy(&mut reader, &mut std::io::sink()).ok()?;
    Some(status)
}

/// One client: its own keep-alive connection, requests back to back from its own offset in
/// the texts, until the deadline or the shared request cap.
fn client(
    url: &str,
    bodies: &[Vec<u8>],
    offset: usize,
    deadline: Instant,
    sent: &AtomicUsize,
    cap: usize,
) -> ClientTally {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .max_idle_connections_per_host(1)
        .build();
    let mut tally = ClientTally::default();
    let mut failures_in_a_row = 0;
    let mut i = offset;
    // A dead server fails every request at once: stop instead of spinning to the deadline.
    while Instant::now() < deadline && failures_in_a_row < 100 {
        if sent.fetch_add(1, Ordering::Relaxed) >= cap {
            break;
        }
        let body = &bodies[i % bodies.len()];
        i += 1;
        let start = Instant::now();
        let status = post(&agent, url, body);
        let micros = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
        tally.requests += 1;
        match status {
            Some(200) => {
                tally.latencies_us.push(micros);
                failures_in_a_row = 0;
            }
            Some(code) => *tally.errors.entry(code.to_string()).or_default() += 1,
            None => {
                *tally.errors.entry("transport".into()).or_default() += 1;
                failures_in_a_row += 1;
            }
        }
    }
    tally
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    f64::from(sorted_us[rank.clamp(1, sorted_us.len()) - 1]) / 1000.0
}

fn load(
    server: &Server,
    bodies: &Arc<Vec<Vec<u8>>>,
    clients: usize,
    seconds: f64,
    cap: usize,
) -> Result<LoadResult> {
    let url = server.url("/predict");
    let sent = Arc::new(AtomicUsize::new(0));
    let server_cpu = server.cpu_seconds()?;
    let client_cpu = cpu_seconds("self")?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut handles = Vec::with_capacity(clients);
    for c in 0..clients {
        let (url, bodies, sent) = (url.clone(), Arc::clone(bodies), Arc::clone(&sent));
        let offset = c * bodies.len() / clients;
        handles.push(
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || client(&url, &bodies, offset, deadline, &sent, cap))
                .context("cannot start a client thread")?,
        );
    }
    let mut all = ClientTally::default();
    for h in handles {
        let t = h
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        all.latencies_us.extend(t.latencies_us);
        all.requests += t.requests;
        for (k, v) in t.errors {
            *all.errors.entry(k).or_default() += v;
        }
    }
    // Requests in flight at the deadline finish after it: the rate is over the whole time.
    let elapsed = start.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let ok = all.latencies_us.len();
    Ok(LoadResult {
        server: server.name.to_string(),
        clients,
        seconds: elapsed,
        requests: all.requests,
        ok,
        errors: all.requests - ok,
        error_kinds: all.errors,
        requests_per_second: all.requests as f64 / elapsed,
        // Each request carries one text; only the answered ones count.
        texts_per_second: ok as f64 / elapsed,
        p50_ms: percentile_ms(&all.latencies_us, 50.0),
        p95_ms: percentile_ms(&all.latencies_us, 95.0),
        p99_ms: percentile_ms(&all.latencies_us, 99.0),
        memory: server.memory()?,
        server_cores: (server.cpu_seconds()? - server_cpu) / elapsed,
        client_cores: (cpu_seconds("self")? - client_cpu) / elapsed,
    })
}

/// Every client count against one server, after a short warm-up (first requests allocate).
fn load_levels(
    server: &Server,
    bodies: &Arc<Vec<Vec<u8>>>,
    opts: &Options,
) -> Result<Vec<LoadResult>> {
    load(server, bodies, 1, 1.0, 50).context("warm-up")?;
    let mut results = Vec::new();
    for &clients in &opts.clients {
        eprintln!(
            "{}: {clients} client(s) for {} s",
            server.name, opts.seconds
        );
        let r = load(server, bodies, clients, opts.seconds, opts.max_requests)?;
        eprintln!(
            "  {:.1} requests/s, p50 {:.1} ms, p99 {:.1} ms, {} errors",
            r.requests_per_second, r.p50_ms, r.p99_ms, r.errors
        );
        results.push(r);
    }
    Ok(results)
}

// ---------------------------------------------------------------------------------------------
// Offline reference

#[derive(Debug, Clone, Serialize)]
struct Offline {
    predict_texts_per_second: f64,
    predict_rows: u64,
    /// How the single-text figure was measured.
    single_text_method: String,
    single_text_ms: f64,
}

fn write_texts_csv(path: &Path, texts: &[String]) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    w.write_record(["text"])?;
    for t in texts {
        w.write_record([t])?;
    }
    w.flush()?;
    Ok(())
}

/// `bertcls predict --input` over the texts; its summary's examples/s excludes the model load.
fn predict_file(model: &Path, input: &Path, output: &Path, batch_size: usize) -> Result<Value> {
    json_of(&run(Command::new(BERTCLS)
        .args(["predict", "--model"])
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(["--batch-size", &batch_size.to_string(), "--json"]))?)
}

fn offline(model: &Path, work: &Path, texts: &[String]) -> Result<Offline> {
    let input = work.join("serve_load-texts.csv");
    write_texts_csv(&input, texts)?;
    let output = work.join("serve_load-predicted.csv");
    eprintln!("offline: bertcls predict over {} texts", texts.len());
    let batched = predict_file(model, &input, &output, 64)?;
    // One text per forward pass: what a request costs with nothing to batch it with.
    // TODO(issue 11): the median of Classifier::classify over single texts once the library
    // type is on main; until then the mean from predict at batch size 1.
    eprintln!("offline: bertcls predict one text at a time");
    let single = predict_file(model, &input, &output, 1)?;
    let per_second = single["examples_per_second"].as_f64().unwrap_or(f64::NAN);
    let result = Offline {
        predict_texts_per_second: batched["examples_per_second"].as_f64().unwrap_or(f64::NAN),
        predict_rows: batched["rows"].as_u64().unwrap_or(0),
        single_text_method:
            "mean over the texts of bertcls predict --batch-size 1 (model load excluded)".into(),
        single_text_ms: 1000.0 / per_second,
    };
    eprintln!(
        "  {:.1} texts/s batched, {:.2} ms per single text",
        result.predict_texts_per_second, result.single_text_ms
    );
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Hostile requests

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
struct HostileTally {
    sent: usize,
    by_kind: BTreeMap<String, BTreeMap<String, usize>>,
    outcomes: BTreeMap<String, usize>,
    server_errors: usize,
    client_errors: usize,
    client_errors_with_tei_body: usize,
    big_body_most_bytes_sent: usize,
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
struct HostileResult {
    tally: HostileTally,
    seconds: f64,
    memory_before: Memory,
    memory_half: Memory,
    memory_after: Memory,
    health_after: Option<u16>,
    predict_after: Option<u16>,
    alive: bool,
    panics: usize,
    flat: bool,
    passed: bool,
}

fn hostile(server: &mut Server) -> Result<HostileResult> {
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

// ---------------------------------------------------------------------------------------------
// Report

fn fmt(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "-".into()
    }
}

fn load_table(rows: &[LoadResult]) -> String {
    let mut t = String::from(
        "| server | clients | requests | requests/s | texts/s | p50 ms | p95 ms | p99 ms | errors | peak RSS MiB | RSS MiB | CPU cores: server / clients |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let errors = if r.errors == 0 {
            "0".to_string()
        } else {
            let kinds: Vec<String> = r
                .error_kinds
                .iter()
                .map(|(k, n)| format!("{n}x {k}"))
                .collect();
            format!("{} ({})", r.errors, kinds.join(", "))
        };
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |\n",
            r.server,
            r.clients,
            r.requests,
            fmt(r.requests_per_second, 1),
            fmt(r.texts_per_second, 1),
            fmt(r.p50_ms, 1),
            fmt(r.p95_ms, 1),
            fmt(r.p99_ms, 1),
            errors,
            fmt(r.memory.peak_mib, 0),
            fmt(r.memory.rss_mib, 0),
            fmt(r.server_cores, 2),
            fmt(r.client_cores, 2),
        ));
    }
    t
}

/// Issue 11's figures: (figure, measured, target, met).
fn figures(
    ours: &[LoadResult],
    theirs: &[LoadResult],
    offline: Option<&Offline>,
    hostile: Option<&HostileResult>,
) -> Vec<(String, String, String, String)> {
    let met = |ok: bool| if ok { "yes" } else { "no" }.to_string();
    let mut rows = Vec::new();
    let saturated = ours.iter().max_by_key(|r| r.clients);
    if let (Some(s), Some(o)) = (saturated, offline) {
        let ratio = s.texts_per_second / o.predict_texts_per_second;
        rows.push((
            format!("texts/s at {} clients vs offline predict", s.clients),
            format!(
                "{} / {} = {}",
                fmt(s.texts_per_second, 1),
                fmt(o.predict_texts_per_second, 1),
                fmt(ratio, 2)
            ),
            format!(">= {TARGET_VS_OFFLINE:.2}"),
            met(ratio >= TARGET_VS_OFFLINE),
        ));
    }
    let reference = theirs.iter().max_by_key(|r| r.clients);
    if let (Some(s), Some(r)) = (saturated, reference) {
        let ratio = s.texts_per_second / r.texts_per_second;
        rows.push((
            format!(
                "texts/s at {} clients vs the reference at {}",
                s.clients, r.clients
            ),
            format!(
                "{} / {} = {}x",
                fmt(s.texts_per_second, 1),
                fmt(r.texts_per_second, 1),
                fmt(ratio, 2)
            ),
            format!(">= {TARGET_VS_REFERENCE:.1}x"),
            met(ratio >= TARGET_VS_REFERENCE),
        ));
    }
    let single = ours.iter().find(|r| r.clients == 1);
    if let (Some(s), Some(o)) = (single, offline) {
        let ratio = s.p50_ms / o.single_text_ms;
        rows.push((
            "1-client p50 vs the single-text forward pass".into(),
            format!(
                "{} ms / {} ms = {}",
                fmt(s.p50_ms, 2),
                fmt(o.single_text_ms, 2),
                fmt(ratio, 2)
            ),
            format!("<= {TARGET_P50_OVER_FORWARD:.2}"),
            met(ratio <= TARGET_P50_OVER_FORWARD),
        ));
    }
    if let Some(h) = hostile {
        rows.push((
            format!("{} hostile requests", h.tally.sent),
            format!(
                "{} 5xx, /health {}, alive {}, {} panics, RSS {} -> {} -> {} MiB",
                h.tally.server_errors,
                h.health_after.map_or("no answer".into(), |s| s.to_string()),
                h.alive,
                h.panics,
                fmt(h.memory_before.rss_mib, 1),
                fmt(h.memory_half.rss_mib, 1),
                fmt(h.memory_after.rss_mib, 1),
            ),
            format!(
                "no 5xx or panic, /health 200, second-half RSS growth <= {FLAT_MARGIN_MIB} MiB"
            ),
            met(h.passed),
        ));
    }
    rows
}

fn hostile_section(h: &HostileResult) -> String {
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

struct Run {
    machine: String,
    load_before: String,
    model: PathBuf,
    texts: usize,
    ours: Vec<LoadResult>,
    theirs: Vec<LoadResult>,
    offline: Option<Offline>,
    hostile: Option<HostileResult>,
    ready_seconds: BTreeMap<String, f64>,
}

fn report(run: &Run, opts: &Options) -> String {
    let mut md = format!(
        "# bertcls serve under load\n\nMachine: {}; 1-minute load average {} before the run, {} after. \
         The client threads (one per client, each with its own keep-alive connection) run on the same \
         cores as the server, so every figure includes the client's own CPU time; the last column is CPU time over wall \
         time, in cores, for the server and for all the clients together.\n\n\
         Model: {}. Requests: `{{\"inputs\": \"...\"}}`, one text each, cycling through the {} sentences \
         of SST-2 dev; {} s per client count, at most {} requests; latencies over the 200s. \
         Both servers run without request logs.\n\n",
        run.machine,
        run.load_before,
        load_average(),
        run.model.display(),
        run.texts,
        opts.seconds,
        opts.max_requests,
    );
    let mut rows = run.ours.clone();
    rows.extend(run.theirs.iter().cloned());
    md.push_str(&load_table(&rows));
    for (name, s) in &run.ready_seconds {
        md.push_str(&format!(
            "\n{name}: ready {} s after its start.",
            fmt(*s, 1)
        ));
    }
    md.push('\n');
    if let Some(o) = &run.offline {
        md.push_str(&format!(
            "\nOffline, same model and texts: `bertcls predict --input` (batch 64) {} texts/s over {} rows \
             (model time, load excluded); single-text forward pass {} ms ({}).\n",
            fmt(o.predict_texts_per_second, 1),
            o.predict_rows,
            fmt(o.single_text_ms, 2),
            o.single_text_method,
        ));
    }
    let figs = figures(
        &run.ours,
        &run.theirs,
        run.offline.as_ref(),
        run.hostile.as_ref(),
    );
    if !figs.is_empty() {
        md.push_str("\n| issue 11 figure | measured | target | met |\n|---|---|---|---|\n");
        for (a, b, c, d) in figs {
            md.push_str(&format!("| {a} | {b} | {c} | {d} |\n"));
        }
    }
    if let Some(h) = &run.hostile {
        md.push_str(&hostile_section(h));
    }
    md
}

// ---------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let opts = options()?;
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = repo.join("target/bench");
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let load_before = load_average();
    let machine = machine();
    eprintln!("machine: {machine}, load average {load_before}");
    let model = model_folder(&repo, &work, opts.model.as_ref())?;
    let texts = dev_texts(&repo)?;
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        texts
            .iter()
            .map(|t| serde_json::to_vec(&json!({ "inputs": t })))
            .collect::<Result<_, _>>()?,
    );
    let python = if opts.reference {
        Some(
            run(Command::new("bash").arg(repo.join("scripts/reference/setup.sh")))?
                .trim()
                .to_string(),
        )
    } else {
        None
    };

    let mut result = Run {
        machine,
        load_before,
        model: model.clone(),
        texts: texts.len(),
        ours: Vec::new(),
        theirs: Vec::new(),
        offline: None,
        hostile: None,
        ready_seconds: BTreeMap::new(),
    };
    if opts.bertcls {
        // Offline first, with the cores to itself.
        result.offline = Some(offline(&model, &work, &texts)?);
        let mut server = start_bertcls(&model)?;
        result
            .ready_seconds
            .insert(server.name.into(), server.ready_seconds);
        result.ours = load_levels(&server, &bodies, &opts)?;
        if opts.hostile {
            result.hostile = Some(hostile(&mut server)?);
        }
        let status = server.stop()?;
        if !status.success() {
            bail!("bertcls serve exited with {status} after SIGTERM");
        }
    }
    if let Some(python) = &python {
        let server = start_reference(&repo, python, &model)?;
        result
            .ready_seconds
            .insert(server.name.into(), server.ready_seconds);
        result.theirs = load_levels(&server, &bodies, &opts)?;
        server.stop()?;
    }

    let md = report(&result, &opts);
    println!("{md}");
    std::fs::write(work.join("serve_load.md"), &md)?;
    let json = json!({
        "machine": result.machine,
        "load_average_before": result.load_before,
        "model": result.model,
        "texts": result.texts,
        "seconds": opts.seconds,
        "max_requests": opts.max_requests,
        "bertcls": result.ours,
        "reference": result.theirs,
        "offline": result.offline,
        "hostile": result.hostile,
        "ready_seconds": result.ready_seconds,
    });
    std::fs::write(
        work.join("serve_load.json"),
        serde_json::to_vec_pretty(&json)?,
    )?;
    Ok(())
}
