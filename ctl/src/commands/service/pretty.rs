//! The `--pretty` form of `service inspect`.

use shoal_proto::spec::{endpoint_mode, port_protocol, port_publish_mode};
use shoal_proto::v1::{Resources, Service, ServiceMode};

use super::tables::published_ports;
use crate::output;

/// The `--pretty` form of `service inspect`.
pub fn pretty(svc: &Service) -> String {
    let spec = svc.spec.clone().unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let c = task.container.clone().unwrap_or_default();
    let meta = svc.meta.unwrap_or_default();
    let mut s = String::new();
    let mut kv = |k: &str, v: String| {
        // A label longer than the column still gets a space before its value.
        let line = format!("{:<15} {v}", format!("{k}:"));
        s.push_str(line.trim_end());
        s.push('\n');
    };
    kv("ID", svc.id.clone());
    kv("Name", spec.name.clone());
    if spec.mode == ServiceMode::ModeGlobal as i32 {
        kv("Service Mode", "Global".into());
    } else {
        kv("Service Mode", "Replicated".into());
        kv(" Replicas", spec.replicas.to_string());
    }
    kv("Created", output::rfc3339(meta.created_at));
    kv("Updated", output::rfc3339(meta.updated_at));
    if let Some(p) = task.placement.as_ref().filter(|p| {
        !p.constraints.is_empty() || !p.preferences.is_empty() || p.max_replicas_per_node > 0
    }) {
        kv("Placement", String::new());
        if !p.constraints.is_empty() {
            kv(" Constraints", format!("[{}]", p.constraints.join(" ")));
        }
        if !p.preferences.is_empty() {
            let prefs: Vec<String> = p
                .preferences
                .iter()
                .map(|x| format!("Spread={}", x.strip_prefix("spread=").unwrap_or(x)))
                .collect();
            kv(" Preferences", format!("[{}]", prefs.join(" ")));
        }
        if p.max_replicas_per_node > 0 {
            kv(" Max Replicas", p.max_replicas_per_node.to_string());
        }
    }
    let r = task.restart.unwrap_or_default();
    kv("RestartPolicy", String::new());
    kv(
        " Condition",
        output::restart_condition_name(r.condition).into(),
    );
    kv(
        " Delay",
        humantime::format_duration(std::time::Duration::from_nanos(r.delay_ns.max(0) as u64))
            .to_string(),
    );
    if r.max_attempts > 0 {
        kv(" Max Attempts", r.max_attempts.to_string());
    }
    kv("ContainerSpec", String::new());
    kv(" Image", c.image.clone());
    if !c.args.is_empty() {
        kv(" Args", c.args.join(" "));
    }
    if !c.env.is_empty() {
        kv(" Env", c.env.join(" "));
    }
    kv(
        " Grace Period",
        humantime::format_duration(std::time::Duration::from_nanos(
            c.stop_grace_period_ns.max(0) as u64,
        ))
        .to_string(),
    );
    if !c.command.is_empty() {
        kv(" Entrypoint", c.command.join(" "));
    }
    let mut text = |k: &str, v: &str| {
        if !v.is_empty() {
            kv(k, v.to_string());
        }
    };
    text(" Dir", &c.dir);
    text(" User", &c.user);
    text(" Groups", &c.groups.join(" "));
    text(" Hostname", &c.hostname);
    text(" Stop Signal", &c.stop_signal);
    for (k, on) in [
        (" Privileged", c.privileged),
        (" Read Only", c.read_only),
        (" Init", c.init),
    ] {
        if on {
            kv(k, "true".into());
        }
    }
    if !c.devices.is_empty() {
        let devices: Vec<String> = c
            .devices
            .iter()
            .map(|d| {
                let target = if d.path_in_container.is_empty() {
                    &d.path_on_host
                } else {
                    &d.path_in_container
                };
                let perms = if d.cgroup_permissions.is_empty() {
                    "rwm"
                } else {
                    &d.cgroup_permissions
                };
                format!("{}:{target}:{perms}", d.path_on_host)
            })
            .collect();
        kv(" Devices", devices.join(" "));
    }
    if !c.ulimits.is_empty() {
        let limits: Vec<String> = c
            .ulimits
            .iter()
            .map(|u| format!("{}={}:{}", u.name, u.soft, u.hard))
            .collect();
        kv(" Ulimits", limits.join(" "));
    }
    if !c.sysctls.is_empty() {
        let sorted: std::collections::BTreeMap<_, _> = c.sysctls.iter().collect();
        let pairs: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
        kv(" Sysctls", pairs.join(" "));
    }
    if !c.capability_add.is_empty() || !c.capability_drop.is_empty() {
        kv("Capabilities", String::new());
        if !c.capability_add.is_empty() {
            kv(" Add", c.capability_add.join(" "));
        }
        if !c.capability_drop.is_empty() {
            kv(" Drop", c.capability_drop.join(" "));
        }
    }
    let p = c.privileges.clone().unwrap_or_default();
    let seccomp = p.seccomp.map(|sc| sc.mode).unwrap_or_default();
    if p.no_new_privileges || !matches!(seccomp.as_str(), "" | "default") {
        kv("Security Options", String::new());
        if p.no_new_privileges {
            kv(" No New Privileges", "true".into());
        }
        if !matches!(seccomp.as_str(), "" | "default") {
            kv(" Seccomp", seccomp);
        }
    }
    if let Some(d) = &task.log_driver {
        kv("Log Driver", String::new());
        kv(" Name", d.name.clone());
        if !d.options.is_empty() {
            kv(" LogOpts", String::new());
            let sorted: std::collections::BTreeMap<_, _> = d.options.iter().collect();
            for (k, v) in sorted {
                kv(&format!("  {k}"), v.clone());
            }
        }
    }
    let res = task.resources.unwrap_or_default();
    let lim = res.limits.unwrap_or_default();
    let rsv = res.reservations.unwrap_or_default();
    if lim != Resources::default() || rsv != Resources::default() || res.pids_limit > 0 {
        kv("Resources", String::new());
        let cpu = |n: i64| format!("{}", n as f64 / 1e9);
        if rsv != Resources::default() {
            kv(" Reservations", String::new());
            if rsv.nano_cpus > 0 {
                kv("  CPU", cpu(rsv.nano_cpus));
            }
            if rsv.memory_bytes > 0 {
                kv(
                    "  Memory",
                    shoal_proto::units::format_bytes(rsv.memory_bytes),
                );
            }
        }
        if lim != Resources::default() || res.pids_limit > 0 {
            kv(" Limits", String::new());
            if lim.nano_cpus > 0 {
                kv("  CPU", cpu(lim.nano_cpus));
            }
            if lim.memory_bytes > 0 {
                kv(
                    "  Memory",
                    shoal_proto::units::format_bytes(lim.memory_bytes),
                );
            }
            if res.pids_limit > 0 {
                kv("  Pids", res.pids_limit.to_string());
            }
        }
    }
    if !task.networks.is_empty() {
        let names: Vec<&str> = task.networks.iter().map(|n| n.target.as_str()).collect();
        kv("Networks", names.join(" "));
    }
    let ep = spec.endpoint.clone().unwrap_or_default();
    kv("Endpoint Mode", endpoint_mode(&ep.mode).to_string());
    let ports = published_ports(svc);
    if !ports.is_empty() {
        kv("Ports", String::new());
        for p in &ports {
            s.push_str(&format!(
                " PublishedPort = {}\n  Protocol = {}\n  TargetPort = {}\n  PublishMode = {}\n",
                p.published_port,
                port_protocol(&p.protocol),
                p.target_port,
                port_publish_mode(&p.publish_mode)
            ));
        }
    }
    s
}
