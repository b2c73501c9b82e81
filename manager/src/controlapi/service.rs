//! `service update` and `service rollback` as changes to a stored service: pure, so the
//! handler's read-modify-write and the tests share them.
//!
//! Versions: every change that outdates the tasks gets a fresh `spec_version`
//! ([`next_spec_version`]), a rollback included, and `previous_spec_version` keeps the version
//! the previous spec had. The updater replaces tasks whose spec differs from the service's
//! (swarm's deep-equal), so after a rollback the tasks not yet updated stay as they are.

use shoal_proto::v1::update_status::State;
use shoal_proto::v1::{Service, ServiceSpec, Task, UpdateConfig, UpdateStatus};
use tonic::Status;

use crate::orchestrator::needs_new_tasks;
use crate::orchestrator::update::next_spec_version;

/// The message of a refused stale update.
pub const OUT_OF_SEQUENCE: &str =
    "update out of sequence: the service changed since it was read; run the command again";

/// Checks the update and rollback configs as swarm does (`--update-*` / `--rollback-*`).
pub fn check_update_configs(spec: &ServiceSpec) -> Result<(), Status> {
    check_update_config("update", spec.update.as_ref())?;
    check_update_config("rollback", spec.rollback.as_ref())
}

fn check_update_config(which: &str, c: Option<&UpdateConfig>) -> Result<(), Status> {
    let Some(c) = c else { return Ok(()) };
    let bad = |what: &str, why: &str| Status::invalid_argument(format!("--{which}-{what} {why}"));
    if c.delay_ns < 0 {
        return Err(bad("delay", "cannot be negative"));
    }
    if c.monitor_ns < 0 {
        return Err(bad("monitor", "cannot be negative"));
    }
    if !(0.0..=1.0).contains(&c.max_failure_ratio) {
        return Err(bad(
            "max-failure-ratio",
            "cannot be less than 0 or bigger than 1",
        ));
    }
    Ok(())
}

/// Refuses a request made against a version of the service that is no longer the stored one
/// (`version` 0: no check).
pub fn check_version(service: &Service, version: u64) -> Result<(), Status> {
    let stored = service.meta.map_or(0, |m| m.version);
    if version != 0 && version != stored {
        return Err(Status::failed_precondition(OUT_OF_SEQUENCE));
    }
    Ok(())
}

/// A normal update: the spec becomes `spec`, the old one is kept as the previous spec, and the
/// update status is reset (a paused update moves again), as swarm does. Only a change that
/// outdates the tasks gets a new `spec_version`.
pub fn apply_update(service: &mut Service, spec: ServiceSpec, tasks: &[&Task], now_ns: i64) {
    let outdates = service
        .spec
        .as_ref()
        .is_none_or(|old| needs_new_tasks(old, &spec));
    let fresh = next_spec_version(service, tasks.iter().copied());
    service.previous_spec = service.spec.take().map(Box::new);
    service.previous_spec_version = service.spec_version;
    if outdates {
        service.spec_version = fresh;
    }
    service.spec = Some(spec);
    service.update_status = None;
    if let Some(m) = service.meta.as_mut() {
        m.updated_at = now_ns;
    }
}

/// `service rollback`: swaps the spec and the previous spec (so rolling back twice returns to
/// the newer one) and starts a rollback with the rollback config.
pub fn apply_rollback(service: &mut Service, tasks: &[&Task], now_ns: i64) -> Result<(), Status> {
    let Some(previous) = service.previous_spec.take() else {
        let name = service.spec.as_ref().map_or("", |s| s.name.as_str());
        return Err(Status::failed_precondition(format!(
            "service {name} does not have a previous spec"
        )));
    };
    let outdates = service
        .spec
        .as_ref()
        .is_none_or(|cur| needs_new_tasks(cur, &previous));
    let fresh = next_spec_version(service, tasks.iter().copied());
    service.previous_spec = service.spec.take().map(Box::new);
    service.spec = Some(*previous);
    let current_version = service.spec_version;
    if outdates {
        service.spec_version = fresh;
    }
    service.previous_spec_version = current_version;
    service.update_status = Some(UpdateStatus {
        state: State::RollbackStarted as i32,
        started_at: now_ns,
        completed_at: 0,
        message: "manually requested rollback".into(),
    });
    if let Some(m) = service.meta.as_mut() {
        m.updated_at = now_ns;
    }
    Ok(())
}
