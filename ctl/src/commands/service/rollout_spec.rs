//! Healthcheck and update/rollback flags made into the spec, on create and on update, the way
//! docker's CLI does it (`opts.go` `toHealthConfig`, `update.go` `updateHealthcheck`).

use anyhow::{anyhow, Result};
use shoal_proto::v1::{update_config, HealthConfig, UpdateConfig};

use crate::cli::{HealthArgs, ReplaceFlags, UpdateFailureAction, UpdateOrder};

/// The test that turns every healthcheck off, the image's included.
const NONE: &str = "NONE";

/// The healthcheck of `service create`: `None` without health flags (the image's applies),
/// `["NONE"]` for `--no-healthcheck`, else the fields given (the others inherit the image's).
pub fn health_on_create(h: &HealthArgs) -> Result<Option<HealthConfig>> {
    h.check().map_err(|e| anyhow!(e))?;
    if h.no_healthcheck {
        return Ok(Some(HealthConfig {
            test: vec![NONE.into()],
            ..Default::default()
        }));
    }
    if !h.any_health_flag() {
        return Ok(None);
    }
    let mut hc = HealthConfig::default();
    set_health_fields(&mut hc, h);
    Ok(Some(hc))
}

/// `service update`'s health flags applied to the current healthcheck: `--no-healthcheck`
/// replaces it with `["NONE"]`; any other health flag first lifts a `NONE`, and
/// `--health-cmd ""` clears the test so the image's is used again.
pub fn update_health(current: &mut Option<HealthConfig>, h: &HealthArgs) -> Result<()> {
    if h.is_empty() {
        return Ok(());
    }
    h.check().map_err(|e| anyhow!(e))?;
    if h.no_healthcheck {
        *current = Some(HealthConfig {
            test: vec![NONE.into()],
            ..Default::default()
        });
        return Ok(());
    }
    let hc = current.get_or_insert_with(Default::default);
    if hc.test.first().is_some_and(|t| t == NONE) {
        hc.test.clear();
    }
    set_health_fields(hc, h);
    Ok(())
}

/// The fields given by `--health-*`; `--health-cmd ""` means "no test of our own".
fn set_health_fields(hc: &mut HealthConfig, h: &HealthArgs) {
    if let Some(cmd) = &h.cmd {
        hc.test = if cmd.is_empty() {
            Vec::new()
        } else {
            vec!["CMD-SHELL".into(), cmd.clone()]
        };
    }
    if let Some(v) = h.interval {
        hc.interval_ns = v;
    }
    if let Some(v) = h.timeout {
        hc.timeout_ns = v;
    }
    if let Some(v) = h.start_period {
        hc.start_period_ns = v;
    }
    if let Some(v) = h.start_interval {
        hc.start_interval_ns = v;
    }
    if let Some(v) = h.retries {
        hc.retries = v;
    }
}

/// Swarm's defaults for a config nobody set: one task at a time, pause on failure, 5 s monitor
/// (0 on the wire), stop-first, no delay, ratio 0.
pub fn default_update_config() -> UpdateConfig {
    UpdateConfig {
        parallelism: 1,
        ..Default::default()
    }
}

fn order(o: UpdateOrder) -> update_config::Order {
    match o {
        UpdateOrder::StopFirst => update_config::Order::StopFirst,
        UpdateOrder::StartFirst => update_config::Order::StartFirst,
    }
}

fn failure_action(a: UpdateFailureAction) -> update_config::FailureAction {
    match a {
        UpdateFailureAction::Pause => update_config::FailureAction::Pause,
        UpdateFailureAction::Continue => update_config::FailureAction::Continue,
        UpdateFailureAction::Rollback => update_config::FailureAction::Rollback,
    }
}

/// `--update-*` or `--rollback-*` applied to a service's update or rollback config (created
/// with swarm's defaults when the service has none and a flag is given).
pub fn merge_replace_config(current: &mut Option<UpdateConfig>, f: ReplaceFlags) {
    if f.is_empty() {
        return;
    }
    let c = current.get_or_insert_with(default_update_config);
    if let Some(v) = f.parallelism {
        c.parallelism = v;
    }
    if let Some(v) = f.delay {
        c.delay_ns = v;
    }
    if let Some(v) = f.failure_action {
        c.failure_action = failure_action(v) as i32;
    }
    if let Some(v) = f.monitor {
        c.monitor_ns = v;
    }
    if let Some(v) = f.max_failure_ratio {
        c.max_failure_ratio = v;
    }
    if let Some(v) = f.order {
        c.order = order(v) as i32;
    }
}
