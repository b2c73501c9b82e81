//! A steady HTTP client for the zero-loss update tests: from inside a test host's network
//! namespace it sends `GET /` at a fixed rate (a new TCP connection per request, a short
//! timeout) to the routing mesh, and records every request: when it was sent, how long it took,
//! and either the app's answer (`VERSION HOSTNAME`) or why it failed.
//!
//! Requests are spread over a few worker threads, each on its own schedule, so one request
//! hanging until its timeout delays only that worker's next request, not the rate as a whole.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

/// What one request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// HTTP 200 with the app's `VERSION HOSTNAME` body.
    Ok {
        /// The version that answered.
        version: String,
        /// The hostname of the task that answered (its task id's first 12 characters).
        host: String,
    },
    /// No answer, a bad one, or a non-200 status: what went wrong.
    Failed(String),
}

/// One request of the steady client.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the request was started (connect).
    pub sent: Instant,
    /// How long it took to the end of the answer (or the failure).
    pub took: Duration,
    /// Where it was sent.
    pub target: SocketAddrV4,
    /// What it got.
    pub answer: Answer,
}

impl Sample {
    /// The version that answered, if it succeeded.
    pub fn version(&self) -> Option<&str> {
        match &self.answer {
            Answer::Ok { version, .. } => Some(version),
            Answer::Failed(_) => None,
        }
    }

    /// Whether it failed.
    pub fn failed(&self) -> bool {
        matches!(self.answer, Answer::Failed(_))
    }
}

/// How to run a steady client.
#[derive(Debug, Clone)]
pub struct SteadyOptions {
    /// Requests per second, over all workers.
    pub rate: u32,
    /// Connect + answer timeout of one request.
    pub timeout: Duration,
    /// Worker threads (each a connection at a time); `0` picks one per 25 requests/s, at least 4.
    pub workers: usize,
}

impl Default for SteadyOptions {
    fn default() -> Self {
        SteadyOptions {
            rate: 50,
            timeout: Duration::from_secs(2),
            workers: 0,
        }
    }
}

/// A running steady client; [`SteadyClient::stop`] ends it and returns every sample.
pub struct SteadyClient {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    workers: Vec<JoinHandle<Result<()>>>,
    started: Instant,
}

impl SteadyClient {
    /// Starts sending `GET /` to `targets` (round robin) from inside the network namespace at
    /// `netns` (e.g. `Host::netns_path()`), at `opts.rate` requests per second.
    pub fn start(netns: &Path, targets: &[SocketAddrV4], opts: SteadyOptions) -> Result<Self> {
        if targets.is_empty() || opts.rate == 0 {
            return Err(anyhow!("a steady client needs a target and a rate above 0"));
        }
        let n = if opts.workers == 0 {
            (opts.rate as usize / 25).max(4)
        } else {
            opts.workers
        };
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        // Request i is due at started + i/rate and is sent by worker i % n.
        let period = Duration::from_secs_f64(n as f64 / f64::from(opts.rate));
        let mut workers = Vec::with_capacity(n);
        for w in 0..n {
            let netns: PathBuf = netns.to_path_buf();
            let targets = targets.to_vec();
            let worker_stop = stop.clone();
            let samples = samples.clone();
            let offset = Duration::from_secs_f64(w as f64 / f64::from(opts.rate));
            let timeout = opts.timeout;
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            workers.push(std::thread::spawn(move || -> Result<()> {
                // setns affects this thread only: every socket it makes lives in the test host.
                let entered = File::open(&netns)
                    .with_context(|| format!("opening {}", netns.display()))
                    .and_then(|ns| {
                        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                            .with_context(|| format!("entering {}", netns.display()))
                    });
                let failed = entered.as_ref().err().map(|e| format!("{e:#}"));
                let _ = ready_tx.send(failed);
                entered?;
                let mut k: u64 = 0;
                while !worker_stop.load(Ordering::Relaxed) {
                    let due = started + offset + period.mul_f64(k as f64);
                    let now = Instant::now();
                    if due > now {
                        // Short naps, so stop() never waits a whole period.
                        std::thread::sleep((due - now).min(Duration::from_millis(50)));
                        continue;
                    }
                    let index = w as u64 + k * n as u64;
                    let target = targets[(index % targets.len() as u64) as usize];
                    let sent = Instant::now();
                    let answer = get(target, timeout);
                    let sample = Sample {
                        sent,
                        took: sent.elapsed(),
                        target,
                        answer,
                    };
                    samples
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(sample);
                    k += 1;
                }
                Ok(())
            }));
            match ready_rx.recv() {
                Ok(None) => {}
                Ok(Some(e)) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(anyhow!("steady client: {e}"));
                }
                Err(_) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(anyhow!("steady client: a worker died before starting"));
                }
            }
        }
        Ok(SteadyClient {
            stop,
            samples,
            workers,
            started,
        })
    }

    /// When the client started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// A copy of the samples so far, in the order they were sent.
    pub fn snapshot(&self) -> Report {
        let mut samples = self
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        samples.sort_by_key(|s| s.sent);
        Report {
            samples,
            started: self.started,
        }
    }

    /// Stops the workers (each finishes its request in flight) and returns every sample.
    pub fn stop(mut self) -> Result<Report> {
        self.stop.store(true, Ordering::Relaxed);
        for w in std::mem::take(&mut self.workers) {
            w.join()
                .map_err(|_| anyhow!("a steady client worker panicked"))??;
        }
        let mut samples =
            std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()));
        samples.sort_by_key(|s| s.sent);
        Ok(Report {
            samples,
            started: self.started,
        })
    }
}

impl Drop for SteadyClient {
    fn drop(&mut self) {
        // A test that fails early must not leave workers hammering a dead testbed.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One `GET /` to `target` on a new connection, from the calling thread's network namespace.
pub fn get(target: SocketAddrV4, timeout: Duration) -> Answer {
    match try_get(target, timeout) {
        Ok(a) => a,
        Err(e) => Answer::Failed(format!("{e:#}")),
    }
}

/// [`get`] from inside the network namespace at `netns` (on a short-lived thread that enters it).
pub fn get_from(netns: &Path, target: SocketAddrV4, timeout: Duration) -> Result<Answer> {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || -> Result<Answer> {
        let ns = File::open(&netns).with_context(|| format!("opening {}", netns.display()))?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering {}", netns.display()))?;
        Ok(get(target, timeout))
    })
    .join()
    .map_err(|_| anyhow!("the GET thread panicked"))?
}

fn try_get(target: SocketAddrV4, timeout: Duration) -> Result<Answer> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&SocketAddr::V4(target), timeout).context("connect")?;
    let left = timeout
        .saturating_sub(start.elapsed())
        .max(Duration::from_millis(1));
    s.set_read_timeout(Some(left))?;
    s.set_write_timeout(Some(left))?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {target}\r\n\r\n").as_bytes())
        .context("send")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).context("read")?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("not an HTTP answer: {text:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Ok(Answer::Failed(format!("status {status:?}")));
    }
    let mut words = body.split_whitespace();
    match (words.next(), words.next()) {
        (Some(version), Some(host)) => Ok(Answer::Ok {
            version: version.to_string(),
            host: host.to_string(),
        }),
        _ => Ok(Answer::Failed(format!("unexpected body {body:?}"))),
    }
}

/// The samples of a steady client, sorted by the time they were sent.
#[derive(Debug, Clone)]
pub struct Report {
    /// Every request, in order.
    pub samples: Vec<Sample>,
    /// When the client started.
    pub started: Instant,
}

impl Report {
    /// The failed requests.
    pub fn failures(&self) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.failed()).collect()
    }

    /// Answers per version.
    pub fn versions(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for v in self.samples.iter().filter_map(Sample::version) {
            *m.entry(v.to_string()).or_default() += 1;
        }
        m
    }

    /// The samples sent at or after `t`.
    pub fn sent_after(&self, t: Instant) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.sent >= t)
    }

    /// Hostnames (task ids' first 12 characters) that answered with `version`.
    pub fn hosts_of(&self, version: &str) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .samples
            .iter()
            .filter_map(|s| match &s.answer {
                Answer::Ok { version: v, host } if v == version => Some(host.clone()),
                _ => None,
            })
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// The achieved rate over the run, requests per second.
    pub fn rate(&self) -> f64 {
        match (self.samples.first(), self.samples.last()) {
            (Some(a), Some(b)) if b.sent > a.sent => {
                self.samples.len() as f64 / (b.sent - a.sent).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// The slowest request.
    pub fn max_latency(&self) -> Duration {
        self.samples
            .iter()
            .map(|s| s.took)
            .max()
            .unwrap_or_default()
    }

    /// A one-paragraph account for failure messages: totals, versions, the first failures with
    /// their time since start.
    pub fn summary(&self) -> String {
        let failures = self.failures();
        let mut text = format!(
            "{} requests ({:.1}/s, slowest {:?}), {} failed, answers by version {:?}",
            self.samples.len(),
            self.rate(),
            self.max_latency(),
            failures.len(),
            self.versions()
        );
        for f in failures.iter().take(10) {
            if let Answer::Failed(why) = &f.answer {
                text.push_str(&format!(
                    "\n  at +{:.3}s to {}: {why}",
                    (f.sent - self.started).as_secs_f64(),
                    f.target
                ));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    /// A loopback server answering `vN host` to every connection, in the test's own namespace.
    fn server(version: &'static str) -> (SocketAddrV4, Arc<AtomicBool>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = match l.local_addr().expect("addr") {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("bound to an IPv4 address"),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        l.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).expect("blocking");
                        let mut buf = [0u8; 1024];
                        let _ = c.read(&mut buf);
                        let body = format!("{version} testhost\n");
                        let _ = c.write_all(
                            format!(
                                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        (addr, stop)
    }

    #[test]
    fn records_answers_and_failures_at_the_rate_asked() {
        let (good, stop_server) = server("v1");
        // A port nobody listens on: refused at once.
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            match l.local_addr().expect("addr") {
                SocketAddr::V4(a) => a,
                SocketAddr::V6(_) => unreachable!("bound to an IPv4 address"),
            }
        };
        let netns = Path::new("/proc/self/ns/net");
        let client = SteadyClient::start(
            netns,
            &[good, closed],
            SteadyOptions {
                rate: 100,
                timeout: Duration::from_millis(500),
                workers: 0,
            },
        );
        let client = match client {
            Ok(c) => c,
            // setns into our own namespace still needs CAP_SYS_ADMIN.
            Err(e) if !nix::unistd::geteuid().is_root() => {
                eprintln!("skipping: {e:#}");
                return;
            }
            Err(e) => panic!("{e:#}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.snapshot().samples.len() < 100 {
            assert!(
                Instant::now() < deadline,
                "too slow: {}",
                client.snapshot().summary()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let report = client.stop().expect("stop");
        stop_server.store(true, Ordering::Relaxed);
        let ok = report.samples.iter().filter(|s| !s.failed()).count();
        let failed = report.failures().len();
        assert!(ok >= 45 && failed >= 45, "{}", report.summary());
        assert!(report.failures().iter().all(|s| s.target == closed));
        assert_eq!(report.versions().keys().collect::<Vec<_>>(), vec!["v1"]);
        assert_eq!(report.hosts_of("v1"), vec!["testhost".to_string()]);
        assert!(
            report.rate() > 60.0 && report.rate() < 140.0,
            "{}",
            report.summary()
        );
        assert!(report.sent_after(Instant::now()).next().is_none());
        assert_eq!(*good.ip(), Ipv4Addr::LOCALHOST);
    }
}
