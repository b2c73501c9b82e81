//! Validation of what users ask for: every error names the field, says why, and what to do.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use prost::Message as _;

use crate::limits::{
    MAX_ENV_ENTRIES, MAX_ENV_ENTRY_BYTES, MAX_LABELS, MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES,
    MAX_NETWORK_OPTIONS, MAX_REPLICAS, MAX_SPEC_BYTES,
};
use crate::security::{signal_number, validate_capabilities, validate_sysctl, validate_ulimit};
use crate::v1::{
    ContainerSpec, DeviceMapping, Driver, EndpointSpec, NetworkAttachmentConfig, NetworkSpec,
    ServiceMode, ServiceSpec,
};

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

/// A comparison in a placement constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// One parsed placement constraint, e.g. `node.labels.zone==east`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// Left side: `node.id`, `node.hostname`, `node.role`, `node.labels.K`, `engine.labels.K`.
    pub key: String,
    /// The comparison.
    pub op: ConstraintOp,
    /// Right side, compared case-sensitively (except `node.role` and `node.hostname`).
    pub value: String,
}

impl Constraint {
    /// Parses `KEY==VALUE` or `KEY!=VALUE`.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        let (key, op, value) = if let Some((k, v)) = s.split_once("==") {
            (k, ConstraintOp::Eq, v)
        } else if let Some((k, v)) = s.split_once("!=") {
            (k, ConstraintOp::Ne, v)
        } else {
            return Err(err(
                "--constraint",
                format!("{s:?} has no == or != (e.g. node.hostname==host1)"),
            ));
        };
        let key = key.trim();
        let value = value.trim();
        let known = matches!(key, "node.id" | "node.hostname" | "node.role")
            || key
                .strip_prefix("node.labels.")
                .is_some_and(|k| !k.is_empty())
            || key
                .strip_prefix("engine.labels.")
                .is_some_and(|k| !k.is_empty());
        if !known {
            return Err(err(
                "--constraint",
                format!(
                    "unknown key {key:?} (use node.id, node.hostname, node.role, node.labels.KEY or engine.labels.KEY)"
                ),
            ));
        }
        if value.is_empty() {
            return Err(err("--constraint", format!("{s:?} has an empty value")));
        }
        if key == "node.role" && !matches!(value, "manager" | "worker") {
            return Err(err(
                "--constraint",
                format!("node.role must be manager or worker, not {value:?}"),
            ));
        }
        Ok(Constraint {
            key: key.to_string(),
            op,
            value: value.to_string(),
        })
    }
}

/// Parses a placement preference `spread=KEY` into its key (`node.labels.K`, `engine.labels.K`,
/// `node.id`, `node.hostname` or `node.role`).
pub fn parse_placement_pref(pref: &str) -> Result<String, SpecError> {
    let key = pref
        .trim()
        .strip_prefix("spread=")
        .ok_or_else(|| {
            err(
                "--placement-pref",
                format!("{pref:?} is not spread=KEY (e.g. spread=node.labels.zone)"),
            )
        })?
        .trim();
    let known = ["node.labels.", "engine.labels."]
        .iter()
        .any(|prefix| key.strip_prefix(prefix).is_some_and(|k| !k.is_empty()))
        || matches!(key, "node.id" | "node.hostname" | "node.role");
    if !known {
        return Err(err(
            "--placement-pref",
            format!("unknown key {key:?} (use node.labels.KEY, engine.labels.KEY, node.id, node.hostname or node.role)"),
        ));
    }
    Ok(key.to_string())
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
    if container.image.trim().is_empty() {
        return Err(err("image", "an image is required (e.g. busybox:latest)"));
    }
    if container.image.chars().any(char::is_whitespace) {
        return Err(err(
            "image",
            format!("{:?} contains whitespace", container.image),
        ));
    }
    validate_env(&container.env)?;
    validate_confinement(container)?;
    log_rotation(task.log_driver.as_ref())?;
    if spec.mode == ServiceMode::ModeGlobal as i32 && spec.replicas != 0 {
        return Err(err("--replicas", "cannot be used with --mode global"));
    }
    if ServiceMode::try_from(spec.mode).is_err() {
        return Err(err("--mode", "must be replicated or global"));
    }
    check_replicas(spec.replicas).map_err(|r| err("--replicas", r))?;
    if let Some(res) = &task.resources {
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
        for c in &p.constraints {
            Constraint::parse(c)?;
        }
        for pref in &p.preferences {
            parse_placement_pref(pref)?;
        }
    }
    validate_attachments(&task.networks)?;
    if let Some(ep) = &spec.endpoint {
        validate_endpoint(ep)?;
    }
    Ok(())
}

/// The seccomp modes of `ContainerSpec.privileges.seccomp.mode` ("" is docker's default profile).
pub const SECCOMP_MODES: [&str; 4] = ["", "default", "unconfined", "custom"];

/// The only log driver Shoal's agent writes (`--log-driver`).
pub const LOG_DRIVER: &str = "json-file";

/// The options the json-file log driver takes (`--log-opt KEY=VALUE`).
pub const LOG_OPTIONS: [&str; 2] = ["max-size", "max-file"];

/// A container log file is rotated past this size unless `--log-opt max-size` says otherwise.
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10_000_000;

/// How many log files (the live one included) a container keeps unless `--log-opt max-file`
/// says otherwise.
pub const DEFAULT_LOG_MAX_FILE: u32 = 3;

/// Parses a log size as docker's json-file driver does (`units.FromHumanSize`): a number, optionally
/// with a fraction, then an optional unit b, k, m or g (case-insensitive, an optional trailing
/// "b" as in "10mb"); decimal multiples, so "10m" is 10,000,000 bytes. Zero is refused.
pub fn parse_log_size(s: &str) -> Result<u64, String> {
    let bad =
        || format!("{s:?} is not a size (a number with an optional unit b, k, m or g, e.g. 10m)");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(bad());
    }
    let value: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        _ => return Err(bad()),
    };
    let bytes = (value * mult).round();
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    if bytes < 1.0 {
        return Err(format!("{s:?}: max-size must be a positive size"));
    }
    Ok(bytes as u64)
}

/// Parses `--log-opt max-file`: how many files a container's log is kept in, 1 or more.
pub fn parse_log_max_file(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err("max-file must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("max-file {s:?} is not a whole number (1 or more)")),
    }
}

/// How a container's log file rotates: a new file past `max_size` bytes, `max_file` files kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRotation {
    /// Bytes after which the log file is rotated.
    pub max_size: u64,
    /// Number of files kept, the one being written included.
    pub max_file: u32,
}

/// The log rotation a task's log driver asks for, with docker's defaults filled in (json-file,
/// 10m × 3); refuses other drivers and unknown options, naming the flag.
pub fn log_rotation(driver: Option<&Driver>) -> Result<LogRotation, SpecError> {
    let mut rotation = LogRotation {
        max_size: DEFAULT_LOG_MAX_SIZE,
        max_file: DEFAULT_LOG_MAX_FILE,
    };
    let Some(driver) = driver else {
        return Ok(rotation);
    };
    if !driver.name.is_empty() && driver.name != LOG_DRIVER {
        return Err(err(
            "--log-driver",
            format!(
                "unsupported log driver {:?} (only {LOG_DRIVER} is supported)",
                driver.name
            ),
        ));
    }
    let mut keys: Vec<&String> = driver.options.keys().collect();
    keys.sort();
    for key in keys {
        let value = &driver.options[key];
        match key.as_str() {
            "max-size" => {
                rotation.max_size = parse_log_size(value).map_err(|r| err("--log-opt", r))?
            }
            "max-file" => {
                rotation.max_file = parse_log_max_file(value).map_err(|r| err("--log-opt", r))?
            }
            other => {
                return Err(err(
                    "--log-opt",
                    format!(
                        "unknown option {other:?} of the {LOG_DRIVER} log driver (use {})",
                        LOG_OPTIONS.join(" or ")
                    ),
                ))
            }
        }
    }
    Ok(rotation)
}

/// Checks a device's cgroup permissions: a non-empty combination of r, w and m, each once.
pub fn validate_device_permissions(perms: &str) -> Result<(), String> {
    let mut seen = String::new();
    for c in perms.chars() {
        if !matches!(c, 'r' | 'w' | 'm') || seen.contains(c) {
            return Err(format!(
                "permissions {perms:?} are not a combination of r, w and m (e.g. rwm, r)"
            ));
        }
        seen.push(c);
    }
    if seen.is_empty() {
        return Err("permissions must not be empty (a combination of r, w and m)".into());
    }
    Ok(())
}

/// An absolute path without `.`/`..` components, so it cannot leave the root it is joined to.
fn is_plain_absolute(path: &str) -> bool {
    path.starts_with('/')
        && path
            .split('/')
            .all(|part| part != ".." && part != "." && !part.contains('\0'))
}

fn validate_device(d: &DeviceMapping) -> Result<(), SpecError> {
    if !is_plain_absolute(&d.path_on_host) || d.path_on_host == "/" {
        return Err(err(
            "--device",
            format!(
                "host path {:?} must be an absolute path to a device (e.g. /dev/fuse)",
                d.path_on_host
            ),
        ));
    }
    if !d.path_in_container.is_empty()
        && (!is_plain_absolute(&d.path_in_container) || d.path_in_container == "/")
    {
        return Err(err(
            "--device",
            format!(
                "container path {:?} must be an absolute path without . or .. (e.g. /dev/fuse)",
                d.path_in_container
            ),
        ));
    }
    if !d.cgroup_permissions.is_empty() {
        validate_device_permissions(&d.cgroup_permissions)
            .map_err(|r| err("--device", format!("{}: {r}", d.path_on_host)))?;
    }
    Ok(())
}

/// Checks a `--user USER[:GROUP]` (names or numbers, resolved in the image at start).
fn validate_user(user: &str) -> Result<(), SpecError> {
    if user.is_empty() {
        return Ok(());
    }
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && c != ':')
    };
    let ok = match user.split_once(':') {
        Some((u, g)) => part_ok(u) && part_ok(g),
        None => part_ok(user),
    };
    if ok {
        Ok(())
    } else {
        Err(err(
            "--user",
            format!("{user:?} is not USER[:GROUP] (names or numbers, e.g. 1000:1000 or nobody)"),
        ))
    }
}

/// Checks the confinement knobs of a container spec (capabilities, devices, seccomp, ulimits,
/// sysctls, groups, user, hostname, workdir, stop signal); errors name the flag.
fn validate_confinement(c: &ContainerSpec) -> Result<(), SpecError> {
    for (flag, names) in [
        ("--cap-add", &c.capability_add),
        ("--cap-drop", &c.capability_drop),
    ] {
        validate_capabilities(flag, names).map_err(|e| {
            let reason = e.strip_prefix(&format!("{flag}: ")).unwrap_or(&e);
            err(flag, reason)
        })?;
    }
    let mut container_paths = HashSet::new();
    for d in &c.devices {
        validate_device(d)?;
        let target = if d.path_in_container.is_empty() {
            &d.path_on_host
        } else {
            &d.path_in_container
        };
        if !container_paths.insert(target.as_str()) {
            return Err(err(
                "--device",
                format!("container path {target} is given twice"),
            ));
        }
    }
    if let Some(seccomp) = c.privileges.as_ref().and_then(|p| p.seccomp.as_ref()) {
        if !SECCOMP_MODES.contains(&seccomp.mode.as_str()) {
            return Err(err(
                "--security-opt",
                format!(
                    "unknown seccomp mode {:?} (use seccomp=default, seccomp=unconfined or seccomp=PATH.json)",
                    seccomp.mode
                ),
            ));
        }
        match (seccomp.mode == "custom", seccomp.profile.is_empty()) {
            (true, true) => {
                return Err(err(
                    "--security-opt",
                    "a custom seccomp mode needs a profile (seccomp=PATH.json)",
                ))
            }
            (false, false) => {
                return Err(err(
                    "--security-opt",
                    format!(
                        "seccomp mode {:?} carries a profile: only mode \"custom\" has one",
                        seccomp.mode
                    ),
                ))
            }
            (true, false) => {
                crate::seccomp::parse_profile(&seccomp.profile)
                    .map_err(|e| err("--security-opt", format!("seccomp profile: {e}")))?;
            }
            _ => {}
        }
    }
    let mut ulimits = HashSet::new();
    for u in &c.ulimits {
        validate_ulimit(&u.name, u.soft, u.hard).map_err(|r| err("--ulimit", r))?;
        if !ulimits.insert(u.name.as_str()) {
            return Err(err("--ulimit", format!("{} is given twice", u.name)));
        }
    }
    let mut keys: Vec<&String> = c.sysctls.keys().collect();
    keys.sort();
    for key in keys {
        validate_sysctl(key).map_err(|r| err("--sysctl", r))?;
    }
    for g in &c.groups {
        if g.is_empty()
            || g.chars()
                .any(|ch| ch.is_whitespace() || ch.is_control() || ch == ':')
        {
            return Err(err(
                "--group-add",
                format!("{g:?} is not a group name or number"),
            ));
        }
    }
    validate_user(&c.user)?;
    if c.hostname.len() > 64
        || c.hostname.starts_with(['-', '.'])
        || !c
            .hostname
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
    {
        return Err(err(
            "--hostname",
            format!(
                "{:?} is not a hostname (at most 64 letters, digits, '-', '_' and '.')",
                c.hostname
            ),
        ));
    }
    if !c.dir.is_empty() && !c.dir.starts_with('/') {
        return Err(err(
            "--workdir",
            format!("{:?} must be an absolute path", c.dir),
        ));
    }
    if !c.stop_signal.is_empty() && signal_number(&c.stop_signal).is_none() {
        return Err(err(
            "--stop-signal",
            format!(
                "unknown signal {:?} (e.g. SIGTERM, SIGQUIT, SIGUSR1 or a number)",
                c.stop_signal
            ),
        ));
    }
    Ok(())
}

/// The network drivers Shoal knows, as `network create --driver` spells them.
pub const NETWORK_DRIVERS: [&str; 4] = ["overlay", "bridge", "host", "none"];

/// An IPv4 subnet in CIDR form (`10.1.0.0/24`); the address is the network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length, 0-32.
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Parses `A.B.C.D/N`, refusing host bits (docker: "it should be 10.1.0.0/24").
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ip, len) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR subnet (e.g. 10.1.0.0/24)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| {
            format!("{s:?} is not a CIDR subnet: {ip:?} is not an IPv4 address (only IPv4 is supported)")
        })?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|n| *n <= 32)
            .ok_or_else(|| format!("{s:?} has an invalid prefix length {len:?} (0-32)"))?;
        let net = Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(ip) & mask(prefix)),
            prefix,
        };
        if net.addr != ip {
            return Err(format!("{s:?} has host bits set: it should be {net}"));
        }
        Ok(net)
    }

    /// True if `ip` is inside the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    /// The last address of the subnet (broadcast).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix))
    }

    /// True if the two subnets share any address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// Checks a network name: like a service name (1-63 letters, digits, `-`, `_`), so that
/// `SERVICE.NETWORK` stays an unambiguous DNS name.
pub fn validate_network_name(name: &str) -> Result<(), SpecError> {
    check_object_name(name, "name", "a network needs a name")
}

/// Validates a network spec before it is created (`network create`; the manager calls it too).
/// Overlaps with other networks are the manager's to check: they need the store.
pub fn validate_network(spec: &NetworkSpec) -> Result<(), SpecError> {
    check_spec_size("network", spec.encoded_len())?;
    validate_network_name(&spec.name)?;
    let driver = spec.driver.as_str();
    if !NETWORK_DRIVERS.contains(&driver) {
        let what = if driver.is_empty() {
            "a driver is required".to_string()
        } else {
            format!("unknown driver {driver:?}")
        };
        return Err(err(
            "--driver",
            format!("{what} (use overlay, bridge, host or none)"),
        ));
    }
    let addressless = matches!(driver, "host" | "none");
    let subnet = if spec.subnet.trim().is_empty() {
        None
    } else {
        if addressless {
            return Err(err(
                "--subnet",
                format!("a {driver} network has no addresses of its own"),
            ));
        }
        let net = Ipv4Cidr::parse(&spec.subnet).map_err(|r| err("--subnet", r))?;
        if net.prefix < 8 {
            return Err(err(
                "--subnet",
                format!("{net} is too large (at most a /8)"),
            ));
        }
        if net.prefix > 30 {
            return Err(err(
                "--subnet",
                format!("{net} is too small (at least a /30: a gateway and one task)"),
            ));
        }
        Some(net)
    };
    if !spec.gateway.trim().is_empty() {
        let Some(net) = subnet else {
            return Err(err(
                "--gateway",
                "needs --subnet (the gateway must be an address inside it)",
            ));
        };
        let gw: Ipv4Addr = spec.gateway.trim().parse().map_err(|_| {
            err(
                "--gateway",
                format!("{:?} is not an IPv4 address", spec.gateway),
            )
        })?;
        if !net.contains(gw) {
            return Err(err(
                "--gateway",
                format!("{gw} is outside the subnet {net}"),
            ));
        }
        if gw == net.addr || gw == net.broadcast() {
            return Err(err(
                "--gateway",
                format!("{gw} is the network or broadcast address of {net}"),
            ));
        }
    }
    if spec.encrypted && driver != "overlay" {
        return Err(err(
            "--opt",
            format!("encrypted is only for overlay networks, not {driver}"),
        ));
    }
    if spec.options.keys().any(|k| k.trim().is_empty()) {
        return Err(err("--opt", "an option needs a name (KEY or KEY=VALUE)"));
    }
    validate_network_options(spec)?;
    if spec.labels.keys().any(|k| k.trim().is_empty()) {
        return Err(err("--label", "a label needs a key (KEY=VALUE)"));
    }
    validate_labels("--label", spec.labels.iter())?;
    if spec.ingress {
        if driver != "overlay" {
            return Err(err(
                "--ingress",
                "the ingress network must use the overlay driver",
            ));
        }
        if spec.attachable {
            return Err(err(
                "--attachable",
                "the ingress network cannot be attachable",
            ));
        }
    }
    Ok(())
}

/// Driver options are bounded as labels are: at most [`MAX_NETWORK_OPTIONS`], keys and values
/// of label size.
fn validate_network_options(spec: &NetworkSpec) -> Result<(), SpecError> {
    let count = spec.options.len();
    if count > MAX_NETWORK_OPTIONS {
        return Err(err(
            "--opt",
            format!("{count} options are more than the limit of {MAX_NETWORK_OPTIONS} per network"),
        ));
    }
    let mut options: Vec<(&String, &String)> = spec.options.iter().collect();
    options.sort();
    for (k, v) in options {
        if k.len() > MAX_LABEL_KEY_BYTES {
            return Err(err(
                "--opt",
                format!(
                    "option name {} is {} bytes, more than the limit of {MAX_LABEL_KEY_BYTES} bytes",
                    preview(k),
                    k.len()
                ),
            ));
        }
        if v.len() > MAX_LABEL_VALUE_BYTES {
            return Err(err(
                "--opt",
                format!(
                    "the value of option {} is {} bytes, more than the limit of {MAX_LABEL_VALUE_BYTES} bytes",
                    preview(k),
                    v.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a DNS alias of a service on a network: 1-253 characters of letters, digits, `-`, `_`
/// and `.`.
fn validate_alias(alias: &str) -> Result<(), SpecError> {
    let ok = !alias.is_empty()
        && alias.len() <= 253
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(err(
            "--network",
            format!("alias {alias:?} is not a valid DNS name (letters, digits, '-', '_', '.')"),
        ))
    }
}

/// The networks of a task template as given (names or ids): each once, `host`/`none` alone.
fn validate_attachments(networks: &[NetworkAttachmentConfig]) -> Result<(), SpecError> {
    let mut seen = HashSet::new();
    for n in networks {
        let target = n.target.trim();
        if target.is_empty() {
            return Err(err("--network", "a network name is required"));
        }
        if !seen.insert(target) {
            return Err(err(
                "--network",
                format!("the service is attached to network {target:?} twice"),
            ));
        }
        for a in &n.aliases {
            validate_alias(a)?;
        }
        if matches!(target, "host" | "none") && networks.len() > 1 {
            return Err(err(
                "--network",
                format!("the {target} network cannot be combined with other networks"),
            ));
        }
    }
    Ok(())
}

/// Checks a service's networks once the manager has resolved them: `resolved[i]` is the network
/// of `spec.task.networks[i]`. A `host` or `none` driver network must be the only one, and the
/// `ingress` network is joined through published ports, never by name.
pub fn validate_service_networks(
    spec: &ServiceSpec,
    resolved: &[NetworkSpec],
) -> Result<(), SpecError> {
    let task_networks = spec.task.as_ref().map(|t| t.networks.len()).unwrap_or(0);
    if task_networks != resolved.len() {
        return Err(err(
            "--network",
            format!(
                "{} networks resolved for {task_networks} attachments",
                resolved.len()
            ),
        ));
    }
    for n in resolved {
        if n.ingress {
            return Err(err(
                "--network",
                format!(
                    "a service cannot be attached to the ingress network {:?}: publish a port instead",
                    n.name
                ),
            ));
        }
        if matches!(n.driver.as_str(), "host" | "none") && resolved.len() > 1 {
            return Err(err(
                "--network",
                format!(
                    "network {:?} (driver {}) cannot be combined with other networks",
                    n.name, n.driver
                ),
            ));
        }
    }
    Ok(())
}

/// The protocol of a port, with the default filled in ("tcp").
pub fn port_protocol(protocol: &str) -> &str {
    if protocol.is_empty() {
        "tcp"
    } else {
        protocol
    }
}

/// The publish mode of a port, with the default filled in ("ingress").
pub fn port_publish_mode(mode: &str) -> &str {
    if mode.is_empty() {
        "ingress"
    } else {
        mode
    }
}

/// The endpoint mode of a service, with the default filled in ("vip").
pub fn endpoint_mode(mode: &str) -> &str {
    if mode.is_empty() {
        "vip"
    } else {
        mode
    }
}

/// Checks `--endpoint-mode` and every `--publish`: ports in range, known protocol and mode, no
/// published port twice, and docker's rule that dnsrr cannot serve ingress-mode ports.
fn validate_endpoint(ep: &EndpointSpec) -> Result<(), SpecError> {
    let mode = endpoint_mode(&ep.mode);
    if !matches!(mode, "vip" | "dnsrr") {
        return Err(err(
            "--endpoint-mode",
            format!("unknown mode {mode:?} (use vip or dnsrr)"),
        ));
    }
    let mut published = HashSet::new();
    for p in &ep.ports {
        let protocol = port_protocol(&p.protocol);
        if !matches!(protocol, "tcp" | "udp") {
            return Err(err(
                "--publish",
                format!("unknown protocol {protocol:?} (use tcp or udp)"),
            ));
        }
        let publish_mode = port_publish_mode(&p.publish_mode);
        if !matches!(publish_mode, "ingress" | "host") {
            return Err(err(
                "--publish",
                format!("unknown mode {publish_mode:?} (use ingress or host)"),
            ));
        }
        if p.target_port == 0 || p.target_port > 65535 {
            return Err(err(
                "--publish",
                format!("target port {} is out of range (1-65535)", p.target_port),
            ));
        }
        if p.published_port > 65535 {
            return Err(err(
                "--publish",
                format!(
                    "published port {} is out of range (1-65535, or 0 to let the manager pick)",
                    p.published_port
                ),
            ));
        }
        if p.published_port == 0 && publish_mode == "host" {
            return Err(err(
                "--publish",
                format!(
                    "target port {}/{protocol} in host mode needs a published port",
                    p.target_port
                ),
            ));
        }
        if p.published_port != 0 && !published.insert((p.published_port, protocol)) {
            return Err(err(
                "--publish",
                format!(
                    "published port {}/{protocol} is given twice",
                    p.published_port
                ),
            ));
        }
        if mode == "dnsrr" && publish_mode == "ingress" {
            return Err(err(
                "--endpoint-mode",
                format!(
                    "dnsrr cannot serve the ingress-mode port {}/{protocol} (publish it with mode=host, or use vip)",
                    if p.published_port == 0 { p.target_port } else { p.published_port }
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{ContainerSpec, PortConfig, TaskSpec};

    fn spec(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            replicas: 1,
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// (what the case changes, the error it must give or None).
    type Case = (Box<dyn Fn(&mut ServiceSpec)>, Option<String>);

    /// (what the case changes in a network spec, the error it must give or None).
    type NetCase = (Box<dyn Fn(&mut NetworkSpec)>, Option<&'static str>);

    fn env_of(s: &mut ServiceSpec) -> &mut Vec<String> {
        &mut s
            .task
            .as_mut()
            .and_then(|t| t.container.as_mut())
            .expect("test spec has a container")
            .env
    }

    #[test]
    fn service_limits_just_under_pass_just_over_fail() {
        let labels = |n: usize| -> std::collections::HashMap<String, String> {
            (0..n).map(|i| (format!("k{i:03}"), "v".into())).collect()
        };
        let long_env = |bytes: usize| format!("K={}", "x".repeat(bytes - 2));
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            (Box::new(|s| s.replicas = MAX_REPLICAS), None),
            (Box::new(|s| s.replicas = MAX_REPLICAS + 1),
             Some("--replicas: 100001 is more than the limit of 100000 replicas per service".into())),
            (Box::new(|s| s.replicas = 100_000_000_000),
             Some("--replicas: 100000000000 is more than the limit of 100000 replicas per service".into())),
            (Box::new(move |s| s.labels = labels(MAX_LABELS)), None),
            (Box::new(move |s| s.labels = labels(MAX_LABELS + 1)),
             Some("--label: 65 labels are more than the limit of 64 per object".into())),
            (Box::new(|s| { s.labels.insert("k".repeat(MAX_LABEL_KEY_BYTES), "v".into()); }), None),
            (Box::new(|s| { s.labels.insert("k".repeat(MAX_LABEL_KEY_BYTES + 1), "v".into()); }),
             Some(format!("--label: label key \"{}\"… is 129 bytes, more than the limit of 128 bytes", "k".repeat(24)))),
            (Box::new(|s| { s.labels.insert("zone".into(), "v".repeat(MAX_LABEL_VALUE_BYTES)); }), None),
            (Box::new(|s| { s.labels.insert("zone".into(), "v".repeat(MAX_LABEL_VALUE_BYTES + 1)); }),
             Some("--label: the value of label \"zone\" is 4097 bytes, more than the limit of 4096 bytes".into())),
            (Box::new(|s| *env_of(s) = vec!["A=1".into(); MAX_ENV_ENTRIES]), None),
            (Box::new(|s| *env_of(s) = vec!["A=1".into(); MAX_ENV_ENTRIES + 1]),
             Some("--env: 1001 entries are more than the limit of 1000".into())),
            (Box::new(move |s| *env_of(s) = vec![long_env(MAX_ENV_ENTRY_BYTES)]), None),
            (Box::new(move |s| *env_of(s) = vec![long_env(MAX_ENV_ENTRY_BYTES + 1)]),
             Some(format!("--env: \"K={}\"… is 32769 bytes, more than the limit of 32768 bytes per entry", "x".repeat(22)))),
            // 15 entries of 32 KiB stay under the spec limit, 17 go over it.
            (Box::new(move |s| *env_of(s) = vec![long_env(MAX_ENV_ENTRY_BYTES); 15]), None),
            (Box::new(move |s| *env_of(s) = vec![long_env(MAX_ENV_ENTRY_BYTES); 17]),
             Some("spec: the service spec is 557148 bytes encoded, more than the limit of 524288 bytes (512 KiB)".into())),
        ];
        for (i, (edit, want)) in cases.into_iter().enumerate() {
            let mut s = spec("web");
            edit(&mut s);
            let got = validate_service(&s).err().map(|e| e.to_string());
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn network_limits_just_under_pass_just_over_fail() {
        let many = |n: usize| -> std::collections::HashMap<String, String> {
            (0..n).map(|i| (format!("k{i:03}"), "v".into())).collect()
        };
        #[rustfmt::skip]
        let cases: Vec<NetCase> = vec![
            (Box::new(move |n| n.labels = many(MAX_LABELS)), None),
            (Box::new(move |n| n.labels = many(MAX_LABELS + 1)), Some("--label: 65 labels are more than the limit of 64 per object")),
            (Box::new(|n| { n.labels.insert("a b".into(), "v".into()); }), Some("--label: invalid label key \"a b\": no whitespace or '='")),
            (Box::new(|n| { n.labels.insert("team".into(), "v".repeat(MAX_LABEL_VALUE_BYTES + 1)); }), Some("--label: the value of label \"team\" is 4097 bytes, more than the limit of 4096 bytes")),
            (Box::new(move |n| n.options = many(MAX_NETWORK_OPTIONS)), None),
            (Box::new(move |n| n.options = many(MAX_NETWORK_OPTIONS + 1)), Some("--opt: 65 options are more than the limit of 64 per network")),
            (Box::new(|n| { n.options.insert("o".repeat(MAX_LABEL_KEY_BYTES + 1), String::new()); }), Some("--opt: option name \"oooooooooooooooooooooooo\"… is 129 bytes, more than the limit of 128 bytes")),
            (Box::new(|n| { n.options.insert("mtu".into(), "1".repeat(MAX_LABEL_VALUE_BYTES + 1)); }), Some("--opt: the value of option \"mtu\" is 4097 bytes, more than the limit of 4096 bytes")),
            (Box::new(|n| n.name = "x".repeat(MAX_SPEC_BYTES)), Some("spec: the network spec is 524301 bytes encoded, more than the limit of 524288 bytes (512 KiB)")),
        ];
        for (i, (edit, want)) in cases.into_iter().enumerate() {
            let mut n = net("front", "overlay", "", "");
            edit(&mut n);
            let got = validate_network(&n).err().map(|e| e.to_string());
            assert_eq!(got.as_deref(), want, "case {i}");
        }
    }

    #[test]
    fn single_label_and_replica_checks() {
        assert_eq!(check_replicas(0), Ok(()));
        assert_eq!(check_replicas(MAX_REPLICAS), Ok(()));
        assert!(check_replicas(u64::MAX).is_err_and(|e| e.contains("limit of 100000")));
        assert_eq!(check_label("zone", ""), Ok(()));
        assert!(check_label("", "a").is_err_and(|e| e.contains("must not be empty")));
        assert!(check_label("a=b", "a").is_err());
        assert!(check_label_count("--label-add", MAX_LABELS).is_ok());
        assert_eq!(
            check_label_count("--label-add", MAX_LABELS + 1)
                .unwrap_err()
                .to_string(),
            "--label-add: 65 labels are more than the limit of 64 per object"
        );
        // A multi-byte character is never cut in half in an error.
        assert!(check_label_key(&"é".repeat(100)).is_err_and(|e| e.contains("is 200 bytes")));
        assert_eq!(check_env_entry("A="), Ok(()));
        assert!(check_env_entry("=A").is_err());
    }

    #[test]
    fn names() {
        assert!(validate_service(&spec("web")).is_ok());
        assert_eq!(validate_service(&spec("")).unwrap_err().field, "--name");
        assert_eq!(validate_service(&spec("-x")).unwrap_err().field, "--name");
        assert_eq!(validate_service(&spec("a b")).unwrap_err().field, "--name");
    }

    #[test]
    fn constraints() {
        let c = Constraint::parse("node.labels.zone==east").expect("valid");
        assert_eq!(c.key, "node.labels.zone");
        assert_eq!(c.op, ConstraintOp::Eq);
        assert_eq!(
            Constraint::parse("node.role!=manager").expect("valid").op,
            ConstraintOp::Ne
        );
        assert!(Constraint::parse("node.colour==red").is_err());
        assert!(Constraint::parse("node.hostname=a").is_err());
        assert!(Constraint::parse("node.role==boss").is_err());
        let mut s = spec("web");
        if let Some(t) = s.task.as_mut() {
            t.placement = Some(crate::v1::Placement {
                constraints: vec!["bad".into()],
                ..Default::default()
            });
        }
        assert_eq!(validate_service(&s).unwrap_err().field, "--constraint");
    }

    #[test]
    fn placement_preferences_and_grace() {
        #[rustfmt::skip]
        let cases: [(&str, Result<&str, ()>); 6] = [
            ("spread=node.labels.zone", Ok("node.labels.zone")),
            (" spread= engine.labels.disk ", Ok("engine.labels.disk")),
            ("spread=node.hostname", Ok("node.hostname")),
            ("spread=node.labels.", Err(())),
            ("spread=node.colour", Err(())),
            ("binpack=node.labels.zone", Err(())),
        ];
        for (pref, want) in cases {
            let got = parse_placement_pref(pref).map_err(|e| {
                assert_eq!(e.field, "--placement-pref");
            });
            assert_eq!(got.as_deref(), want.as_ref().map(|s| *s), "{pref}");
        }
        let mut s = spec("web");
        if let Some(t) = s.task.as_mut() {
            t.placement = Some(crate::v1::Placement {
                preferences: vec!["spread=zone".into()],
                ..Default::default()
            });
        }
        assert_eq!(validate_service(&s).unwrap_err().field, "--placement-pref");
        let mut s = spec("web");
        if let Some(c) = s.task.as_mut().and_then(|t| t.container.as_mut()) {
            c.stop_grace_period_ns = -1;
        }
        assert_eq!(
            validate_service(&s).unwrap_err().field,
            "--stop-grace-period"
        );
    }

    #[test]
    fn env_and_mode() {
        let mut s = spec("web");
        if let Some(c) = s.task.as_mut().and_then(|t| t.container.as_mut()) {
            c.env.push("NOEQUALS".into());
        }
        assert_eq!(validate_service(&s).unwrap_err().field, "--env");
        let mut s = spec("web");
        s.mode = ServiceMode::ModeGlobal as i32;
        assert_eq!(validate_service(&s).unwrap_err().field, "--replicas");
    }

    fn with_container(f: impl FnOnce(&mut ContainerSpec)) -> ServiceSpec {
        let mut s = spec("web");
        if let Some(c) = s.task.as_mut().and_then(|t| t.container.as_mut()) {
            f(c);
        }
        s
    }

    fn device(host: &str, container: &str, perms: &str) -> DeviceMapping {
        DeviceMapping {
            path_on_host: host.into(),
            path_in_container: container.into(),
            cgroup_permissions: perms.into(),
        }
    }

    fn seccomp(mode: &str, profile: &[u8]) -> Option<crate::v1::Privileges> {
        Some(crate::v1::Privileges {
            seccomp: Some(crate::v1::SeccompOpts {
                mode: mode.into(),
                profile: profile.to_vec(),
            }),
            no_new_privileges: true,
        })
    }

    fn ulimit(name: &str, soft: i64, hard: i64) -> crate::v1::Ulimit {
        crate::v1::Ulimit {
            name: name.into(),
            soft,
            hard,
        }
    }

    type Edit = fn(&mut ContainerSpec);

    #[test]
    fn confinement_knobs() {
        #[rustfmt::skip]
        let cases: Vec<(Edit, Option<&str>)> = vec![
            (|c| c.capability_add = vec!["NET_ADMIN".into(), "CAP_SYS_TIME".into(), "ALL".into()], None),
            (|c| c.capability_drop = vec!["all".into(), "mknod".into()], None),
            (|c| c.capability_add = vec!["FLY".into()], Some("--cap-add: unknown capability \"FLY\" (use names like NET_ADMIN or CAP_NET_ADMIN, or ALL)")),
            (|c| c.capability_drop = vec!["RESET".into()], Some("--cap-drop: unknown capability \"RESET\" (use names like NET_ADMIN or CAP_NET_ADMIN, or ALL)")),
            (|c| c.devices = vec![device("/dev/fuse", "", "")], None),
            (|c| c.devices = vec![device("/dev/sda", "/dev/xvda", "r"), device("/dev/sdb", "/dev/xvdb", "rwm")], None),
            (|c| c.devices = vec![device("dev/fuse", "", "rwm")], Some("--device: host path \"dev/fuse\" must be an absolute path to a device (e.g. /dev/fuse)")),
            (|c| c.devices = vec![device("/dev/fuse", "/dev/../etc/x", "rwm")], Some("--device: container path \"/dev/../etc/x\" must be an absolute path without . or .. (e.g. /dev/fuse)")),
            (|c| c.devices = vec![device("/dev/fuse", "", "rx")], Some("--device: /dev/fuse: permissions \"rx\" are not a combination of r, w and m (e.g. rwm, r)")),
            (|c| c.devices = vec![device("/dev/fuse", "", "rr")], Some("--device: /dev/fuse: permissions \"rr\" are not a combination of r, w and m (e.g. rwm, r)")),
            (|c| c.devices = vec![device("/dev/a", "/dev/x", "r"), device("/dev/b", "/dev/x", "r")], Some("--device: container path /dev/x is given twice")),
            (|c| c.privileges = seccomp("", b""), None),
            (|c| c.privileges = seccomp("default", b""), None),
            (|c| c.privileges = seccomp("unconfined", b""), None),
            (|c| c.privileges = seccomp("custom", b"{\"defaultAction\":\"SCMP_ACT_ALLOW\"}"), None),
            (|c| c.privileges = seccomp("custom", b"{\"defaultAction\":\"SCMP_ACT_NOPE\"}"), Some("--security-opt: seccomp profile: defaultAction: unknown action \"SCMP_ACT_NOPE\"")),
            (|c| c.privileges = seccomp("custom", b""), Some("--security-opt: a custom seccomp mode needs a profile (seccomp=PATH.json)")),
            (|c| c.privileges = seccomp("unconfined", b"{}"), Some("--security-opt: seccomp mode \"unconfined\" carries a profile: only mode \"custom\" has one")),
            (|c| c.privileges = seccomp("strict", b""), Some("--security-opt: unknown seccomp mode \"strict\" (use seccomp=default, seccomp=unconfined or seccomp=PATH.json)")),
            (|c| c.ulimits = vec![ulimit("nofile", 1024, 2048), ulimit("core", 0, 0), ulimit("nproc", -1, -1)], None),
            (|c| c.ulimits = vec![ulimit("nofile", 2048, 1024)], Some("--ulimit: nofile: soft limit 2048 is above the hard limit 1024")),
            (|c| c.ulimits = vec![ulimit("files", 1, 1)], Some("--ulimit: unknown ulimit \"files\" (one of as, core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack)")),
            (|c| c.ulimits = vec![ulimit("nofile", 1, 1), ulimit("nofile", 2, 2)], Some("--ulimit: nofile is given twice")),
            (|c| { c.sysctls.insert("net.core.somaxconn".into(), "1024".into()); }, None),
            (|c| { c.sysctls.insert("kernel.panic".into(), "1".into()); }, Some("--sysctl: kernel.panic is not a namespaced sysctl: it would change the whole node, not just the container (allowed: net.*, fs.mqueue.*, kernel.msg*, kernel.sem, kernel.shm*)")),
            (|c| c.stop_signal = "SIGUSR1".into(), None),
            (|c| c.stop_signal = "9".into(), None),
            (|c| c.stop_signal = "SIGNOPE".into(), Some("--stop-signal: unknown signal \"SIGNOPE\" (e.g. SIGTERM, SIGQUIT, SIGUSR1 or a number)")),
            (|c| c.groups = vec!["audio".into(), "1001".into()], None),
            (|c| c.groups = vec!["".into()], Some("--group-add: \"\" is not a group name or number")),
            (|c| c.user = "1000:1000".into(), None),
            (|c| c.user = "nobody".into(), None),
            (|c| c.user = "1000:".into(), Some("--user: \"1000:\" is not USER[:GROUP] (names or numbers, e.g. 1000:1000 or nobody)")),
            (|c| c.user = "a:b:c".into(), Some("--user: \"a:b:c\" is not USER[:GROUP] (names or numbers, e.g. 1000:1000 or nobody)")),
            (|c| c.hostname = "web-1.local".into(), None),
            (|c| c.hostname = "has space".into(), Some("--hostname: \"has space\" is not a hostname (at most 64 letters, digits, '-', '_' and '.')")),
            (|c| c.hostname = "x".repeat(65), Some("--hostname")),
            (|c| c.dir = "/srv/app".into(), None),
            (|c| c.dir = "srv".into(), Some("--workdir: \"srv\" must be an absolute path")),
            (|c| { c.privileged = true; c.read_only = true; c.init = true; c.command = vec!["/bin/sh".into(), "-c".into()]; }, None),
        ];
        for (i, (edit, want)) in cases.into_iter().enumerate() {
            let got = validate_service(&with_container(edit))
                .err()
                .map(|e| e.to_string());
            match (got.as_deref(), want) {
                (None, None) => {}
                (Some(g), Some(w))
                    if g == w || (!w.contains(' ') && g.starts_with(&format!("{w}: "))) => {}
                (g, w) => panic!("case {i}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn log_sizes_in_dockers_units() {
        #[rustfmt::skip]
        let cases: [(&str, Option<u64>); 12] = [
            ("10m", Some(10_000_000)),
            ("10M", Some(10_000_000)),
            ("10mb", Some(10_000_000)),
            ("512k", Some(512_000)),
            ("1g", Some(1_000_000_000)),
            ("1.5k", Some(1500)),
            ("100", Some(100)),
            ("100b", Some(100)),
            ("0", None),
            ("-1m", None),
            ("10x", None),
            ("m", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_log_size(s).ok(), want, "{s}");
        }
        assert_eq!(parse_log_max_file("3"), Ok(3));
        assert!(parse_log_max_file("0").is_err_and(|e| e.contains("at least 1")));
        assert!(parse_log_max_file("x").is_err());
    }

    #[test]
    fn log_driver_and_options() {
        let driver = |name: &str, opts: &[(&str, &str)]| Driver {
            name: name.into(),
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let defaults = LogRotation {
            max_size: 10_000_000,
            max_file: 3,
        };
        assert_eq!(log_rotation(None), Ok(defaults));
        assert_eq!(log_rotation(Some(&driver("", &[]))), Ok(defaults));
        assert_eq!(
            log_rotation(Some(&driver(
                "json-file",
                &[("max-size", "1m"), ("max-file", "5")]
            ))),
            Ok(LogRotation {
                max_size: 1_000_000,
                max_file: 5
            })
        );
        #[rustfmt::skip]
        let bad: [(Driver, &str); 4] = [
            (driver("syslog", &[]), "--log-driver: unsupported log driver \"syslog\" (only json-file is supported)"),
            (driver("json-file", &[("compress", "true")]), "--log-opt: unknown option \"compress\" of the json-file log driver (use max-size or max-file)"),
            (driver("json-file", &[("max-file", "0")]), "--log-opt: max-file must be at least 1"),
            (driver("json-file", &[("max-size", "lots")]), "--log-opt: \"lots\" is not a size (a number with an optional unit b, k, m or g, e.g. 10m)"),
        ];
        for (d, want) in bad {
            let mut s = spec("web");
            if let Some(t) = s.task.as_mut() {
                t.log_driver = Some(d);
            }
            assert_eq!(validate_service(&s).unwrap_err().to_string(), want);
        }
    }

    fn net(name: &str, driver: &str, subnet: &str, gateway: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            driver: driver.into(),
            subnet: subnet.into(),
            gateway: gateway.into(),
            ..Default::default()
        }
    }

    #[test]
    fn cidrs() {
        let n = Ipv4Cidr::parse("10.1.2.0/24").expect("valid");
        assert_eq!(n.to_string(), "10.1.2.0/24");
        assert!(n.contains(Ipv4Addr::new(10, 1, 2, 255)));
        assert!(!n.contains(Ipv4Addr::new(10, 1, 3, 0)));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 1, 2, 255));
        assert!(n.overlaps(&Ipv4Cidr::parse("10.0.0.0/8").expect("valid")));
        assert!(!n.overlaps(&Ipv4Cidr::parse("10.1.3.0/24").expect("valid")));
        assert_eq!(
            Ipv4Cidr::parse("10.1.2.3/24").unwrap_err(),
            "\"10.1.2.3/24\" has host bits set: it should be 10.1.2.0/24"
        );
        assert!(Ipv4Cidr::parse("10.1.2.0").is_err());
        assert!(Ipv4Cidr::parse("10.1.2.0/33").is_err());
        assert!(Ipv4Cidr::parse("fd00::/64").is_err());
        assert!(Ipv4Cidr::parse("0.0.0.0/0").is_ok());
    }

    #[test]
    fn networks() {
        #[rustfmt::skip]
        let cases: [(NetworkSpec, Option<&str>); 16] = [
            (net("front", "overlay", "", ""), None),
            (net("front", "overlay", "10.5.0.0/24", ""), None),
            (net("front", "bridge", "10.5.0.0/24", "10.5.0.254"), None),
            (net("host", "host", "", ""), None),
            (net("", "overlay", "", ""), Some("name")),
            (net("a.b", "overlay", "", ""), Some("name")),
            (net("front", "macvlan", "", ""), Some("--driver")),
            (net("front", "", "", ""), Some("--driver")),
            (net("front", "overlay", "10.5.0.1/24", ""), Some("--subnet")),
            (net("front", "overlay", "10.5.0.0/31", ""), Some("--subnet")),
            (net("front", "overlay", "10.0.0.0/7", ""), Some("--subnet")),
            (net("front", "host", "10.5.0.0/24", ""), Some("--subnet")),
            (net("front", "overlay", "", "10.5.0.1"), Some("--gateway")),
            (net("front", "overlay", "10.5.0.0/24", "10.6.0.1"), Some("--gateway")),
            (net("front", "overlay", "10.5.0.0/24", "10.5.0.0"), Some("--gateway")),
            (net("front", "overlay", "10.5.0.0/24", "nope"), Some("--gateway")),
        ];
        for (spec, want) in cases {
            let got = validate_network(&spec).err().map(|e| e.field);
            assert_eq!(got.as_deref(), want, "{spec:?}");
        }
        let mut enc = net("secret", "overlay", "", "");
        enc.encrypted = true;
        assert!(validate_network(&enc).is_ok());
        enc.driver = "bridge".into();
        assert_eq!(
            validate_network(&enc).unwrap_err().to_string(),
            "--opt: encrypted is only for overlay networks, not bridge"
        );
        let mut ing = net("ingress", "overlay", "10.0.0.0/16", "");
        ing.ingress = true;
        assert!(validate_network(&ing).is_ok());
        ing.attachable = true;
        assert_eq!(validate_network(&ing).unwrap_err().field, "--attachable");
        let mut opt = net("front", "overlay", "", "");
        opt.options.insert(String::new(), "x".into());
        assert_eq!(validate_network(&opt).unwrap_err().field, "--opt");
        let e = validate_network(&net("front", "overlay", "10.5.0.0/24", "10.6.0.1")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--gateway: 10.6.0.1 is outside the subnet 10.5.0.0/24"
        );
    }

    fn port(published: u32, target: u32, protocol: &str, mode: &str) -> PortConfig {
        PortConfig {
            published_port: published,
            target_port: target,
            protocol: protocol.into(),
            publish_mode: mode.into(),
            ..Default::default()
        }
    }

    fn with_ports(mode: &str, ports: Vec<PortConfig>) -> ServiceSpec {
        let mut s = spec("web");
        s.endpoint = Some(EndpointSpec {
            mode: mode.into(),
            ports,
        });
        s
    }

    #[test]
    fn published_ports() {
        #[rustfmt::skip]
        let cases: Vec<(ServiceSpec, Option<&str>)> = vec![
            (with_ports("", vec![port(8080, 80, "", "")]), None),
            (with_ports("vip", vec![port(0, 80, "tcp", "ingress")]), None),
            (with_ports("vip", vec![port(8080, 80, "tcp", ""), port(8080, 80, "udp", "")]), None),
            (with_ports("dnsrr", vec![port(8080, 80, "tcp", "host")]), None),
            (with_ports("dnsrr", vec![]), None),
            (with_ports("vip", vec![port(8080, 0, "", "")]), Some("--publish")),
            (with_ports("vip", vec![port(8080, 65536, "", "")]), Some("--publish")),
            (with_ports("vip", vec![port(65536, 80, "", "")]), Some("--publish")),
            (with_ports("vip", vec![port(8080, 80, "sctp", "")]), Some("--publish")),
            (with_ports("vip", vec![port(8080, 80, "", "local")]), Some("--publish")),
            (with_ports("vip", vec![port(0, 80, "", "host")]), Some("--publish")),
            (with_ports("vip", vec![port(8080, 80, "", ""), port(8080, 81, "tcp", "host")]), Some("--publish")),
            (with_ports("dnsrr", vec![port(8080, 80, "", "")]), Some("--endpoint-mode")),
            (with_ports("rr", vec![]), Some("--endpoint-mode")),
        ];
        for (s, want) in cases {
            let got = validate_service(&s).err().map(|e| e.field);
            assert_eq!(got.as_deref(), want, "{:?}", s.endpoint);
        }
        let e = validate_service(&with_ports(
            "vip",
            vec![port(8080, 80, "", ""), port(8080, 90, "", "")],
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--publish: published port 8080/tcp is given twice"
        );
    }

    fn attach(target: &str, aliases: &[&str]) -> NetworkAttachmentConfig {
        NetworkAttachmentConfig {
            target: target.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn with_networks(networks: Vec<NetworkAttachmentConfig>) -> ServiceSpec {
        let mut s = spec("web");
        if let Some(t) = s.task.as_mut() {
            t.networks = networks;
        }
        s
    }

    #[test]
    fn service_networks() {
        assert!(validate_service(&with_networks(vec![
            attach("a", &["web1"]),
            attach("b", &[])
        ]))
        .is_ok());
        assert!(validate_service(&with_networks(vec![attach("host", &[])])).is_ok());
        for bad in [
            vec![attach("a", &[]), attach("a", &[])],
            vec![attach("", &[])],
            vec![attach("a", &["no spaces"])],
            vec![attach("host", &[]), attach("a", &[])],
            vec![attach("a", &[]), attach("none", &[])],
        ] {
            let e = validate_service(&with_networks(bad.clone())).expect_err("refused");
            assert_eq!(e.field, "--network", "{bad:?}");
        }
        let s = with_networks(vec![attach("id1", &[]), attach("id2", &[])]);
        let front = net("front", "overlay", "", "");
        let hostnet = net("myhost", "host", "", "");
        assert!(validate_service_networks(&s, &[front.clone(), front.clone()]).is_ok());
        assert_eq!(
            validate_service_networks(&s, &[front.clone(), hostnet])
                .unwrap_err()
                .to_string(),
            "--network: network \"myhost\" (driver host) cannot be combined with other networks"
        );
        let mut ingress = net("ingress", "overlay", "", "");
        ingress.ingress = true;
        assert!(validate_service_networks(&s, &[front.clone(), ingress]).is_err());
        assert!(validate_service_networks(&s, &[front]).is_err());
    }
}
