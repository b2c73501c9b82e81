//! Healthchecks as docker runs them: the service's `HealthConfig` merged with the image's
//! HEALTHCHECK, and the pure state machine that turns probe results into "starting", "healthy"
//! and "unhealthy" (moby `daemon/health.go`). The task actor drives it; the executor runs the
//! probes.

use std::collections::VecDeque;
use std::time::Duration;

use shoal_proto::v1::{HealthConfig, HealthResult, HealthStatus};

use crate::image::ImageHealthcheck;

/// Time between probes when the config says 0 (also the wait before the first probe).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// How long one probe may run when the config says 0.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time between probes during the start period while still starting, when the config says 0.
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
/// Consecutive failures that make a container unhealthy when the config says 0.
pub const DEFAULT_RETRIES: u32 = 3;
/// Probe output kept per result, bytes (docker's `maxOutputLen`).
pub const MAX_OUTPUT_BYTES: usize = 4096;
/// Results kept (docker's `maxLogEntries`).
pub const MAX_LOG_ENTRIES: usize = 5;

/// A healthcheck to run, with docker's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// What runs inside the container: the argv of `CMD`, or `/bin/sh -c` and the `CMD-SHELL` command.
    pub args: Vec<String>,
    /// Time between probes.
    pub interval: Duration,
    /// How long one probe may run before it is killed and counted as a failure.
    pub timeout: Duration,
    /// Failures in this time after the start do not count while the container is still starting.
    pub start_period: Duration,
    /// Time between probes during the start period while still starting.
    pub start_interval: Duration,
    /// Consecutive failures that make the container unhealthy.
    pub retries: u32,
}

/// One probe for the executor to run in a task's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthProbe {
    /// The command and its arguments (`args[0]` looked up along the container's `PATH`).
    pub args: Vec<String>,
    /// Killed after this long; the result is then a failure.
    pub timeout: Duration,
}

/// What one probe gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeResult {
    /// Unix nanoseconds when it started.
    pub start_ns: i64,
    /// Unix nanoseconds when it ended.
    pub end_ns: i64,
    /// 0 = healthy; anything else (-1 when it could not run or timed out) is a failure.
    pub exit_code: i32,
    /// Its stdout and stderr, at most [`MAX_OUTPUT_BYTES`] (then "..." marks the cut).
    pub output: String,
}

/// Keeps at most [`MAX_OUTPUT_BYTES`] of a probe's output, marking a cut as docker does.
pub fn limit_output(bytes: &[u8]) -> String {
    if bytes.len() <= MAX_OUTPUT_BYTES {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut out = String::from_utf8_lossy(&bytes[..MAX_OUTPUT_BYTES]).into_owned();
    out.push_str("...");
    out
}

fn duration(ns: i64, default: Duration) -> Duration {
    if ns > 0 {
        Duration::from_nanos(ns as u64)
    } else {
        default
    }
}

/// The healthcheck a container runs, as docker decides it: without a service healthcheck the
/// image's is used; with one, each field it leaves empty or zero is taken from the image's.
/// `["NONE"]`, an empty test or an unknown test type means none.
pub fn resolve(
    spec: Option<&HealthConfig>,
    image: Option<&ImageHealthcheck>,
) -> Option<Healthcheck> {
    let image = image.map(|i| HealthConfig {
        test: i.test.clone(),
        interval_ns: i.interval_ns,
        timeout_ns: i.timeout_ns,
        start_period_ns: i.start_period_ns,
        start_interval_ns: i.start_interval_ns,
        retries: i.retries,
    });
    let merged = match (spec.cloned(), image) {
        (None, None) => return None,
        (None, Some(i)) => i,
        (Some(s), None) => s,
        // moby daemon/commit.go merge(): the user's fields win where set.
        (Some(mut s), Some(i)) => {
            if s.test.is_empty() {
                s.test = i.test;
            }
            if s.interval_ns == 0 {
                s.interval_ns = i.interval_ns;
            }
            if s.timeout_ns == 0 {
                s.timeout_ns = i.timeout_ns;
            }
            if s.start_period_ns == 0 {
                s.start_period_ns = i.start_period_ns;
            }
            if s.start_interval_ns == 0 {
                s.start_interval_ns = i.start_interval_ns;
            }
            if s.retries == 0 {
                s.retries = i.retries;
            }
            s
        }
    };
    let (kind, rest) = merged.test.split_first()?;
    let args: Vec<String> = match kind.as_str() {
        "CMD" => rest.to_vec(),
        // docker runs the image's SHELL when it has one; images here get /bin/sh.
        "CMD-SHELL" => ["/bin/sh".to_string(), "-c".to_string()]
            .into_iter()
            .chain(rest.iter().cloned())
            .collect(),
        _ => return None, // "NONE", or a type docker would also ignore
    };
    if args.is_empty() {
        return None;
    }
    Some(Healthcheck {
        args,
        interval: duration(merged.interval_ns, DEFAULT_INTERVAL),
        timeout: duration(merged.timeout_ns, DEFAULT_TIMEOUT),
        start_period: duration(merged.start_period_ns, Duration::ZERO),
        start_interval: duration(merged.start_interval_ns, DEFAULT_START_INTERVAL),
        retries: u32::try_from(merged.retries)
            .ok()
            .filter(|r| *r > 0)
            .unwrap_or(DEFAULT_RETRIES),
    })
}

/// A container's health, in docker's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No probe has succeeded yet.
    Starting,
    /// The last probe succeeded, or fewer than `retries` have failed since.
    Healthy,
    /// `retries` consecutive probes failed.
    Unhealthy,
}

impl Health {
    /// docker's name of the status (`State.Health.Status`).
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// The health of one container: its status, failing streak and last results. Pure: the caller
/// says how long the container has been running; nothing here reads a clock.
#[derive(Debug, Clone)]
pub struct HealthMonitor {
    check: Healthcheck,
    status: Health,
    failing_streak: u32,
    log: VecDeque<ProbeResult>,
}

impl HealthMonitor {
    /// A container that has just started: "starting", no results.
    pub fn new(check: Healthcheck) -> HealthMonitor {
        HealthMonitor::with_status(check, Health::Starting)
    }

    /// A monitor that begins in `status` (a container re-adopted after an agent restart that
    /// was already healthy).
    pub fn with_status(check: Healthcheck, status: Health) -> HealthMonitor {
        HealthMonitor {
            check,
            status,
            failing_streak: 0,
            log: VecDeque::new(),
        }
    }

    /// The status now.
    pub fn status(&self) -> Health {
        self.status
    }

    /// The probe to run next.
    pub fn probe(&self) -> HealthProbe {
        HealthProbe {
            args: self.check.args.clone(),
            timeout: self.check.timeout,
        }
    }

    /// The wait before the next probe, `since_start` after the container started: the start
    /// interval while still starting within the start period, the interval otherwise.
    pub fn next_interval(&self, since_start: Duration) -> Duration {
        if self.status == Health::Starting && since_start < self.check.start_period {
            self.check.start_interval
        } else {
            self.check.interval
        }
    }

    /// Takes one result of a probe that started `since_start` after the container; returns
    /// whether the status or the failing streak changed (what is worth reporting).
    pub fn record(&mut self, result: ProbeResult, since_start: Duration) -> bool {
        let before = (self.status, self.failing_streak);
        let healthy = result.exit_code == 0;
        self.log.push_back(result);
        while self.log.len() > MAX_LOG_ENTRIES {
            self.log.pop_front();
        }
        // Each transition of moby's handleProbeResult.
        match (healthy, self.status) {
            // Any success: healthy, streak reset (also recovers an unhealthy container).
            (true, _) => {
                self.status = Health::Healthy;
                self.failing_streak = 0;
            }
            // Still starting within the start period: the failure is logged but not counted.
            (false, Health::Starting) if since_start < self.check.start_period => {}
            // Counted: unhealthy once the streak reaches the retries.
            (false, _) => {
                self.failing_streak = self.failing_streak.saturating_add(1);
                if self.failing_streak >= self.check.retries {
                    self.status = Health::Unhealthy;
                }
            }
        }
        (self.status, self.failing_streak) != before
    }

    /// The health as reported in the task's status.
    pub fn report(&self) -> HealthStatus {
        HealthStatus {
            status: self.status.as_str().to_string(),
            failing_streak: i32::try_from(self.failing_streak).unwrap_or(i32::MAX),
            log: self
                .log
                .iter()
                .map(|r| HealthResult {
                    start: r.start_ns,
                    end: r.end_ns,
                    exit_code: r.exit_code,
                    output: r.output.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn spec(test: &[&str]) -> HealthConfig {
        HealthConfig {
            test: test.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn image(test: &[&str]) -> ImageHealthcheck {
        ImageHealthcheck {
            test: test.iter().map(|s| s.to_string()).collect(),
            interval_ns: 7_000_000_000,
            timeout_ns: 3_000_000_000,
            start_period_ns: 20_000_000_000,
            start_interval_ns: 1_000_000_000,
            retries: 9,
        }
    }

    #[test]
    fn merge_rules_are_dockers() {
        let shell = |c: &str| vec!["/bin/sh".to_string(), "-c".into(), c.into()];
        // Neither: none.
        assert_eq!(resolve(None, None), None);
        // Only the image's, every field.
        let h = resolve(None, Some(&image(&["CMD-SHELL", "true"]))).expect("image's");
        assert_eq!(
            h,
            Healthcheck {
                args: shell("true"),
                interval: 7 * S,
                timeout: 3 * S,
                start_period: 20 * S,
                start_interval: S,
                retries: 9,
            }
        );
        // Only the service's: docker's defaults for what it leaves zero.
        let h = resolve(Some(&spec(&["CMD", "curl", "-f", "x"])), None).expect("spec's");
        assert_eq!(
            h,
            Healthcheck {
                args: vec!["curl".into(), "-f".into(), "x".into()],
                interval: 30 * S,
                timeout: 30 * S,
                start_period: Duration::ZERO,
                start_interval: 5 * S,
                retries: 3,
            }
        );
        // Both: the service's fields win where set, the image's fill the rest.
        let mut s = spec(&[]);
        s.retries = 2;
        s.interval_ns = 500_000_000;
        let h = resolve(Some(&s), Some(&image(&["CMD", "check"]))).expect("merged");
        assert_eq!(h.args, ["check"]);
        assert_eq!((h.interval, h.retries), (S / 2, 2));
        assert_eq!(
            (h.timeout, h.start_period, h.start_interval),
            (3 * S, 20 * S, S)
        );
        let h = resolve(
            Some(&spec(&["CMD-SHELL", "mine"])),
            Some(&image(&["CMD", "x"])),
        );
        assert_eq!(h.expect("spec's test").args, shell("mine"));
        // --no-healthcheck disables the image's.
        assert_eq!(
            resolve(Some(&spec(&["NONE"])), Some(&image(&["CMD", "x"]))),
            None
        );
        // An image that disables it, or an unknown type, or nothing to run: none.
        assert_eq!(resolve(None, Some(&image(&["NONE"]))), None);
        assert_eq!(resolve(Some(&spec(&["BOGUS", "x"])), None), None);
        assert_eq!(resolve(Some(&spec(&["CMD"])), None), None);
        assert_eq!(resolve(Some(&spec(&[])), None), None);
        // Negative values are as unset.
        let mut s = spec(&["CMD", "x"]);
        s.retries = -1;
        s.timeout_ns = -5;
        let h = resolve(Some(&s), None).expect("spec's");
        assert_eq!((h.retries, h.timeout), (3, 30 * S));
    }

    fn check(start_period: Duration, retries: u32) -> Healthcheck {
        Healthcheck {
            args: vec!["x".into()],
            interval: 10 * S,
            timeout: 2 * S,
            start_period,
            start_interval: S,
            retries,
        }
    }

    fn result(exit_code: i32) -> ProbeResult {
        ProbeResult {
            exit_code,
            output: format!("exit {exit_code}"),
            ..Default::default()
        }
    }

    /// One probe: its exit code (-1: timed out), seconds since the container started, and the
    /// status and streak expected after it.
    type Step = (i32, u64, Health, u32);

    #[test]
    fn the_state_machine_follows_docker() {
        use Health::*;
        let cases: &[(&str, Duration, u32, &[Step])] = &[
            (
                "first success makes it healthy",
                Duration::ZERO,
                3,
                &[(1, 10, Starting, 1), (0, 20, Healthy, 0)],
            ),
            (
                "retries consecutive failures make it unhealthy",
                Duration::ZERO,
                3,
                &[
                    (1, 10, Starting, 1),
                    (1, 20, Starting, 2),
                    (1, 30, Unhealthy, 3),
                ],
            ),
            (
                "failures in the start period do not count while starting",
                30 * S,
                2,
                &[
                    (1, 1, Starting, 0),
                    (-1, 2, Starting, 0),
                    (1, 29, Starting, 0),
                    (1, 30, Starting, 1),
                    (1, 40, Unhealthy, 2),
                ],
            ),
            (
                "after a success, failures in the start period count",
                30 * S,
                2,
                &[(0, 1, Healthy, 0), (1, 2, Healthy, 1), (1, 3, Unhealthy, 2)],
            ),
            (
                "a success resets the streak",
                Duration::ZERO,
                3,
                &[
                    (0, 10, Healthy, 0),
                    (1, 20, Healthy, 1),
                    (1, 30, Healthy, 2),
                    (0, 40, Healthy, 0),
                    (1, 50, Healthy, 1),
                ],
            ),
            (
                "a timed-out probe is a failure",
                Duration::ZERO,
                1,
                &[(0, 10, Healthy, 0), (-1, 20, Unhealthy, 1)],
            ),
            (
                "an unhealthy container recovers on success",
                Duration::ZERO,
                1,
                &[(1, 10, Unhealthy, 1), (0, 20, Healthy, 0)],
            ),
            (
                "any non-zero exit code fails",
                Duration::ZERO,
                2,
                &[(2, 10, Starting, 1), (137, 20, Unhealthy, 2)],
            ),
        ];
        for (name, start_period, retries, steps) in cases {
            let mut m = HealthMonitor::new(check(*start_period, *retries));
            for (i, (code, at, status, streak)) in steps.iter().enumerate() {
                m.record(result(*code), Duration::from_secs(*at));
                assert_eq!(
                    (m.status(), m.report().failing_streak),
                    (*status, *streak as i32),
                    "{name}: step {i}"
                );
            }
        }
    }

    #[test]
    fn record_says_when_something_worth_reporting_changed() {
        let mut m = HealthMonitor::new(check(10 * S, 2));
        assert!(!m.record(result(1), S), "uncounted failure while starting");
        assert!(m.record(result(0), 2 * S), "healthy");
        assert!(!m.record(result(0), 3 * S), "still healthy");
        assert!(m.record(result(1), 4 * S), "streak 1");
        assert!(m.record(result(1), 5 * S), "unhealthy");
    }

    #[test]
    fn intervals_use_the_start_interval_only_while_starting_in_the_start_period() {
        let mut m = HealthMonitor::new(check(30 * S, 3));
        assert_eq!(m.next_interval(Duration::ZERO), S);
        assert_eq!(m.next_interval(29 * S), S);
        assert_eq!(m.next_interval(30 * S), 10 * S);
        m.record(result(0), 2 * S);
        assert_eq!(m.next_interval(3 * S), 10 * S);
        // Without a start period the first probe waits a whole interval, as docker's.
        let m = HealthMonitor::new(check(Duration::ZERO, 3));
        assert_eq!(m.next_interval(Duration::ZERO), 10 * S);
    }

    #[test]
    fn the_log_keeps_the_last_five_results_oldest_first() {
        let mut m = HealthMonitor::new(check(Duration::ZERO, 100));
        for code in 1..=7 {
            m.record(result(code), 100 * S);
        }
        let codes: Vec<i32> = m.report().log.iter().map(|r| r.exit_code).collect();
        assert_eq!(codes, [3, 4, 5, 6, 7]);
        assert_eq!(m.report().status, "starting");
    }

    #[test]
    fn output_is_cut_at_4096_bytes() {
        assert_eq!(limit_output(b"ok\n"), "ok\n");
        let long = vec![b'a'; 5000];
        let out = limit_output(&long);
        assert_eq!(out.len(), 4096 + 3);
        assert!(out.ends_with("a..."));
    }
}
