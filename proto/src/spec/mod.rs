//! Validation of what users ask for: every error names the field, says why, and what to do.
//!
//! By topic: `placement`, `confinement`, `logs`, `mounts`, `network` and `ports`; their public items are
//! re-exported here, so `shoal_proto::spec::*` names them all. This file holds the error type,
//! names, labels, environment and the whole-service check.

mod confinement;
pub mod hosts;
mod logs;
mod mounts;
mod network;
mod placement;
mod ports;

use prost::Message as _;

use crate::limits::{
    MAX_ENV_ENTRIES, MAX_ENV_ENTRY_BYTES, MAX_LABELS, MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES,
    MAX_REPLICAS, MAX_SPEC_BYTES,
};
use crate::v1::{Placement, ResourceRequirements, ServiceMode, ServiceSpec};

pub use confinement::{validate_device_permissions, SECCOMP_MODES};
pub use logs::{
    log_rotation, parse_log_max_file, parse_log_size, LogRotation, DEFAULT_LOG_MAX_FILE,
    DEFAULT_LOG_MAX_SIZE, LOG_DRIVER, LOG_OPTIONS,
};
pub use mounts::{
    config_target, is_volume_name, secret_target, validate_data, validate_data_name,
    validate_mount, BIND_PROPAGATIONS, LOCAL_VOLUME_DRIVER, MAX_DATA_NAME_CHARS, SECRETS_DIR,
};
pub use network::{
    validate_network, validate_network_name, validate_service_networks, Ipv4Cidr, NETWORK_DRIVERS,
};
pub use placement::{parse_placement_pref, Constraint, ConstraintOp};
pub use ports::{endpoint_mode, port_protocol, port_publish_mode};

use confinement::validate_confinement;
use network::validate_attachments;
use ports::validate_endpoint;

/// A spec field that is not acceptable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct SpecError {
    /// The field as the user knows it ("--replicas", "name", "--constraint").
    pub field: String,
    /// Why it is refused and what to do.
    pub reason: String,
}

fn err(field: &str, reason: impl Into<String>) -> SpecError {
    SpecError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Checks a service name the way docker does: 1-63 characters of letters, digits, `-` and `_`,
/// starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    check_object_name(name, "--name", "a service needs a name (--name NAME)")
}

/// The naming rule of services and networks (so `SERVICE.NETWORK` stays an unambiguous DNS
/// name); errors are reported against `field`, `missing` when the name is empty.
fn check_object_name(name: &str, field: &str, missing: &str) -> Result<(), SpecError> {
    if name.is_empty() {
        return Err(err(field, missing));
    }
    if name.len() > 63 {
        return Err(err(field, "must be at most 63 characters"));
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !ok_chars || !ok_first {
        return Err(err(
            field,
            format!("{name:?} is not valid: use letters, digits, '-' and '_', starting with a letter or digit"),
        ));
    }
    Ok(())
}

/// At most this many characters of an over-long string go into an error message.
const PREVIEW_CHARS: usize = 24;

/// The start of `s` for an error message: a refused 100 KiB value is not echoed back whole.
fn preview(s: &str) -> String {
    match s.char_indices().nth(PREVIEW_CHARS) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

/// Checks a replica count against [`MAX_REPLICAS`]; the reason names the limit.
pub fn check_replicas(replicas: u64) -> Result<(), String> {
    if replicas > MAX_REPLICAS {
        return Err(format!(
            "{replicas} is more than the limit of {MAX_REPLICAS} replicas per service"
        ));
    }
    Ok(())
}

/// Checks one label: a key of 1 to [`MAX_LABEL_KEY_BYTES`] bytes without whitespace or `=`, a
/// value of at most [`MAX_LABEL_VALUE_BYTES`] bytes.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    check_label_key(key)?;
    if value.len() > MAX_LABEL_VALUE_BYTES {
        return Err(format!(
            "the value of label {} is {} bytes, more than the limit of {MAX_LABEL_VALUE_BYTES} bytes",
            preview(key),
            value.len()
        ));
    }
    Ok(())
}

/// Checks a label key: 1 to [`MAX_LABEL_KEY_BYTES`] bytes, no whitespace, no `=`.
pub fn check_label_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a label key must not be empty (e.g. zone=a)".into());
    }
    if key.len() > MAX_LABEL_KEY_BYTES {
        return Err(format!(
            "label key {} is {} bytes, more than the limit of {MAX_LABEL_KEY_BYTES} bytes",
            preview(key),
            key.len()
        ));
    }
    if key.contains(char::is_whitespace) || key.contains('=') {
        return Err(format!("invalid label key {key:?}: no whitespace or '='"));
    }
    Ok(())
}

/// Checks the labels of one object (a service, a network, a node): each label, and at most
/// [`MAX_LABELS`] of them; errors are reported against `field`.
pub fn validate_labels<'a>(
    field: &str,
    labels: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Result<(), SpecError> {
    check_label_count(field, labels.len())?;
    let mut labels: Vec<(&String, &String)> = labels.collect();
    // Report the same label first whatever the map's order.
    labels.sort();
    for (k, v) in labels {
        check_label(k, v).map_err(|r| err(field, r))?;
    }
    Ok(())
}

/// Refuses more than [`MAX_LABELS`] labels on one object.
pub fn check_label_count(field: &str, count: usize) -> Result<(), SpecError> {
    if count > MAX_LABELS {
        return Err(err(
            field,
            format!("{count} labels are more than the limit of {MAX_LABELS} per object"),
        ));
    }
    Ok(())
}

/// Checks environment entries: at most [`MAX_ENV_ENTRIES`], each `KEY=VALUE` with a key and at
/// most [`MAX_ENV_ENTRY_BYTES`] bytes.
pub fn validate_env(env: &[String]) -> Result<(), SpecError> {
    if env.len() > MAX_ENV_ENTRIES {
        return Err(err(
            "--env",
            format!(
                "{} entries are more than the limit of {MAX_ENV_ENTRIES}",
                env.len()
            ),
        ));
    }
    for e in env {
        check_env_entry(e).map_err(|r| err("--env", r))?;
    }
    Ok(())
}

/// Checks one environment entry: `KEY=VALUE` with a non-empty key, at most
/// [`MAX_ENV_ENTRY_BYTES`] bytes.
pub fn check_env_entry(e: &str) -> Result<(), String> {
    if e.len() > MAX_ENV_ENTRY_BYTES {
        return Err(format!(
            "{} is {} bytes, more than the limit of {MAX_ENV_ENTRY_BYTES} bytes per entry",
            preview(e),
            e.len()
        ));
    }
    match e.split_once('=') {
        Some((k, _)) if !k.is_empty() => Ok(()),
        _ => Err(format!("{e:?} is not KEY=VALUE")),
    }
}

/// Refuses a spec whose encoding is larger than [`MAX_SPEC_BYTES`]; `what` names it.
fn check_spec_size(what: &str, encoded: usize) -> Result<(), SpecError> {
    if encoded > MAX_SPEC_BYTES {
        return Err(err(
            "spec",
            format!(
                "the {what} spec is {encoded} bytes encoded, more than the limit of {MAX_SPEC_BYTES} bytes ({} KiB)",
                MAX_SPEC_BYTES / 1024
            ),
        ));
    }
    Ok(())
}

/// Validates a whole service spec before anything is written.
pub fn validate_service(spec: &ServiceSpec) -> Result<(), SpecError> {
    // The size first: every other check walks the spec.
    check_spec_size("service", spec.encoded_len())?;
    validate_name(&spec.name)?;
    validate_labels("--label", spec.labels.iter())?;
    let task = spec
        .task
        .as_ref()
        .ok_or_else(|| err("task", "missing task template"))?;
    let container = task
        .container
        .as_ref()
        .ok_or_else(|| err("image", "missing container spec"))?;
    validate_image(&container.image)?;
    validate_env(&container.env)?;
    validate_labels("--container-label", container.labels.iter())?;
    hosts::validate_hosts(&container.hosts)?;
    validate_confinement(container)?;
    mounts::validate_files(spec, container)?;
    log_rotation(task.log_driver.as_ref())?;
    if spec.mode == ServiceMode::ModeGlobal as i32 && spec.replicas != 0 {
        return Err(err("--replicas", "cannot be used with --mode global"));
    }
    if ServiceMode::try_from(spec.mode).is_err() {
        return Err(err("--mode", "must be replicated or global"));
    }
    check_replicas(spec.replicas).map_err(|r| err("--replicas", r))?;
    if let Some(res) = &task.resources {
        validate_resources(res)?;
    }
    if container.stop_grace_period_ns < 0 {
        return Err(err("--stop-grace-period", "must not be negative"));
    }
    if let Some(r) = &task.restart {
        if r.delay_ns < 0 {
            return Err(err("--restart-delay", "must not be negative"));
        }
    }
    if let Some(p) = &task.placement {
        validate_placement(p)?;
    }
    validate_attachments(&task.networks)?;
    if let Some(ep) = &spec.endpoint {
        validate_endpoint(ep)?;
    }
    Ok(())
}

/// The image reference: given, without whitespace (the agent resolves it when pulling).
fn validate_image(image: &str) -> Result<(), SpecError> {
    if image.trim().is_empty() {
        return Err(err("image", "an image is required (e.g. busybox:latest)"));
    }
    if image.chars().any(char::is_whitespace) {
        return Err(err("image", format!("{image:?} contains whitespace")));
    }
    Ok(())
}

/// Limits and reservations: not negative, at least 4MiB of memory, reservations within limits.
fn validate_resources(res: &ResourceRequirements) -> Result<(), SpecError> {
    let lim = res.limits.unwrap_or_default();
    let rsv = res.reservations.unwrap_or_default();
    if lim.memory_bytes < 0 || rsv.memory_bytes < 0 || lim.nano_cpus < 0 || rsv.nano_cpus < 0 {
        return Err(err("resources", "must not be negative"));
    }
    if lim.memory_bytes > 0 && lim.memory_bytes < 4 * 1024 * 1024 {
        return Err(err("--limit-memory", "must be at least 4MiB"));
    }
    if lim.memory_bytes > 0 && rsv.memory_bytes > lim.memory_bytes {
        return Err(err("--reserve-memory", "must not exceed --limit-memory"));
    }
    if lim.nano_cpus > 0 && rsv.nano_cpus > lim.nano_cpus {
        return Err(err("--reserve-cpu", "must not exceed --limit-cpu"));
    }
    if res.pids_limit < 0 {
        return Err(err("--limit-pids", "must not be negative"));
    }
    Ok(())
}

/// Every placement constraint and preference parses.
fn validate_placement(p: &Placement) -> Result<(), SpecError> {
    for c in &p.constraints {
        Constraint::parse(c)?;
    }
    for pref in &p.preferences {
        parse_placement_pref(pref)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
