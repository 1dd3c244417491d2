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

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};
use support::{json_of, reference_python, run};

use bertcls::infer::{Batching, Classifier, LoadOptions};
use bertcls::tokenize::Input;

const BERTCLS: &str = env!("CARGO_BIN_EXE_bertcls");
/// bertcls serve's forward passes per client count, from its /metrics.
fn batching_table(rows: &[LoadResult]) -> String {
    let mut t = String::from(
        "\n| bertcls serve, from /metrics: clients | forward passes | inputs per pass | tokens per pass (no padding) | inference ms per pass | queue ms per request |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        if let Some(b) = &r.batching {
            t.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.clients,
                fmt(b.batches, 0),
                fmt(b.mean_batch_size, 1),
                fmt(b.mean_batch_tokens, 0),
                fmt(b.inference_ms_per_batch, 1),
                fmt(b.queue_ms_per_request, 1),
            ));
        }
    }
    t
}

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

#[path = "serve_load/hostile.rs"]
mod hostile;
#[path = "serve_load/server.rs"]
mod server;

use hostile::{FLAT_MARGIN_MIB, HostileResult, hostile};
use server::{Memory, Server, cpu_seconds, machine_cpu_seconds, post};

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
    /// What bertcls serve's /metrics says of this client count.
    batching: Option<BatchStats>,
    /// CPU time over the wall time, in cores: the server's, and this process's (the clients).
    server_cores: f64,
    client_cores: f64,
    /// The machine's CPU time over the wall time less the server's and the clients': other
    /// processes (builds, tests) competing for the same cores.
    other_cores: f64,
}

/// The forward passes bertcls serve ran during one client count (its /metrics count a pass as
/// a batch), from /metrics before and after.
#[derive(Debug, Clone, Serialize)]
struct BatchStats {
    batches: f64,
    mean_batch_size: f64,
    /// Tokens per batch, padding excluded.
    mean_batch_tokens: f64,
    inference_ms_per_batch: f64,
    queue_ms_per_request: f64,
}

fn batch_stats(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BatchStats {
    let delta =
        |name: &str| after.get(name).unwrap_or(&f64::NAN) - before.get(name).unwrap_or(&0.0);
    let batches = delta("bertcls_batch_size_count");
    BatchStats {
        batches,
        mean_batch_size: delta("bertcls_batch_size_sum") / batches,
        mean_batch_tokens: delta("bertcls_batch_tokens_sum") / batches,
        inference_ms_per_batch: 1000.0 * delta("bertcls_inference_duration_seconds_sum") / batches,
        queue_ms_per_request: 1000.0 * delta("bertcls_queue_duration_seconds_sum")
            / delta("bertcls_queue_duration_seconds_count"),
    }
}

/// What one client thread saw: latencies of the 200s in microseconds, and the rest.
#[derive(Default)]
struct ClientTally {
    latencies_us: Vec<u32>,
    requests: usize,
    errors: BTreeMap<String, usize>,
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
    let metrics_before = server.metrics();
    let server_cpu = server.cpu_seconds()?;
    let client_cpu = cpu_seconds("self")?;
    let machine_cpu = machine_cpu_seconds()?;
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
    let server_cores = (server.cpu_seconds()? - server_cpu) / elapsed;
    let client_cores = (cpu_seconds("self")? - client_cpu) / elapsed;
    let machine_cores = (machine_cpu_seconds()? - machine_cpu) / elapsed;
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
        server_cores,
        client_cores,
        other_cores: (machine_cores - server_cores - client_cores).max(0.0),
        batching: metrics_before
            .zip(server.metrics())
            .map(|(before, after)| batch_stats(&before, &after)),
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
    /// The better of the runs of `bertcls predict` (before the servers, after bertcls serve):
    /// on a machine shared with other work, the one less slowed down by it.
    predict_texts_per_second: f64,
    predict_runs: Vec<f64>,
    predict_rows: u64,
    /// One text alone through `Classifier::predict`: the median and the mean over the texts.
    single_text_ms: f64,
    single_text_mean_ms: f64,
    /// Other processes' CPU time over this phase's wall time, in cores.
    other_cores: f64,
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

/// Milliseconds to answer each text alone through the library, as the server does for a
/// lone request: tokenize, one forward pass of one row, task head. The model load is left
/// out, and the first texts warm the allocator and caches up.
fn single_text_ms(model: &Path, texts: &[String]) -> Result<Vec<f64>> {
    let classifier = Classifier::load(model, &LoadOptions::cpu())
        .with_context(|| format!("cannot load {}", model.display()))?;
    let one = |text: &str| -> Result<f64> {
        let start = Instant::now();
        classifier.predict(&[Input::from(text)], Batching::rows(1))?;
        Ok(start.elapsed().as_secs_f64() * 1000.0)
    };
    for text in texts.iter().take(20) {
        one(text)?;
    }
    texts.iter().map(|t| one(t)).collect()
}

/// CPU seconds of this process's children that have been waited for (`bertcls predict`).
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given, zeroed here.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// `bertcls predict` once more, the better run kept: the ratio to offline is then the harder
/// one to meet, whichever run other work slowed down.
fn predict_again(offline: &mut Offline, model: &Path, work: &Path) -> Result<()> {
    eprintln!("offline: bertcls predict again");
    let input = work.join("serve_load-texts.csv");
    let output = work.join("serve_load-predicted.csv");
    let again = predict_file(model, &input, &output, 64)?["examples_per_second"]
        .as_f64()
        .unwrap_or(f64::NAN);
    offline.predict_runs.push(again);
    offline.predict_texts_per_second = offline.predict_texts_per_second.max(again);
    Ok(())
}

fn offline(model: &Path, work: &Path, texts: &[String]) -> Result<Offline> {
    let start = Instant::now();
    let own_cpu = cpu_seconds("self")? + children_cpu_seconds();
    let machine_cpu = machine_cpu_seconds()?;
    let input = work.join("serve_load-texts.csv");
    write_texts_csv(&input, texts)?;
    let output = work.join("serve_load-predicted.csv");
    eprintln!("offline: bertcls predict over {} texts", texts.len());
    let batched = predict_file(model, &input, &output, 64)?;
    eprintln!("offline: each text alone through Classifier::predict");
    let mut single = single_text_ms(model, texts)?;
    single.sort_unstable_by(f64::total_cmp);
    let result = Offline {
        predict_texts_per_second: batched["examples_per_second"].as_f64().unwrap_or(f64::NAN),
        predict_runs: vec![batched["examples_per_second"].as_f64().unwrap_or(f64::NAN)],
        predict_rows: batched["rows"].as_u64().unwrap_or(0),
        single_text_ms: single[single.len() / 2],
        single_text_mean_ms: single.iter().sum::<f64>() / single.len().max(1) as f64,
        other_cores: ((machine_cpu_seconds()? - machine_cpu)
            - (cpu_seconds("self")? + children_cpu_seconds() - own_cpu))
            .max(0.0)
            / start.elapsed().as_secs_f64(),
    };
    eprintln!(
        "  {:.1} texts/s batched; one text alone: median {:.2} ms, mean {:.2} ms",
        result.predict_texts_per_second, result.single_text_ms, result.single_text_mean_ms
    );
    Ok(result)
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
        "| server | clients | requests | requests/s | texts/s | p50 ms | p95 ms | p99 ms | errors | peak RSS MiB | RSS MiB | CPU cores: server / clients / other processes |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
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
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} |\n",
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
            fmt(r.other_cores, 2),
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
         time, in cores, for the server, for all the clients together, and for the other \
         processes of the machine (builds and tests that compete for the same cores).\n\n\
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
    if run.ours.iter().any(|r| r.batching.is_some()) {
        md.push_str(&batching_table(&run.ours));
    }
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
             (model time, load excluded; the better of {} texts/s, before the servers and after \
             bertcls serve). Single-text forward pass: each text alone through \
             `Classifier::predict` (tokenize, one forward pass of one row, softmax), median {} ms, \
             mean {} ms over the {} texts. Other processes took {} cores meanwhile.\n",
            fmt(o.predict_texts_per_second, 1),
            o.predict_rows,
            o.predict_runs
                .iter()
                .map(|v| fmt(*v, 1))
                .collect::<Vec<_>>()
                .join(" and "),
            fmt(o.single_text_ms, 2),
            fmt(o.single_text_mean_ms, 2),
            run.texts,
            fmt(o.other_cores, 2),
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
        md.push_str(&h.markdown());
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
        Some(reference_python(&repo)?)
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
        if let Some(o) = result.offline.as_mut() {
            predict_again(o, &model, &work)?;
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
