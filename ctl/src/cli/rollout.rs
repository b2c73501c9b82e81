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

/// The six flags `--update-*` and `--rollback-*` share, taken from either group.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReplaceFlags {
    /// `--*-parallelism`.
    pub parallelism: Option<u64>,
    /// `--*-delay`, in nanoseconds.
    pub delay: Option<i64>,
    /// `--*-failure-action` (a rollback's is never `Rollback`).
    pub failure_action: Option<UpdateFailureAction>,
    /// `--*-monitor`, in nanoseconds.
    pub monitor: Option<i64>,
    /// `--*-max-failure-ratio`.
    pub max_failure_ratio: Option<f32>,
    /// `--*-order`.
    pub order: Option<UpdateOrder>,
}

impl ReplaceFlags {
    /// True when none of the six flags is given.
    pub fn is_empty(&self) -> bool {
        self.parallelism.is_none()
            && self.delay.is_none()
            && self.failure_action.is_none()
            && self.monitor.is_none()
            && self.max_failure_ratio.is_none()
            && self.order.is_none()
    }
}

impl From<RollbackFailureAction> for UpdateFailureAction {
    fn from(a: RollbackFailureAction) -> Self {
        match a {
            RollbackFailureAction::Pause => UpdateFailureAction::Pause,
            RollbackFailureAction::Continue => UpdateFailureAction::Continue,
        }
    }
}

/// One clap group of the six flags under a prefix (`update`, `rollback`); only the help texts
/// and the failure actions allowed differ between the two.
macro_rules! replace_config_args {
    (
        $(#[$meta:meta])*
        $name:ident, $prefix:tt, $action:ty,
        parallelism: $parallelism:tt,
        delay: $delay:tt,
        failure_action: $failure_action:tt,
        monitor: $monitor:tt,
        max_failure_ratio: $ratio:tt,
        order: $order:tt $(,)?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, Args)]
        pub struct $name {
            #[doc = $parallelism]
            #[arg(long = concat!($prefix, "-parallelism"), id = concat!($prefix, "-parallelism"),
                  value_name = "N", allow_negative_numbers = true, value_parser = parse_non_negative)]
            pub parallelism: Option<u64>,

            #[doc = $delay]
            #[arg(long = concat!($prefix, "-delay"), id = concat!($prefix, "-delay"),
                  value_name = "DURATION", allow_hyphen_values = true, value_parser = parse_duration)]
            pub delay: Option<i64>,

            #[doc = $failure_action]
            #[arg(long = concat!($prefix, "-failure-action"), id = concat!($prefix, "-failure-action"),
                  value_name = "ACTION", value_enum)]
            pub failure_action: Option<$action>,

            #[doc = $monitor]
            #[arg(long = concat!($prefix, "-monitor"), id = concat!($prefix, "-monitor"),
                  value_name = "DURATION", allow_hyphen_values = true, value_parser = parse_duration)]
            pub monitor: Option<i64>,

            #[doc = $ratio]
            #[arg(long = concat!($prefix, "-max-failure-ratio"), id = concat!($prefix, "-max-failure-ratio"),
                  value_name = "RATIO", allow_hyphen_values = true, value_parser = parse_ratio)]
            pub max_failure_ratio: Option<f32>,

            #[doc = $order]
            #[arg(long = concat!($prefix, "-order"), id = concat!($prefix, "-order"),
                  value_name = "ORDER", value_enum)]
            pub order: Option<UpdateOrder>,
        }

        impl $name {
            /// The flags given, whichever group they came from.
            pub fn flags(&self) -> ReplaceFlags {
                ReplaceFlags {
                    parallelism: self.parallelism,
                    delay: self.delay,
                    failure_action: self.failure_action.map(Into::into),
                    monitor: self.monitor,
                    max_failure_ratio: self.max_failure_ratio,
                    order: self.order,
                }
            }

            /// True when no flag of this group is given.
            pub fn is_empty(&self) -> bool {
                self.flags().is_empty()
            }
        }
    };
}

replace_config_args! {
    /// `--update-*`: how `service update` replaces tasks.
    UpdateConfigArgs, "update", UpdateFailureAction,
    parallelism: "Maximum number of tasks updated at once (0 to update all at once) [default: 1].",
    delay: "Delay between updates, per updating task (ns|us|ms|s|m|h) [default: 0s].",
    failure_action: "Action on update failure [default: pause].",
    monitor: "Duration after each task update to monitor for failure (ns|us|ms|s|m|h) [default: 5s].",
    max_failure_ratio: "Failure rate to tolerate during an update, 0 to 1 [default: 0].",
    order: "Update order [default: stop-first].",
}

replace_config_args! {
    /// `--rollback-*`: how a rollback replaces tasks.
    RollbackConfigArgs, "rollback", RollbackFailureAction,
    parallelism: "Maximum number of tasks rolled back at once (0 to roll back all at once) [default: 1].",
    delay: "Delay between task rollbacks, per rolling-back task (ns|us|ms|s|m|h) [default: 0s].",
    failure_action: "Action on rollback failure [default: pause].",
    monitor: "Duration after each task rollback to monitor for failure (ns|us|ms|s|m|h) [default: 5s].",
    max_failure_ratio: "Failure rate to tolerate during a rollback, 0 to 1 [default: 0].",
    order: "Rollback order [default: stop-first].",
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command, CreateArgs, ServiceCommand, UpdateArgs};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("shoalctl").chain(args.iter().copied()))
    }

    fn create(args: &[&str]) -> Result<CreateArgs, clap::Error> {
        let mut all = vec!["service", "create", "--name", "x"];
        all.extend_from_slice(args);
        all.push("busybox");
        match parse(&all)?.command {
            Command::Service(ServiceCommand::Create(a)) => Ok(*a),
            _ => panic!("not create"),
        }
    }

    fn update(args: &[&str]) -> Result<UpdateArgs, clap::Error> {
        let mut all = vec!["service", "update"];
        all.extend_from_slice(args);
        all.push("web");
        match parse(&all)?.command {
            Command::Service(ServiceCommand::Update(a)) => Ok(*a),
            _ => panic!("not update"),
        }
    }

    #[test]
    fn health_flags() {
        let a = create(&[
            "--health-cmd",
            "curl -f http://localhost/ || exit 1",
            "--health-interval",
            "2s",
            "--health-timeout",
            "1s",
            "--health-retries",
            "4",
            "--health-start-period",
            "10s",
            "--health-start-interval",
            "500ms",
        ])
        .expect("parses");
        let h = &a.shared.health;
        assert_eq!(
            h.cmd.as_deref(),
            Some("curl -f http://localhost/ || exit 1")
        );
        assert_eq!(h.interval, Some(2_000_000_000));
        assert_eq!(h.timeout, Some(1_000_000_000));
        assert_eq!(h.retries, Some(4));
        assert_eq!(h.start_period, Some(10_000_000_000));
        assert_eq!(h.start_interval, Some(500_000_000));
        assert!(!h.no_healthcheck && h.check().is_ok());

        let a = create(&["--no-healthcheck"]).expect("parses");
        assert!(a.shared.health.no_healthcheck && a.shared.health.check().is_ok());
        let a = create(&["--no-healthcheck", "--health-retries", "2"]).expect("parses");
        assert_eq!(
            a.shared.health.check(),
            Err("--no-healthcheck conflicts with --health-* options".into())
        );
        // `--health-cmd ""` is an update's way back to the image's test.
        let a = update(&["--health-cmd", ""]).expect("parses");
        assert_eq!(a.shared.health.cmd.as_deref(), Some(""));
        assert!(!a.changes_nothing());
    }

    #[test]
    fn bad_values_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--health-interval", "-1s"], "--health-interval"),
            (&["--health-retries", "-1"], "--health-retries"),
            (&["--update-delay", "-5s"], "--update-delay"),
            (&["--update-monitor", "-1s"], "--update-monitor"),
            (&["--rollback-delay", "-1s"], "--rollback-delay"),
            (&["--update-parallelism", "-1"], "--update-parallelism"),
            (
                &["--update-max-failure-ratio", "1.5"],
                "--update-max-failure-ratio",
            ),
            (
                &["--rollback-max-failure-ratio", "-0.1"],
                "--rollback-max-failure-ratio",
            ),
            (
                &["--update-max-failure-ratio", "half"],
                "--update-max-failure-ratio",
            ),
            (
                &["--update-failure-action", "explode"],
                "--update-failure-action",
            ),
            (
                &["--rollback-failure-action", "rollback"],
                "--rollback-failure-action",
            ),
            (&["--update-order", "random"], "--update-order"),
            (&["--rollback-order", "last-first"], "--rollback-order"),
        ];
        for (args, flag) in cases {
            for e in [create(args).err(), update(args).err()] {
                let text = e.unwrap_or_else(|| panic!("{args:?} accepted")).to_string();
                assert!(text.contains(flag), "{args:?}: {text}");
            }
        }
        let e = create(&["--update-max-failure-ratio", "1.5"])
            .expect_err("refused")
            .to_string();
        assert!(e.contains("outside 0..1"), "{e}");
        let e = create(&["--update-delay", "-5s"])
            .expect_err("refused")
            .to_string();
        assert!(e.contains("must not be negative"), "{e}");
    }

    #[test]
    fn update_and_rollback_flags() {
        let a = update(&[
            "--update-parallelism",
            "2",
            "--update-delay",
            "10s",
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "30s",
            "--update-max-failure-ratio",
            "0.25",
            "--update-order",
            "start-first",
            "--rollback-parallelism",
            "0",
            "--rollback-delay",
            "1s",
            "--rollback-failure-action",
            "continue",
            "--rollback-monitor",
            "2s",
            "--rollback-max-failure-ratio",
            "1",
            "--rollback-order",
            "stop-first",
        ])
        .expect("parses");
        let u = &a.shared.update_config;
        assert_eq!(u.parallelism, Some(2));
        assert_eq!(u.delay, Some(10_000_000_000));
        assert_eq!(u.failure_action, Some(UpdateFailureAction::Rollback));
        assert_eq!(u.monitor, Some(30_000_000_000));
        assert_eq!(u.max_failure_ratio, Some(0.25));
        assert_eq!(u.order, Some(UpdateOrder::StartFirst));
        let r = &a.shared.rollback_config;
        assert_eq!(r.parallelism, Some(0));
        assert_eq!(r.delay, Some(1_000_000_000));
        assert_eq!(r.failure_action, Some(RollbackFailureAction::Continue));
        assert_eq!(r.monitor, Some(2_000_000_000));
        assert_eq!(r.max_failure_ratio, Some(1.0));
        assert_eq!(r.order, Some(UpdateOrder::StopFirst));
        assert!(a.check().is_ok());
        // Each flag alone is a change.
        for flag in [
            ["--update-parallelism", "0"],
            ["--update-order", "stop-first"],
            ["--rollback-monitor", "0s"],
            ["--health-retries", "1"],
        ] {
            assert!(
                !update(&flag).expect("parses").changes_nothing(),
                "{flag:?}"
            );
        }
        assert!(!update(&["--no-healthcheck"])
            .expect("parses")
            .changes_nothing());
    }

    #[test]
    fn force_rollback_and_the_combination_rule() {
        let a = update(&["--force"]).expect("parses");
        assert!(a.force && a.changes_nothing() && a.check().is_ok());
        let a = update(&["--rollback"]).expect("parses");
        assert!(a.rollback && a.check().is_ok());
        let a = update(&["--rollback", "-d", "-q", "--timeout", "5m"]).expect("parses");
        assert!(a.detach && a.quiet && a.check().is_ok());
        let refused = "other flags may not be combined with --rollback";
        for extra in [
            &["--image", "busybox:2"][..],
            &["--force"],
            &["--update-parallelism", "2"],
            &["--health-cmd", "true"],
            &["--replicas", "3"],
        ] {
            let mut args = vec!["--rollback"];
            args.extend_from_slice(extra);
            assert_eq!(
                update(&args).expect("parses").check(),
                Err(refused.into()),
                "{extra:?}"
            );
        }
        let a = update(&["--no-healthcheck", "--health-cmd", "true"]).expect("parses");
        assert_eq!(
            a.check(),
            Err("--no-healthcheck conflicts with --health-* options".into())
        );
        let a = update(&["-d"]).expect("parses");
        assert!(a.check().is_err_and(|e| e.starts_with("nothing to update")));
    }

    #[test]
    fn rollback_command() {
        let cli = parse(&["service", "rollback", "-d", "web"]).expect("parses");
        let Command::Service(ServiceCommand::Rollback(a)) = cli.command else {
            panic!("not rollback")
        };
        assert!(a.detach && !a.quiet);
        assert_eq!(a.service, "web");
        assert_eq!(a.timeout, std::time::Duration::from_secs(120));
        let cli = parse(&["service", "rollback", "--quiet", "web"]).expect("parses");
        let Command::Service(ServiceCommand::Rollback(a)) = cli.command else {
            panic!("not rollback")
        };
        assert!(a.quiet && !a.detach);
        assert!(parse(&["service", "rollback", "--image", "x", "web"]).is_err());
        assert!(parse(&["service", "rollback"]).is_err());
    }
}
