//! A server under test as a child process: started, waited for (its readiness line gives the
//! port), measured (memory and CPU time from /proc), stopped with SIGTERM.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

/// What both servers print on standard error once ready, before the port.
const READY: &str = "listening on http://";

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

pub struct Server {
    pub name: &'static str,
    child: Child,
    pub port: u16,
    log: Arc<Mutex<ServerLog>>,
    pub ready_seconds: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Memory {
    pub rss_mib: f64,
    pub peak_mib: f64,
}

/// User and system CPU time of a process ("self" for this one), from /proc/PID/stat.
pub fn cpu_seconds(pid: &str) -> Result<f64> {
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

/// CPU time of the whole machine, all processes together, from /proc/stat: the time its
/// cores were neither idle nor waiting on I/O.
pub fn machine_cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let line = stat.lines().next().context("/proc/stat is empty")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("/proc/stat: a field that is not a number")?;
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).unwrap_or(&0.0) + ticks.get(4).unwrap_or(&0.0);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((total - idle) / per_second.max(1.0))
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
    pub fn start(name: &'static str, mut cmd: Command) -> Result<Self> {
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

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(&self.child.id().to_string())
    }

    /// Current and peak resident memory, from /proc/PID/status (VmRSS, VmHWM).
    pub fn memory(&self) -> Result<Memory> {
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

    /// The unlabelled samples of `GET /metrics` (histograms' `_sum` and `_count` among them),
    /// or None where the server has no such route (the reference).
    pub fn metrics(&self) -> Option<BTreeMap<String, f64>> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        let text = agent
            .get(&self.url("/metrics"))
            .call()
            .ok()?
            .into_string()
            .ok()?;
        Some(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.contains('{'))
                .filter_map(|l| {
                    let (name, value) = l.split_once(' ')?;
                    Some((name.to_string(), value.trim().parse().ok()?))
                })
                .collect(),
        )
    }

    pub fn panics(&self) -> usize {
        self.log.lock().map_or(0, |l| l.panics)
    }

    /// SIGTERM, then up to 30 s for the graceful shutdown; a kill after that.
    pub fn stop(mut self) -> Result<ExitStatus> {
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

/// Sends one request and reads its body to the end (so that the connection is reused);
/// returns the status, or None when the transport failed.
pub fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> Option<u16> {
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
