//! Helpers the process-level benches (`scale_1000`, `scale_10k`, `ca_rotation`) share: finding the binaries,
//! killing what they started, waiting on a condition, measuring a process (CPU, RSS, perf), and
//! small numeric and file utilities.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// How long a bench waits for anything to converge (1,000 agents are slow to join).
pub const DEADLINE: Duration = Duration::from_secs(180);
/// How often a bench looks again while it waits.
pub const POLL: Duration = Duration::from_millis(50);

/// The number in environment variable `name`, or `default` when unset or not a number.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of `v` (the upper one of an even count); `v` must not be empty.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The binaries a bench drives: `SHOAL_BIN_DIR`, or the profile directory above the bench.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("SHOAL_BIN_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe()?;
    // target/release/deps/<bench>-<hash> -> target/release
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("cannot place {}", exe.display()))
}

/// The binary `name` in `dir`, or an error saying how to build it.
pub fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if !p.is_file() {
        bail!(
            "{name} not found in {}: run `cargo build --release -p shoal-manager -p shoalctl -p shoal-tests` first",
            dir.display()
        );
    }
    Ok(p)
}

/// The processes started here; killed (and reaped) on drop, whatever happened.
#[derive(Default)]
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `check` every [`POLL`] until it says yes, fails, or [`DEADLINE`] passes.
pub fn wait_for(what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    loop {
        if check()? {
            return Ok(());
        }
        if start.elapsed() > DEADLINE {
            bail!("timed out after {DEADLINE:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A new log file `name` in `dir`.
pub fn log_file(dir: &Path, name: &str) -> Result<std::fs::File> {
    let p = dir.join(name);
    std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces but ends at the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?
            .parse::<f64>()?)
    };
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// Resident memory of a process now, MiB.
pub fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kib / 1024.0)
}

/// Samples a process's RSS every 100 ms until stopped; the peak, MiB.
pub struct RssPeak {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<f64>,
}

impl RssPeak {
    pub fn start(pid: u32) -> RssPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak: f64 = 0.0;
            while !flag.load(Ordering::Relaxed) {
                if let Ok(r) = rss_mib(pid) {
                    peak = peak.max(r);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        RssPeak { stop, thread }
    }

    pub fn stop(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(f64::NAN)
    }
}

/// `perf record` of a process while alive, with `SHOAL_BENCH_PERF` set; stopped (SIGINT, so it
/// writes its file) on drop.
pub struct Perf(Option<Child>);

impl Perf {
    pub fn start(pid: u32, out: &Path) -> Result<Perf> {
        if std::env::var_os("SHOAL_BENCH_PERF").is_none() {
            return Ok(Perf(None));
        }
        let child = Command::new("perf")
            .args(["record", "-F", "499", "-g", "-p", &pid.to_string(), "-o"])
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf record")?;
        Ok(Perf(Some(child)))
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
            let _ = c.wait();
        }
    }
}

/// `shoalctl --config ADMIN_CONF` against a bench's manager.
pub struct Shoalctl {
    /// The `shoalctl` binary.
    pub ctl: PathBuf,
    /// The manager's `admin.conf` (written once the manager is up).
    pub admin_conf: PathBuf,
}

impl Shoalctl {
    /// Runs `shoalctl --config ADMIN_CONF ARGS...` and returns its stdout; a failed command is
    /// an error carrying its stderr.
    pub fn run<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = Command::new(&self.ctl)
            .arg("--config")
            .arg(&self.admin_conf)
            .args(&args)
            .output()
            .with_context(|| format!("running {}", self.ctl.display()))?;
        if !out.status.success() {
            bail!(
                "shoalctl {:?}: {}",
                args,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The rows `ARGS... --format json` prints, one JSON object per line.
    pub fn rows<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> Result<Vec<T>> {
        let out = self.run(args.iter().chain(&["--format", "json"]))?;
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("parsing {l:?}")))
            .collect()
    }

    /// Whether the manager is up and answers (its `admin.conf` written, `node ls` works).
    pub fn answers(&self) -> bool {
        self.admin_conf.is_file() && self.run(["node", "ls"]).is_ok()
    }
}

/// What `shoal-loadgen` last printed on its stdout, each line with when it was read.
#[derive(Debug, Default)]
pub struct LoadgenView {
    /// Sessions up (`ready N`), once they all are.
    pub ready: Option<usize>,
    /// (when, tasks held, tasks reported running), one per `tasks` line.
    pub tasks: Vec<(Instant, i64, i64)>,
    /// (when, nodes holding their final ingress view), one per `ingress` line.
    pub ingress: Vec<(Instant, usize)>,
    /// (when, [messages, bytes, whole sets, deltas, resyncs]), one per `wire` line.
    pub wire: Vec<(Instant, [u64; 5])>,
    /// Sessions lost so far (`lost N`).
    pub lost: usize,
    /// Whether the load generator's stdout has closed (it exited).
    pub exited: bool,
}

impl LoadgenView {
    /// The last (tasks held, tasks running) printed, (0, 0) before any.
    pub fn last_tasks(&self) -> (i64, i64) {
        self.tasks.last().map_or((0, 0), |t| (t.1, t.2))
    }

    /// First moment at or after `since` when `pred(held, running)` held.
    pub fn first_tasks(&self, since: Instant, pred: impl Fn(i64, i64) -> bool) -> Option<Instant> {
        self.tasks
            .iter()
            .find(|t| t.0 >= since && pred(t.1, t.2))
            .map(|t| t.0)
    }

    /// The wire counters as last printed at or before `at` (zeros before any).
    pub fn wire_at(&self, at: Instant) -> [u64; 5] {
        self.wire
            .iter()
            .take_while(|w| w.0 <= at)
            .last()
            .map_or([0; 5], |w| w.1)
    }

    /// Takes one line of the load generator's output into the view.
    fn take(&mut self, line: &str, now: Instant) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ready", n] => self.ready = n.parse().ok(),
            ["tasks", held, running] => {
                if let (Ok(h), Ok(r)) = (held.parse(), running.parse()) {
                    self.tasks.push((now, h, r));
                }
            }
            ["ingress", n] => {
                if let Ok(n) = n.parse() {
                    self.ingress.push((now, n));
                }
            }
            ["lost", n] => self.lost = n.parse().unwrap_or(self.lost),
            ["wire", rest @ ..] if rest.len() == 5 => {
                let mut w = [0u64; 5];
                for (slot, word) in w.iter_mut().zip(rest) {
                    *slot = word.parse().unwrap_or(0);
                }
                self.wire.push((now, w));
            }
            _ => {}
        }
    }
}

/// The view of a running `shoal-loadgen`, fed by a thread reading its stdout.
#[derive(Clone, Default)]
pub struct LoadgenReader(Arc<std::sync::Mutex<LoadgenView>>);

impl LoadgenReader {
    /// Starts reading `stdout` (the load generator's, piped) on a thread of its own.
    pub fn spawn(stdout: impl std::io::Read + Send + 'static) -> Self {
        use std::io::BufRead as _;
        let reader = LoadgenReader::default();
        let view = reader.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                view.look().take(&line, Instant::now());
            }
            view.look().exited = true;
        });
        reader
    }

    /// The view as of now (locked while held).
    pub fn look(&self) -> std::sync::MutexGuard<'_, LoadgenView> {
        // A panic while locked only means a line half taken; the view stays readable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadgen_lines_are_read_into_the_view() {
        let out = "ready 3\ntasks 4 2\ningress 3\nwire 1 2 3 4 5\nlost 1\nnoise\n";
        let reader = LoadgenReader::spawn(std::io::Cursor::new(out.as_bytes().to_vec()));
        wait_for("the reader to reach the end", || Ok(reader.look().exited))
            .expect("the reader ends with its input");
        let v = reader.look();
        assert_eq!(v.ready, Some(3));
        assert_eq!(v.last_tasks(), (4, 2));
        assert_eq!(v.ingress.last().map(|i| i.1), Some(3));
        assert_eq!(v.wire_at(Instant::now()), [1, 2, 3, 4, 5]);
        assert_eq!(v.lost, 1);
        let t0 = v.tasks[0].0;
        assert_eq!(v.first_tasks(t0, |h, _| h == 4), Some(t0));
    }
}
