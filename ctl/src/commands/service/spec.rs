//! `service create` flags made into a spec, and the confinement and capability flags both
//! `create` and `update` take.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{anyhow, Result};
use shoal_proto::spec::validate_service;
use shoal_proto::v1::{
    ContainerSpec, DeviceMapping, Driver, EndpointSpec, Placement, Privileges,
    ResourceRequirements, Resources, RestartPolicy, SeccompOpts, ServiceMode, ServiceSpec,
    TaskSpec, Ulimit,
};

use crate::cli::{CreateArgs, Mode, RestartCondition, SecurityOpt, UpdateArgs};

/// Turns `service create` flags into a spec, checked the way the manager will check it.
pub fn build_spec(a: &CreateArgs) -> Result<ServiceSpec> {
    let (mode, replicas) = match (a.mode, a.replicas) {
        (Mode::Global, Some(_)) => {
            return Err(anyhow!("--replicas: cannot be used with --mode global"))
        }
        (Mode::Global, None) => (ServiceMode::ModeGlobal, 0),
        (Mode::Replicated, n) => (ServiceMode::ModeReplicated, n.unwrap_or(1)),
    };
    let mut spec = ServiceSpec {
        name: a.name.clone(),
        labels: a.label.iter().cloned().collect(),
        mode: mode as i32,
        replicas,
        task: Some(TaskSpec {
            container: Some(container_spec(a)?),
            resources: Some(resources(a)),
            restart: Some(restart_policy(a)),
            placement: Some(Placement {
                constraints: a.constraint.clone(),
                max_replicas_per_node: a.max_replicas_per_node.unwrap_or(0),
                preferences: a.placement_pref.clone(),
                // Any platform (the docker CLI fills these from the registry).
                platforms: Vec::new(),
            }),
            networks: a.network.clone(),
            log_driver: log_driver(None, a.log_driver.as_deref(), &a.log_opt),
            force_update: 0,
        }),
        endpoint: Some(EndpointSpec {
            mode: a.endpoint_mode.as_str().to_string(),
            ports: a.publish.clone(),
        }),
        update: None,
        rollback: None,
        depends_on: Vec::new(),
    };
    super::rollout_spec::merge_replace_config(&mut spec.update, a.shared.update_config.flags());
    super::rollout_spec::merge_replace_config(&mut spec.rollback, a.shared.rollback_config.flags());
    validate_service(&spec)?;
    Ok(spec)
}

/// The container part of `service create`'s flags; reads a seccomp profile file if one is named.
fn container_spec(a: &CreateArgs) -> Result<ContainerSpec> {
    let (capability_add, capability_drop) = effective_cap_add_drop(&a.cap_add, &a.cap_drop);
    Ok(ContainerSpec {
        image: a.image.clone(),
        args: a.args.clone(),
        env: a.env.clone(),
        labels: a.container_label.iter().cloned().collect(),
        hosts: dedup(&a.host),
        stop_grace_period_ns: a.stop_grace_period,
        command: a.entrypoint.clone().map(|e| e.0).unwrap_or_default(),
        dir: a.workdir.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        hostname: a.hostname.clone().unwrap_or_default(),
        groups: dedup(&a.group_add),
        privileges: privileges(None, &a.security_opt)?,
        capability_add,
        capability_drop,
        privileged: a.privileged,
        devices: merge_devices(Vec::new(), &a.device),
        read_only: a.read_only,
        ulimits: merge_ulimits(Vec::new(), &a.ulimit),
        sysctls: a.sysctl.iter().cloned().collect(),
        init: a.init,
        stop_signal: a.stop_signal.clone().unwrap_or_default(),
        healthcheck: super::rollout_spec::health_on_create(&a.shared.health)?,
        secrets: a.secret.clone(),
        configs: a.config_ref.clone(),
        mounts: a.mount.clone(),
        ..Default::default()
    })
}

/// `--limit-*` and `--reserve-*` (0: no limit).
fn resources(a: &CreateArgs) -> ResourceRequirements {
    ResourceRequirements {
        limits: Some(Resources {
            nano_cpus: a.limit_cpu.unwrap_or(0),
            memory_bytes: a.limit_memory.unwrap_or(0),
        }),
        reservations: Some(Resources {
            nano_cpus: a.reserve_cpu.unwrap_or(0),
            memory_bytes: a.reserve_memory.unwrap_or(0),
        }),
        pids_limit: a.limit_pids.unwrap_or(0),
    }
}

/// `--restart-condition`, `--restart-delay` and `--restart-max-attempts`.
fn restart_policy(a: &CreateArgs) -> RestartPolicy {
    let condition = match a.restart_condition {
        RestartCondition::Any => shoal_proto::v1::RestartCondition::RestartAny,
        RestartCondition::OnFailure => shoal_proto::v1::RestartCondition::RestartOnFailure,
        RestartCondition::None => shoal_proto::v1::RestartCondition::RestartNone,
    };
    RestartPolicy {
        condition: condition as i32,
        delay_ns: a.restart_delay,
        max_attempts: a.restart_max_attempts.unwrap_or(0),
        window_ns: 0,
    }
}

/// The capability lists docker stores for `--cap-add`/`--cap-drop` on create: sorted, each
/// once, ALL alone when given, and a capability both added and dropped only added.
pub fn effective_cap_add_drop(add: &[String], drop: &[String]) -> (Vec<String>, Vec<String>) {
    let add = normalize_caps(add.iter().cloned().collect());
    let drop = normalize_caps(drop.iter().filter(|c| !add.contains(c)).cloned().collect());
    (add, drop)
}

/// Sorted, deduplicated, RESET removed, and only ALL when ALL is in the list.
fn normalize_caps(caps: BTreeSet<String>) -> Vec<String> {
    if caps.contains("ALL") {
        return vec!["ALL".into()];
    }
    caps.into_iter().filter(|c| c != "RESET").collect()
}

/// Docker's `service update --cap-add/--cap-drop`: RESET clears a list first; a dropped
/// capability leaves the added ones and an added one leaves the dropped ones; adding wins
/// when both name the same capability.
pub fn update_capabilities(
    add: &mut Vec<String>,
    drop: &mut Vec<String>,
    to_add: &[String],
    to_drop: &[String],
) {
    let mut cap_add: BTreeSet<String> = add.iter().cloned().collect();
    let mut cap_drop: BTreeSet<String> = drop.iter().cloned().collect();
    if to_add.iter().any(|c| c == "RESET") {
        cap_add.clear();
    }
    if to_drop.iter().any(|c| c == "RESET") {
        cap_drop.clear();
    }
    for c in to_drop
        .iter()
        .filter(|c| *c != "RESET" && !to_add.contains(c))
    {
        cap_add.remove(c);
        cap_drop.insert(c.clone());
    }
    for c in to_add.iter().filter(|c| *c != "RESET") {
        cap_drop.remove(c);
        cap_add.insert(c.clone());
    }
    *add = normalize_caps(cap_add);
    *drop = normalize_caps(cap_drop);
}

/// `values` in order, each once.
fn dedup(values: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for v in values {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    out
}

/// Devices with `add` applied: a device for a container path already mapped replaces it.
fn merge_devices(mut devices: Vec<DeviceMapping>, add: &[DeviceMapping]) -> Vec<DeviceMapping> {
    let target = |d: &DeviceMapping| {
        if d.path_in_container.is_empty() {
            d.path_on_host.clone()
        } else {
            d.path_in_container.clone()
        }
    };
    for d in add {
        devices.retain(|x| target(x) != target(d));
        devices.push(d.clone());
    }
    devices
}

/// Ulimits with `add` applied: a limit of a name already set replaces it (the last one wins).
fn merge_ulimits(mut ulimits: Vec<Ulimit>, add: &[Ulimit]) -> Vec<Ulimit> {
    for u in add {
        ulimits.retain(|x| x.name != u.name);
        ulimits.push(u.clone());
    }
    ulimits
}

/// The log driver with `--log-driver`/`--log-opt` applied: options replace the same keys; any
/// option without a driver means json-file, the only one.
fn log_driver(
    current: Option<Driver>,
    name: Option<&str>,
    opts: &[(String, String)],
) -> Option<Driver> {
    if current.is_none() && name.is_none() && opts.is_empty() {
        return None;
    }
    let mut d = current.unwrap_or_default();
    if let Some(n) = name {
        d.name = n.to_string();
    }
    if d.name.is_empty() {
        d.name = shoal_proto::spec::LOG_DRIVER.to_string();
    }
    for (k, v) in opts {
        d.options.insert(k.clone(), v.clone());
    }
    Some(d)
}

/// The seccomp profile at `path`, refused unless it reads and is a JSON object (the manager
/// checks the profile itself).
fn read_seccomp_profile(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| {
        anyhow!(
            "--security-opt: cannot read seccomp profile {}: {e}",
            path.display()
        )
    })?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(_)) => {}
        Ok(_) => {
            return Err(anyhow!(
                "--security-opt: seccomp profile {} is not a JSON object",
                path.display()
            ))
        }
        Err(e) => {
            return Err(anyhow!(
                "--security-opt: seccomp profile {} is not JSON: {e}",
                path.display()
            ))
        }
    }
    shoal_proto::seccomp::parse_profile(&bytes)
        .map_err(|e| anyhow!("--security-opt: seccomp profile {}: {e}", path.display()))?;
    Ok(bytes)
}

/// The privileges with `--security-opt` values applied (None when nothing is set at all);
/// reads seccomp profile files.
fn privileges(current: Option<Privileges>, opts: &[SecurityOpt]) -> Result<Option<Privileges>> {
    if opts.is_empty() {
        return Ok(current);
    }
    let mut p = current.unwrap_or_default();
    for opt in opts {
        let mode = |m: &str, profile: Vec<u8>| SeccompOpts {
            mode: m.to_string(),
            profile,
        };
        match opt {
            SecurityOpt::NoNewPrivileges(on) => p.no_new_privileges = *on,
            SecurityOpt::SeccompDefault => p.seccomp = Some(mode("default", Vec::new())),
            SecurityOpt::SeccompUnconfined => p.seccomp = Some(mode("unconfined", Vec::new())),
            SecurityOpt::SeccompProfile(path) => {
                p.seccomp = Some(mode("custom", read_seccomp_profile(path)?))
            }
        }
    }
    Ok(Some(p))
}

/// Applies the confinement flags of `service update` to a container spec and the task's log
/// driver (removals before additions).
pub(super) fn apply_confinement(
    service: &str,
    c: &mut ContainerSpec,
    log: &mut Option<Driver>,
    a: &UpdateArgs,
) -> Result<()> {
    update_capabilities(
        &mut c.capability_add,
        &mut c.capability_drop,
        &a.cap_add,
        &a.cap_drop,
    );
    if let Some(v) = a.privileged {
        c.privileged = v;
    }
    if let Some(v) = a.read_only {
        c.read_only = v;
    }
    if let Some(v) = a.init {
        c.init = v;
    }
    for host in &a.device_rm {
        let what = format!("device {host}");
        remove_or_fail(
            &mut c.devices,
            |d| d.path_on_host == *host,
            "--device-rm",
            service,
            &what,
        )?;
    }
    c.devices = merge_devices(std::mem::take(&mut c.devices), &a.device_add);
    c.privileges = privileges(c.privileges.take(), &a.security_opt)?;
    for h in &a.host_rm {
        // NAME removes every line naming it; NAME:IP only the line of that address (docker's).
        let (name, ip) = h
            .split_once(':')
            .map_or((h.as_str(), None), |(n, i)| (n, Some(i)));
        let what = format!("host {h}");
        let matches = |line: &String| {
            let mut words = line.split_whitespace();
            let addr = words.next().unwrap_or_default();
            words.any(|w| w == name) && ip.is_none_or(|i| i == addr)
        };
        if !c.hosts.iter().any(matches) {
            return Err(anyhow!("--host-rm: service {service} has no {what}"));
        }
        c.hosts.retain(|l| !matches(l));
    }
    for line in &a.host_add {
        if !c.hosts.contains(line) {
            c.hosts.push(line.clone());
        }
    }
    for g in &a.group_rm {
        let what = format!("group {g}");
        remove_or_fail(&mut c.groups, |x| x == g, "--group-rm", service, &what)?;
    }
    for g in &a.group_add {
        if !c.groups.contains(g) {
            c.groups.push(g.clone());
        }
    }
    for name in &a.ulimit_rm {
        let what = format!("ulimit {name}");
        let named = |u: &Ulimit| u.name.eq_ignore_ascii_case(name);
        remove_or_fail(&mut c.ulimits, named, "--ulimit-rm", service, &what)?;
    }
    c.ulimits = merge_ulimits(std::mem::take(&mut c.ulimits), &a.ulimit_add);
    for key in &a.sysctl_rm {
        if c.sysctls.remove(key).is_none() {
            return Err(anyhow!(
                "--sysctl-rm: service {service} has no sysctl {key}"
            ));
        }
    }
    for (k, v) in &a.sysctl_add {
        c.sysctls.insert(k.clone(), v.clone());
    }
    set_if_given(&mut c.user, &a.user);
    set_if_given(&mut c.hostname, &a.hostname);
    set_if_given(&mut c.dir, &a.workdir);
    set_if_given(&mut c.stop_signal, &a.stop_signal);
    if let Some(e) = &a.entrypoint {
        c.command = e.0.clone();
    }
    *log = log_driver(log.take(), a.log_driver.as_deref(), &a.log_opt);
    Ok(())
}

/// Removes the items that `matches`; when none does, an error names the flag and what the
/// service lacks (a `*-rm` of something the service does not have is a typo worth reporting).
fn remove_or_fail<T>(
    items: &mut Vec<T>,
    matches: impl Fn(&T) -> bool,
    flag: &str,
    service: &str,
    what: &str,
) -> Result<()> {
    let before = items.len();
    items.retain(|x| !matches(x));
    if items.len() == before {
        return Err(anyhow!("{flag}: service {service} has no {what}"));
    }
    Ok(())
}

/// Replaces `field` with the flag's value when the flag was given.
fn set_if_given(field: &mut String, value: &Option<String>) {
    if let Some(v) = value {
        *field = v.clone();
    }
}
