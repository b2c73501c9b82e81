//! Flags `service create` and `service update` share for healthchecks (`--health-*`) and for
//! how tasks are replaced (`--update-*`, `--rollback-*`), with swarm's defaults in the help.

use clap::{Args, ValueEnum};

use super::parse::{parse_duration, parse_non_negative};

/// `--health-*` and `--no-healthcheck`; unset flags inherit (the image's check on create, the
/// service's current one on update).
#[derive(Debug, Clone, Default, Args)]
pub struct HealthArgs {
    /// Command that checks health, run with /bin/sh -c in the container ("" on update: use the
    /// image's HEALTHCHECK again).
    #[arg(
        long = "health-cmd",
        id = "health-cmd",
        value_name = "CMD",
        allow_hyphen_values = true
    )]
    pub cmd: Option<String>,

    /// Time between checks, also before the first (ns|us|ms|s|m|h) [default: 30s].
    #[arg(long = "health-interval", id = "health-interval", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = parse_duration)]
    pub interval: Option<i64>,

    /// Longest a check may run before it counts as failed (ns|us|ms|s|m|h) [default: 30s].
    #[arg(long = "health-timeout", id = "health-timeout", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = parse_duration)]
    pub timeout: Option<i64>,

    /// Consecutive failures that make a task unhealthy [default: 3].
    #[arg(long = "health-retries", id = "health-retries", value_name = "N", allow_negative_numbers = true,
          value_parser = parse_retries)]
    pub retries: Option<i32>,

    /// Start period during which failures do not count until the first success
    /// (ns|us|ms|s|m|h) [default: 0s].
    #[arg(long = "health-start-period", id = "health-start-period", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = parse_duration)]
    pub start_period: Option<i64>,

    /// Time between checks during the start period (ns|us|ms|s|m|h) [default: 5s].
    #[arg(long = "health-start-interval", id = "health-start-interval", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = parse_duration)]
    pub start_interval: Option<i64>,

    /// Disable any healthcheck, the image's included.
    #[arg(long = "no-healthcheck", id = "no-healthcheck")]
    pub no_healthcheck: bool,
}

impl HealthArgs {
    /// True when some `--health-*` flag (not `--no-healthcheck`) is given.
    pub fn any_health_flag(&self) -> bool {
        self.cmd.is_some()
            || self.interval.is_some()
            || self.timeout.is_some()
            || self.retries.is_some()
            || self.start_period.is_some()
            || self.start_interval.is_some()
    }

    /// True when no health flag at all is given.
    pub fn is_empty(&self) -> bool {
        !self.any_health_flag() && !self.no_healthcheck
    }

    /// Docker's refusal of `--no-healthcheck` beside a `--health-*` flag.
    pub fn check(&self) -> Result<(), String> {
        if self.no_healthcheck && self.any_health_flag() {
            return Err("--no-healthcheck conflicts with --health-* options".into());
        }
        Ok(())
    }
}

/// What to do when updated tasks fail (`--update-failure-action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UpdateFailureAction {
    /// Stop replacing tasks; the next `service update` resumes.
    Pause,
    /// Keep replacing tasks.
    Continue,
    /// Go back to the previous spec.
    Rollback,
}

/// What to do when rolled-back tasks fail (`--rollback-failure-action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RollbackFailureAction {
    /// Stop rolling back.
    Pause,
    /// Keep rolling back.
    Continue,
}

/// Whether a slot's old task stops before or after its new one starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UpdateOrder {
    /// Stop the old task, then start the new one.
    StopFirst,
    /// Start the new task; stop the old one once the new one runs (and is healthy).
    StartFirst,
}

/// `--update-*`: how `service update` replaces tasks.
#[derive(Debug, Clone, Default, Args)]
pub struct UpdateConfigArgs {
    /// Maximum number of tasks updated at once (0 to update all at once) [default: 1].
    #[arg(long = "update-parallelism", id = "update-parallelism", value_name = "N", allow_negative_numbers = true,
          value_parser = parse_non_negative)]
    pub parallelism: Option<u64>,

    /// Delay between updates, per updating task (ns|us|ms|s|m|h) [default: 0s].
    #[arg(long = "update-delay", id = "update-delay", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = parse_duration)]
    pub delay: Option<i64>,

    /// Action on update failure [default: pause].
    #[arg(
        long = "update-failure-action",
        id = "update-failure-action",
        value_name = "ACTION",
        value_enum
    )]
    pub failure_action: Option<UpdateFailureAction>,

    /// Duration after each task update to monitor for failure (ns|us|ms|s|m|h) [default: 5s].
    #[arg(long = "update-monitor", id = "update-monitor", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = parse_duration)]
    pub monitor: Option<i64>,

    /// Failure rate to tolerate during an update, 0 to 1 [default: 0].
    #[arg(long = "update-max-failure-ratio", id = "update-max-failure-ratio", value_name = "RATIO", allow_hyphen_values = true,
          value_parser = parse_ratio)]
    pub max_failure_ratio: Option<f32>,

    /// Update order [default: stop-first].
    #[arg(
        long = "update-order",
        id = "update-order",
        value_name = "ORDER",
        value_enum
    )]
    pub order: Option<UpdateOrder>,
}

/// `--rollback-*`: how a rollback replaces tasks.
#[derive(Debug, Clone, Default, Args)]
pub struct RollbackConfigArgs {
    /// Maximum number of tasks rolled back at once (0 to roll back all at once) [default: 1].
    #[arg(long = "rollback-parallelism", id = "rollback-parallelism", value_name = "N", allow_negative_numbers = true,
          value_parser = parse_non_negative)]
    pub parallelism: Option<u64>,

    /// Delay between task rollbacks, per rolling-back task (ns|us|ms|s|m|h) [default: 0s].
    #[arg(long = "rollback-delay", id = "rollback-delay", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = parse_duration)]
    pub delay: Option<i64>,

    /// Action on rollback failure [default: pause].
    #[arg(
        long = "rollback-failure-action",
        id = "rollback-failure-action",
        value_name = "ACTION",
        value_enum
    )]
    pub failure_action: Option<RollbackFailureAction>,

    /// Duration after each task rollback to monitor for failure (ns|us|ms|s|m|h)
    /// [default: 5s].
    #[arg(long = "rollback-monitor", id = "rollback-monitor", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = parse_duration)]
    pub monitor: Option<i64>,

    /// Failure rate to tolerate during a rollback, 0 to 1 [default: 0].
    #[arg(long = "rollback-max-failure-ratio", id = "rollback-max-failure-ratio", value_name = "RATIO", allow_hyphen_values = true,
          value_parser = parse_ratio)]
    pub max_failure_ratio: Option<f32>,

    /// Rollback order [default: stop-first].
    #[arg(
        long = "rollback-order",
        id = "rollback-order",
        value_name = "ORDER",
        value_enum
    )]
    pub order: Option<UpdateOrder>,
}

impl UpdateConfigArgs {
    /// True when no `--update-*` flag is given.
    pub fn is_empty(&self) -> bool {
        self.parallelism.is_none()
            && self.delay.is_none()
            && self.failure_action.is_none()
            && self.monitor.is_none()
            && self.max_failure_ratio.is_none()
            && self.order.is_none()
    }
}

impl RollbackConfigArgs {
    /// True when no `--rollback-*` flag is given.
    pub fn is_empty(&self) -> bool {
        self.parallelism.is_none()
            && self.delay.is_none()
            && self.failure_action.is_none()
            && self.monitor.is_none()
            && self.max_failure_ratio.is_none()
            && self.order.is_none()
    }
}

/// Parses `--health-retries`: a whole number, 0 or more (0 = the image's, else 3).
pub fn parse_retries(s: &str) -> Result<i32, String> {
    let n = parse_non_negative(s)?;
    i32::try_from(n).map_err(|_| format!("{s:?} is too large"))
}

/// Parses a failure ratio: a number from 0 to 1 (0.2 = one failure in five tolerated).
pub fn parse_ratio(s: &str) -> Result<f32, String> {
    let t = s.trim();
    let r: f32 = t
        .parse()
        .map_err(|_| format!("invalid ratio {t:?}: expected a number from 0 to 1"))?;
    if !(0.0..=1.0).contains(&r) {
        return Err(format!(
            "{t} is outside 0..1: the ratio of failed tasks to tolerate"
        ));
    }
    Ok(r)
}
