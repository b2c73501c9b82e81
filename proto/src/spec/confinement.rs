//! The confinement knobs of a container spec: devices, user, seccomp, capabilities, ulimits,
//! sysctls and the rest.

use std::collections::HashSet;

use crate::security::{signal_number, validate_capabilities, validate_sysctl, validate_ulimit};
use crate::v1::{ContainerSpec, DeviceMapping, SeccompOpts, Ulimit};

use super::{err, SpecError};

/// The seccomp modes of `ContainerSpec.privileges.seccomp.mode` ("" is docker's default profile).
pub const SECCOMP_MODES: [&str; 4] = ["", "default", "unconfined", "custom"];

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
pub(super) fn validate_confinement(c: &ContainerSpec) -> Result<(), SpecError> {
    validate_capability_flags(c)?;
    validate_devices(&c.devices)?;
    if let Some(seccomp) = c.privileges.as_ref().and_then(|p| p.seccomp.as_ref()) {
        validate_seccomp(seccomp)?;
    }
    validate_ulimits(&c.ulimits)?;
    let mut keys: Vec<&String> = c.sysctls.keys().collect();
    keys.sort();
    for key in keys {
        validate_sysctl(key).map_err(|r| err("--sysctl", r))?;
    }
    validate_groups(&c.groups)?;
    validate_user(&c.user)?;
    validate_hostname(&c.hostname)?;
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

/// `--cap-add` and `--cap-drop`: known capability names (or ALL).
fn validate_capability_flags(c: &ContainerSpec) -> Result<(), SpecError> {
    for (flag, names) in [
        ("--cap-add", &c.capability_add),
        ("--cap-drop", &c.capability_drop),
    ] {
        validate_capabilities(flag, names).map_err(|e| {
            let reason = e.strip_prefix(&format!("{flag}: ")).unwrap_or(&e);
            err(flag, reason)
        })?;
    }
    Ok(())
}

/// Each `--device` on its own, and no container path twice.
fn validate_devices(devices: &[DeviceMapping]) -> Result<(), SpecError> {
    let mut container_paths = HashSet::new();
    for d in devices {
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
    Ok(())
}

/// `--security-opt seccomp=...`: a known mode, and a profile (that parses) exactly when the mode
/// is "custom".
fn validate_seccomp(seccomp: &SeccompOpts) -> Result<(), SpecError> {
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
        (true, true) => Err(err(
            "--security-opt",
            "a custom seccomp mode needs a profile (seccomp=PATH.json)",
        )),
        (false, false) => Err(err(
            "--security-opt",
            format!(
                "seccomp mode {:?} carries a profile: only mode \"custom\" has one",
                seccomp.mode
            ),
        )),
        (true, false) => crate::seccomp::parse_profile(&seccomp.profile)
            .map(|_| ())
            .map_err(|e| err("--security-opt", format!("seccomp profile: {e}"))),
        (false, true) => Ok(()),
    }
}

/// Each `--ulimit` valid, and none given twice.
fn validate_ulimits(ulimits: &[Ulimit]) -> Result<(), SpecError> {
    let mut names = HashSet::new();
    for u in ulimits {
        validate_ulimit(&u.name, u.soft, u.hard).map_err(|r| err("--ulimit", r))?;
        if !names.insert(u.name.as_str()) {
            return Err(err("--ulimit", format!("{} is given twice", u.name)));
        }
    }
    Ok(())
}

/// `--group-add`: names or numbers, no whitespace, control characters or ':'.
fn validate_groups(groups: &[String]) -> Result<(), SpecError> {
    for g in groups {
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
    Ok(())
}

/// `--hostname`: at most 64 letters, digits, '-', '_' and '.', not starting with '-' or '.'.
/// A template (`{{.Node.Hostname}}-{{.Task.Slot}}`) is checked as it expands for a typical task
/// (its placeholders are checked with the other templates).
fn validate_hostname(hostname: &str) -> Result<(), SpecError> {
    let typical = crate::template::TemplateContext {
        service_id: "x".repeat(25),
        service_name: "web".into(),
        task_id: "x".repeat(25),
        task_slot: 1,
        task_name: format!("web.1.{}", "x".repeat(25)),
        node_id: "x".repeat(25),
        node_hostname: "node1".into(),
    };
    let expanded = crate::template::expand(hostname, &typical);
    let name = expanded.as_deref().unwrap_or(hostname);
    if name.len() > 64
        || name.starts_with(['-', '.'])
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
    {
        return Err(err(
            "--hostname",
            format!(
                "{hostname:?} is not a hostname (at most 64 letters, digits, '-', '_' and '.')"
            ),
        ));
    }
    Ok(())
}
