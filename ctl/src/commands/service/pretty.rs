//! The `--pretty` form of `service inspect`: one section per part of the spec, each written only
//! when it holds something other than the defaults (as docker's does).

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_proto::spec::{endpoint_mode, port_protocol, port_publish_mode};
use shoal_proto::v1::{
    ContainerSpec, DeviceMapping, Driver, HealthConfig, Placement, PortConfig,
    ResourceRequirements, Resources, RestartPolicy, Service, ServiceMode, UpdateConfig,
    UpdateStatus,
};

use super::tables::published_ports;
use crate::output::{self, rollout};

/// The `--pretty` form of `service inspect`.
pub fn pretty(svc: &Service) -> String {
    let spec = svc.spec.clone().unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let c = task.container.clone().unwrap_or_default();
    let mut out = Pretty::default();
    out.service(svc);
    if let Some(st) = &svc.update_status {
        out.update_status(st);
    }
    if let Some(p) = &task.placement {
        out.placement(p);
    }
    out.restart_policy(&task.restart.unwrap_or_default());
    out.update_config("UpdateConfig", "Update order", spec.update.as_ref());
    out.update_config("RollbackConfig", "Rollback order", spec.rollback.as_ref());
    out.container(&c);
    if let Some(h) = &c.healthcheck {
        out.healthcheck(h);
    }
    out.capabilities(&c);
    out.security_options(&c);
    if let Some(d) = &task.log_driver {
        out.log_driver(d);
    }
    out.files(&c);
    out.resources(&task.resources.unwrap_or_default());
    if !task.networks.is_empty() {
        let names: Vec<&str> = task.networks.iter().map(|n| n.target.as_str()).collect();
        out.kv("Networks", names.join(" "));
    }
    let ep = spec.endpoint.clone().unwrap_or_default();
    out.kv("Endpoint Mode", endpoint_mode(&ep.mode).to_string());
    out.ports(&published_ports(svc));
    out.0
}

/// The text being written.
#[derive(Default)]
struct Pretty(String);

impl Pretty {
    /// One `Key: value` line, the values in a column.
    fn kv(&mut self, k: &str, v: String) {
        // A label longer than the column still gets a space before its value.
        let line = format!("{:<15} {v}", format!("{k}:"));
        self.0.push_str(line.trim_end());
        self.0.push('\n');
    }

    /// A `Key: value` line unless the value is empty.
    fn text(&mut self, k: &str, v: &str) {
        if !v.is_empty() {
            self.kv(k, v.to_string());
        }
    }

    /// A `Key: a b c` line unless the list is empty.
    fn list(&mut self, k: &str, v: &[String]) {
        if !v.is_empty() {
            self.kv(k, v.join(" "));
        }
    }

    /// `Key:` then one `k=v` line per label (`k` alone for an empty value), sorted, as docker
    /// prints them; nothing without labels.
    fn labels(
        &mut self,
        k: &str,
        indent: &str,
        labels: &std::collections::HashMap<String, String>,
    ) {
        if labels.is_empty() {
            return;
        }
        self.kv(k, String::new());
        let sorted: std::collections::BTreeMap<_, _> = labels.iter().collect();
        for (k, v) in sorted {
            if v.is_empty() {
                self.0.push_str(&format!("{indent} {k}\n"));
            } else {
                self.0.push_str(&format!("{indent} {k}={v}\n"));
            }
        }
    }

    /// A `Key: true` line for a flag that is on.
    fn flag(&mut self, k: &str, on: bool) {
        if on {
            self.kv(k, "true".into());
        }
    }

    /// ID, name, mode and timestamps.
    fn service(&mut self, svc: &Service) {
        let spec = svc.spec.clone().unwrap_or_default();
        let meta = svc.meta.unwrap_or_default();
        self.kv("ID", svc.id.clone());
        self.kv("Name", spec.name.clone());
        self.labels("Labels", "", &spec.labels);
        if spec.mode == ServiceMode::ModeGlobal as i32 {
            self.kv("Service Mode", "Global".into());
        } else {
            self.kv("Service Mode", "Replicated".into());
            self.kv(" Replicas", spec.replicas.to_string());
        }
        self.kv("Created", output::rfc3339(meta.created_at));
        self.kv("Updated", output::rfc3339(meta.updated_at));
    }

    /// The last update: state, when it started and ended, and why it is where it is.
    fn update_status(&mut self, st: &UpdateStatus) {
        self.kv("UpdateStatus", String::new());
        self.kv(" State", rollout::update_state_name(st.state).into());
        if st.started_at != 0 {
            self.kv(" Started", output::rfc3339(st.started_at));
        }
        if st.completed_at != 0 {
            self.kv(" Completed", output::rfc3339(st.completed_at));
        }
        self.kv(" Message", st.message.clone());
    }

    /// An update or rollback config as it applies (swarm's defaults when unset).
    fn update_config(&mut self, title: &str, order_label: &str, cfg: Option<&UpdateConfig>) {
        let c = rollout::effective(cfg);
        self.kv(title, String::new());
        self.kv(" Parallelism", c.parallelism.to_string());
        if c.delay_ns > 0 {
            self.kv(" Delay", nanos(c.delay_ns));
        }
        self.kv(
            " On failure",
            rollout::failure_action_name(c.failure_action).into(),
        );
        self.kv(" Monitoring Period", nanos(c.monitor_ns));
        self.kv(" Max failure ratio", c.max_failure_ratio.to_string());
        self.kv(
            &format!(" {order_label}"),
            rollout::order_name(c.order).into(),
        );
    }

    /// The service's own healthcheck; the fields it leaves out come from the image.
    fn healthcheck(&mut self, h: &HealthConfig) {
        self.kv("Healthcheck", String::new());
        if h.test.first().is_some_and(|t| t == "NONE") {
            self.kv(" Disabled", "true".into());
            return;
        }
        self.list(" Test", &h.test);
        for (k, v) in [
            (" Interval", h.interval_ns),
            (" Timeout", h.timeout_ns),
            (" Start Period", h.start_period_ns),
            (" Start Interval", h.start_interval_ns),
        ] {
            if v > 0 {
                self.kv(k, nanos(v));
            }
        }
        if h.retries > 0 {
            self.kv(" Retries", h.retries.to_string());
        }
    }

    /// Constraints, preferences and the per-node maximum, if any is set.
    fn placement(&mut self, p: &Placement) {
        if p.constraints.is_empty() && p.preferences.is_empty() && p.max_replicas_per_node == 0 {
            return;
        }
        self.kv("Placement", String::new());
        if !p.constraints.is_empty() {
            self.kv(" Constraints", format!("[{}]", p.constraints.join(" ")));
        }
        if !p.preferences.is_empty() {
            let prefs: Vec<String> = p
                .preferences
                .iter()
                .map(|x| format!("Spread={}", x.strip_prefix("spread=").unwrap_or(x)))
                .collect();
            self.kv(" Preferences", format!("[{}]", prefs.join(" ")));
        }
        if p.max_replicas_per_node > 0 {
            self.kv(" Max Replicas", p.max_replicas_per_node.to_string());
        }
    }

    fn restart_policy(&mut self, r: &RestartPolicy) {
        self.kv("RestartPolicy", String::new());
        self.kv(
            " Condition",
            output::restart_condition_name(r.condition).into(),
        );
        self.kv(" Delay", nanos(r.delay_ns));
        if r.max_attempts > 0 {
            self.kv(" Max Attempts", r.max_attempts.to_string());
        }
    }

    /// Image, command, environment and the process knobs that are set.
    fn container(&mut self, c: &ContainerSpec) {
        self.kv("ContainerSpec", String::new());
        self.kv(" Image", c.image.clone());
        self.labels(" Labels", "  ", &c.labels);
        self.list(" Args", &c.args);
        self.list(" Env", &c.env);
        self.kv(" Grace Period", nanos(c.stop_grace_period_ns));
        self.list(" Entrypoint", &c.command);
        self.text(" Dir", &c.dir);
        self.text(" User", &c.user);
        self.text(" Groups", &c.groups.join(" "));
        self.list(" Hosts", &c.hosts);
        self.text(" Hostname", &c.hostname);
        self.text(" Stop Signal", &c.stop_signal);
        self.flag(" Privileged", c.privileged);
        self.flag(" Read Only", c.read_only);
        self.flag(" Init", c.init);
        let devices: Vec<String> = c.devices.iter().map(device).collect();
        self.text(" Devices", &devices.join(" "));
        let limits: Vec<String> = c
            .ulimits
            .iter()
            .map(|u| format!("{}={}:{}", u.name, u.soft, u.hard))
            .collect();
        self.text(" Ulimits", &limits.join(" "));
        let sorted: BTreeMap<_, _> = c.sysctls.iter().collect();
        let pairs: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.text(" Sysctls", &pairs.join(" "));
    }

    /// Mounts, configs and secrets, as docker's pretty template lists them.
    fn files(&mut self, c: &ContainerSpec) {
        let name_of = |f: &Option<shoal_proto::v1::FileTarget>| {
            f.as_ref().map(|f| f.name.clone()).unwrap_or_default()
        };
        if !c.mounts.is_empty() {
            self.kv("Mounts", String::new());
            for m in &c.mounts {
                self.kv(" Target", m.target.clone());
                self.kv("  Source", m.source.clone());
                self.kv("  ReadOnly", m.read_only.to_string());
                self.kv(
                    "  Type",
                    crate::output::json::mount_type_name(m.r#type).to_string(),
                );
            }
        }
        if !c.configs.is_empty() {
            self.kv("Configs", String::new());
            for r in &c.configs {
                self.kv(" Target", name_of(&r.file));
                self.kv("  Source", r.config_name.clone());
            }
        }
        if !c.secrets.is_empty() {
            self.kv("Secrets", String::new());
            for r in &c.secrets {
                let name = name_of(&r.file);
                let target = if name.starts_with('/') {
                    name
                } else {
                    format!("/run/secrets/{name}")
                };
                self.kv(" Target", target);
                self.kv("  Source", r.secret_name.clone());
            }
        }
    }

    /// Capabilities added and dropped, if any.
    fn capabilities(&mut self, c: &ContainerSpec) {
        if c.capability_add.is_empty() && c.capability_drop.is_empty() {
            return;
        }
        self.kv("Capabilities", String::new());
        self.list(" Add", &c.capability_add);
        self.list(" Drop", &c.capability_drop);
    }

    /// No-new-privileges and a seccomp mode other than the default, if set.
    fn security_options(&mut self, c: &ContainerSpec) {
        let p = c.privileges.clone().unwrap_or_default();
        let seccomp = p.seccomp.map(|sc| sc.mode).unwrap_or_default();
        let custom_seccomp = !matches!(seccomp.as_str(), "" | "default");
        if !p.no_new_privileges && !custom_seccomp {
            return;
        }
        self.kv("Security Options", String::new());
        self.flag(" No New Privileges", p.no_new_privileges);
        if custom_seccomp {
            self.kv(" Seccomp", seccomp);
        }
    }

    fn log_driver(&mut self, d: &Driver) {
        self.kv("Log Driver", String::new());
        self.kv(" Name", d.name.clone());
        if !d.options.is_empty() {
            self.kv(" LogOpts", String::new());
            let sorted: BTreeMap<_, _> = d.options.iter().collect();
            for (k, v) in sorted {
                self.kv(&format!("  {k}"), v.clone());
            }
        }
    }

    /// Reservations and limits, if any is set.
    fn resources(&mut self, res: &ResourceRequirements) {
        let lim = res.limits.unwrap_or_default();
        let rsv = res.reservations.unwrap_or_default();
        let has_limits = lim != Resources::default() || res.pids_limit > 0;
        if rsv == Resources::default() && !has_limits {
            return;
        }
        self.kv("Resources", String::new());
        if rsv != Resources::default() {
            self.kv(" Reservations", String::new());
            self.cpu_and_memory(&rsv);
        }
        if has_limits {
            self.kv(" Limits", String::new());
            self.cpu_and_memory(&lim);
            if res.pids_limit > 0 {
                self.kv("  Pids", res.pids_limit.to_string());
            }
        }
    }

    fn cpu_and_memory(&mut self, r: &Resources) {
        if r.nano_cpus > 0 {
            self.kv("  CPU", format!("{}", r.nano_cpus as f64 / 1e9));
        }
        if r.memory_bytes > 0 {
            self.kv("  Memory", shoal_proto::units::format_bytes(r.memory_bytes));
        }
    }

    /// The published ports, docker's multi-line form.
    fn ports(&mut self, ports: &[PortConfig]) {
        if ports.is_empty() {
            return;
        }
        self.kv("Ports", String::new());
        for p in ports {
            self.0.push_str(&format!(
                " PublishedPort = {}\n  Protocol = {}\n  TargetPort = {}\n  PublishMode = {}\n",
                p.published_port,
                port_protocol(&p.protocol),
                p.target_port,
                port_publish_mode(&p.publish_mode)
            ));
        }
    }
}

/// A duration in nanoseconds as humantime writes it (negative: zero).
fn nanos(ns: i64) -> String {
    humantime::format_duration(Duration::from_nanos(ns.max(0) as u64)).to_string()
}

/// `--device` as the user wrote it: host path, container path, cgroup permissions.
fn device(d: &DeviceMapping) -> String {
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
}
