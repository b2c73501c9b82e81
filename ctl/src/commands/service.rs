//! `shoalctl service create|ls|ps|inspect|update|scale|rm|logs`.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, Result};
use serde_json::json;
use shoal_proto::spec::{endpoint_mode, port_protocol, port_publish_mode, validate_service};
use shoal_proto::v1::{
    ContainerSpec, CreateServiceRequest, DeviceMapping, Driver, EndpointSpec, GetNetworkRequest,
    GetServiceRequest, ListServicesRequest, ListTasksRequest, LogLine, Placement, PortConfig,
    Privileges, RemoveServiceRequest, ResourceRequirements, Resources, RestartPolicy,
    ScaleServiceRequest, SeccompOpts, Service, ServiceLogsRequest, ServiceMode, ServiceSpec,
    ServiceSummary, Task, TaskSpec, Ulimit, UpdateServiceRequest,
};

use super::converge;
use crate::cli::{
    CreateArgs, Format, InspectArgs, LogsArgs, LsArgs, Mode, PsArgs, RestartCondition, RmArgs,
    ScaleArgs, SecurityOpt, UpdateArgs,
};
use crate::client::{status, Control};
use crate::output::{self, json as js, table::Table};

/// Turns `service create` flags into a spec, checked the way the manager will check it.
pub fn build_spec(a: &CreateArgs) -> Result<ServiceSpec> {
    let (mode, replicas) = match (a.mode, a.replicas) {
        (Mode::Global, Some(_)) => {
            return Err(anyhow!("--replicas: cannot be used with --mode global"))
        }
        (Mode::Global, None) => (ServiceMode::ModeGlobal, 0),
        (Mode::Replicated, n) => (ServiceMode::ModeReplicated, n.unwrap_or(1)),
    };
    let condition = match a.restart_condition {
        RestartCondition::Any => shoal_proto::v1::RestartCondition::RestartAny,
        RestartCondition::OnFailure => shoal_proto::v1::RestartCondition::RestartOnFailure,
        RestartCondition::None => shoal_proto::v1::RestartCondition::RestartNone,
    };
    let (capability_add, capability_drop) = effective_cap_add_drop(&a.cap_add, &a.cap_drop);
    let spec = ServiceSpec {
        name: a.name.clone(),
        labels: HashMap::new(),
        mode: mode as i32,
        replicas,
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: a.image.clone(),
                args: a.args.clone(),
                env: a.env.clone(),
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
                ..Default::default()
            }),
            resources: Some(ResourceRequirements {
                limits: Some(Resources {
                    nano_cpus: a.limit_cpu.unwrap_or(0),
                    memory_bytes: a.limit_memory.unwrap_or(0),
                }),
                reservations: Some(Resources {
                    nano_cpus: a.reserve_cpu.unwrap_or(0),
                    memory_bytes: a.reserve_memory.unwrap_or(0),
                }),
                pids_limit: a.limit_pids.unwrap_or(0),
            }),
            restart: Some(RestartPolicy {
                condition: condition as i32,
                delay_ns: a.restart_delay,
                max_attempts: a.restart_max_attempts.unwrap_or(0),
                window_ns: 0,
            }),
            placement: Some(Placement {
                constraints: a.constraint.clone(),
                max_replicas_per_node: a.max_replicas_per_node.unwrap_or(0),
                preferences: a.placement_pref.clone(),
            }),
            networks: a.network.clone(),
            log_driver: log_driver(None, a.log_driver.as_deref(), &a.log_opt),
        }),
        endpoint: Some(EndpointSpec {
            mode: a.endpoint_mode.as_str().to_string(),
            ports: a.publish.clone(),
        }),
    };
    validate_service(&spec)?;
    Ok(spec)
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
fn apply_confinement(
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
        let before = c.devices.len();
        c.devices.retain(|d| d.path_on_host != *host);
        if c.devices.len() == before {
            return Err(anyhow!(
                "--device-rm: service {service} has no device {host}"
            ));
        }
    }
    c.devices = merge_devices(std::mem::take(&mut c.devices), &a.device_add);
    c.privileges = privileges(c.privileges.take(), &a.security_opt)?;
    for g in &a.group_rm {
        let before = c.groups.len();
        c.groups.retain(|x| x != g);
        if c.groups.len() == before {
            return Err(anyhow!("--group-rm: service {service} has no group {g}"));
        }
    }
    for g in &a.group_add {
        if !c.groups.contains(g) {
            c.groups.push(g.clone());
        }
    }
    for name in &a.ulimit_rm {
        let before = c.ulimits.len();
        c.ulimits.retain(|u| !u.name.eq_ignore_ascii_case(name));
        if c.ulimits.len() == before {
            return Err(anyhow!(
                "--ulimit-rm: service {service} has no ulimit {name}"
            ));
        }
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
    let set = |field: &mut String, value: &Option<String>| {
        if let Some(v) = value {
            *field = v.clone();
        }
    };
    set(&mut c.user, &a.user);
    set(&mut c.hostname, &a.hostname);
    set(&mut c.dir, &a.workdir);
    set(&mut c.stop_signal, &a.stop_signal);
    if let Some(e) = &a.entrypoint {
        c.command = e.0.clone();
    }
    *log = log_driver(log.take(), a.log_driver.as_deref(), &a.log_opt);
    Ok(())
}

/// The ID of each network named by `--network-add`/`--network-rm` that the manager knows; the
/// spec stores network IDs, the user types names.
pub type NetworkIds = HashMap<String, String>;

/// Whether an attachment's target is the network the user named.
fn same_network(target: &str, named: &str, ids: &NetworkIds) -> bool {
    target == named || ids.get(named).is_some_and(|id| id == target)
}

/// Applies `service update` flags to a spec (removals before additions, as docker does) and
/// checks the result the way the manager will.
pub fn apply_update(spec: &mut ServiceSpec, a: &UpdateArgs, ids: &NetworkIds) -> Result<()> {
    if let Some(n) = a.replicas {
        if spec.mode == ServiceMode::ModeGlobal as i32 {
            return Err(anyhow!("--replicas: cannot be used with a global service"));
        }
        spec.replicas = n;
    }
    let task = spec.task.get_or_insert_with(Default::default);
    let c = task.container.get_or_insert_with(Default::default);
    if let Some(image) = &a.image {
        c.image = image.clone();
    }
    let key = |e: &str| e.split_once('=').map(|(k, _)| k).unwrap_or(e).to_string();
    for k in &a.env_rm {
        c.env.retain(|e| key(e) != *k);
    }
    for e in &a.env_add {
        c.env.retain(|x| key(x) != key(e));
        c.env.push(e.clone());
    }
    apply_confinement(&spec.name, c, &mut task.log_driver, a)?;
    let placement = task.placement.get_or_insert_with(Default::default);
    for expr in &a.constraint_rm {
        placement.constraints.retain(|x| x != expr);
    }
    for expr in &a.constraint_add {
        if !placement.constraints.contains(expr) {
            placement.constraints.push(expr.clone());
        }
    }
    for name in &a.network_rm {
        let before = task.networks.len();
        task.networks
            .retain(|n| !same_network(&n.target, name, ids));
        if task.networks.len() == before {
            return Err(anyhow!(
                "--network-rm: service {} is not attached to network {name}",
                spec.name
            ));
        }
    }
    for add in &a.network_add {
        if task
            .networks
            .iter()
            .any(|n| same_network(&n.target, &add.target, ids))
        {
            return Err(anyhow!(
                "--network-add: service {} is already attached to network {}",
                spec.name,
                add.target
            ));
        }
        task.networks.push(add.clone());
    }
    let ep = spec.endpoint.get_or_insert_with(Default::default);
    for m in &a.publish_rm {
        let before = ep.ports.len();
        ep.ports.retain(|p| !m.matches(p));
        if ep.ports.len() == before {
            return Err(anyhow!(
                "--publish-rm: service {} publishes no port matching {m}",
                spec.name
            ));
        }
    }
    for add in &a.publish_add {
        // Docker's "add or update": the same published port and protocol is replaced.
        if add.published_port != 0 {
            ep.ports.retain(|p| {
                p.published_port != add.published_port
                    || port_protocol(&p.protocol) != port_protocol(&add.protocol)
            });
        }
        ep.ports.push(add.clone());
    }
    if let Some(mode) = a.endpoint_mode {
        ep.mode = mode.as_str().to_string();
    }
    if ep.mode.is_empty() {
        ep.mode = "vip".into();
    }
    validate_service(spec)?;
    Ok(())
}

/// `service update`: reads the service, applies the flags, sends the new spec, prints the
/// service name and waits until the tasks run the new spec (unless `--detach`).
pub async fn update(c: &mut Control, a: &UpdateArgs) -> Result<()> {
    let svc = get_service(c, &a.service).await?;
    let mut ids = NetworkIds::new();
    for name in a.network_add.iter().map(|n| &n.target).chain(&a.network_rm) {
        match c
            .get_network(GetNetworkRequest {
                name_or_id: name.clone(),
            })
            .await
        {
            Ok(r) => {
                if let Some(n) = r.into_inner().network {
                    ids.insert(name.clone(), n.id);
                }
            }
            // A network that is gone can still be detached by the ID the spec holds.
            Err(s) if s.code() == tonic::Code::NotFound && a.network_rm.contains(name) => {}
            Err(s) => return Err(status(s).context(format!("network {name}"))),
        }
    }
    let mut spec = svc.spec.clone().unwrap_or_default();
    apply_update(&mut spec, a, &ids)?;
    let updated = c
        .update_service(UpdateServiceRequest {
            name_or_id: svc.id.clone(),
            spec: Some(spec),
        })
        .await
        .map_err(status)?
        .into_inner()
        .service
        .ok_or_else(|| anyhow!("the manager answered without the updated service"))?;
    output::print(&format!("{}\n", a.service))?;
    if a.detach {
        return Ok(());
    }
    converge::wait_updated(c, &updated, a.timeout).await
}

/// The ports a service publishes: the allocated ones once the manager filled them in, else
/// those of the spec.
fn published_ports(svc: &Service) -> Vec<PortConfig> {
    match svc.endpoint.as_ref().filter(|e| !e.ports.is_empty()) {
        Some(e) => e.ports.clone(),
        None => svc
            .spec
            .as_ref()
            .and_then(|s| s.endpoint.as_ref())
            .map(|e| e.ports.clone())
            .unwrap_or_default(),
    }
}

/// Docker's PORTS column: ingress-mode ports as `*:8080->80/tcp`, consecutive ports merged
/// into ranges (`*:8080-8081->80-81/tcp`), joined by ", ".
pub fn ports_column(svc: &Service) -> String {
    let mut ports: Vec<PortConfig> = published_ports(svc)
        .into_iter()
        .filter(|p| port_publish_mode(&p.publish_mode) == "ingress" && p.published_port != 0)
        .collect();
    ports.sort_by(|a, b| {
        (port_protocol(&a.protocol), a.published_port)
            .cmp(&(port_protocol(&b.protocol), b.published_port))
    });
    // (protocol, first published, first target, count)
    let mut ranges: Vec<(String, u32, u32, u32)> = Vec::new();
    for p in &ports {
        let proto = port_protocol(&p.protocol).to_string();
        if let Some(last) = ranges.last_mut() {
            if last.0 == proto
                && p.published_port == last.1 + last.3
                && p.target_port == last.2 + last.3
            {
                last.3 += 1;
                continue;
            }
        }
        ranges.push((proto, p.published_port, p.target_port, 1));
    }
    ranges
        .iter()
        .map(|(proto, published, target, n)| {
            if *n == 1 {
                format!("*:{published}->{target}/{proto}")
            } else {
                format!(
                    "*:{published}-{}->{target}-{}/{proto}",
                    published + n - 1,
                    target + n - 1
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `service create`: creates the service, prints its ID, and waits for convergence unless
/// `--detach`.
pub async fn create(c: &mut Control, spec: ServiceSpec, a: &CreateArgs) -> Result<()> {
    let svc = c
        .create_service(CreateServiceRequest { spec: Some(spec) })
        .await
        .map_err(status)?
        .into_inner()
        .service
        .ok_or_else(|| anyhow!("the manager answered without the created service"))?;
    output::print(&format!("{}\n", svc.id))?;
    if a.detach {
        return Ok(());
    }
    converge::wait(c, &svc, a.timeout).await
}

fn spec_name(s: &Service) -> &str {
    s.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")
}

fn image_of(spec: Option<&TaskSpec>) -> &str {
    spec.and_then(|t| t.container.as_ref())
        .map(|c| c.image.as_str())
        .unwrap_or("")
}

/// A `service ls` row: ID, NAME, MODE, REPLICAS, IMAGE, PORTS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    /// Short ID.
    pub id: String,
    /// Service name.
    pub name: String,
    /// "replicated" | "global".
    pub mode: String,
    /// "running/desired".
    pub replicas: String,
    /// Image reference.
    pub image: String,
    /// Published ingress ports, docker's way (`*:8080->80/tcp`).
    pub ports: String,
}

impl ServiceRow {
    /// The row of one service summary.
    pub fn of(sum: &ServiceSummary) -> Self {
        let svc = sum.service.clone().unwrap_or_default();
        let spec = svc.spec.clone().unwrap_or_default();
        ServiceRow {
            id: output::short_id(&svc.id, false).to_string(),
            name: spec.name.clone(),
            mode: output::mode_name(spec.mode).to_string(),
            replicas: format!("{}/{}", sum.running_tasks, sum.desired_tasks),
            image: image_of(spec.task.as_ref()).to_string(),
            ports: ports_column(&svc),
        }
    }

    /// Table cells in column order.
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            self.mode.clone(),
            self.replicas.clone(),
            self.image.clone(),
            self.ports.clone(),
        ]
    }

    /// The `--format json` object.
    pub fn json(&self) -> serde_json::Value {
        json!({"ID": self.id, "Name": self.name, "Mode": self.mode,
               "Replicas": self.replicas, "Image": self.image, "Ports": self.ports})
    }
}

/// `service ls`.
pub async fn ls(c: &mut Control, a: &LsArgs, format: Format) -> Result<()> {
    let mut services = c
        .list_services(ListServicesRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .services;
    services.sort_by(|x, y| {
        let name = |s: &ServiceSummary| s.service.as_ref().map(spec_name).unwrap_or("").to_string();
        name(x).cmp(&name(y))
    });
    let mut out = String::new();
    if a.quiet {
        for s in &services {
            if let Some(svc) = &s.service {
                out.push_str(&svc.id);
                out.push('\n');
            }
        }
        return Ok(output::print(&out)?);
    }
    let rows: Vec<ServiceRow> = services.iter().map(ServiceRow::of).collect();
    match format {
        Format::Json => rows.iter().for_each(|r| out.push_str(&js::line(&r.json()))),
        Format::Table => {
            let mut t = Table::new(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]);
            rows.iter().for_each(|r| t.row(r.cells()));
            out = t.render();
        }
    }
    Ok(output::print(&out)?)
}

/// A `service ps` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    /// Task ID (short unless --no-trunc).
    pub id: String,
    /// "web.1" (or "web.NODEID" for global tasks).
    pub name: String,
    /// True for older tasks of a slot, printed as ` \_ web.1`.
    pub history: bool,
    /// Image reference.
    pub image: String,
    /// Hostname of the node, or empty while unscheduled.
    pub node: String,
    /// "Running", "Shutdown", ...
    pub desired_state: String,
    /// "Running 5 seconds ago".
    pub current_state: String,
    /// The task's error, untruncated.
    pub error: String,
}

impl TaskRow {
    /// Table cells in column order.
    pub fn cells(&self, no_trunc: bool) -> Vec<String> {
        let name = if self.history {
            format!(" \\_ {}", self.name)
        } else {
            self.name.clone()
        };
        vec![
            self.id.clone(),
            name,
            self.image.clone(),
            self.node.clone(),
            self.desired_state.clone(),
            self.current_state.clone(),
            output::task_error(&self.error, no_trunc),
        ]
    }

    /// The `--format json` object.
    pub fn json(&self) -> serde_json::Value {
        json!({"ID": self.id, "Name": self.name, "Image": self.image, "Node": self.node,
               "DesiredState": self.desired_state, "CurrentState": self.current_state,
               "Error": self.error})
    }
}

fn task_name(service_name: &str, t: &Task) -> String {
    if t.slot > 0 {
        format!("{service_name}.{}", t.slot)
    } else {
        format!("{service_name}.{}", t.node_id)
    }
}

/// `service ps` rows: by slot (global: by node), newest task first, older ones as history.
pub fn task_rows(
    service_name: &str,
    tasks: &[Task],
    node_names: &HashMap<String, String>,
    now_ns: i64,
    no_trunc: bool,
) -> Vec<TaskRow> {
    let mut sorted: Vec<&Task> = tasks.iter().collect();
    sorted.sort_by(|x, y| {
        let created = |t: &Task| t.meta.map(|m| m.created_at).unwrap_or_default();
        (x.slot, &x.node_id)
            .cmp(&(y.slot, &y.node_id))
            .then(created(y).cmp(&created(x)))
            .then(y.id.cmp(&x.id))
    });
    let mut rows = Vec::with_capacity(sorted.len());
    let mut prev: Option<String> = None;
    for t in sorted {
        let sname = if t.service_name.is_empty() {
            service_name
        } else {
            &t.service_name
        };
        let name = task_name(sname, t);
        let st = t.status.clone().unwrap_or_default();
        let history = prev.as_deref() == Some(name.as_str());
        rows.push(TaskRow {
            id: output::short_id(&t.id, no_trunc).to_string(),
            name: name.clone(),
            history,
            image: image_of(t.spec.as_ref()).to_string(),
            node: node_names
                .get(&t.node_id)
                .cloned()
                .unwrap_or_else(|| output::short_id(&t.node_id, no_trunc).to_string()),
            desired_state: output::capitalize(&output::task_state_name(t.desired_state)),
            current_state: output::current_state(st.state, st.timestamp, now_ns),
            error: st.err,
        });
        prev = Some(name);
    }
    rows
}

/// Reads one service by name or ID.
pub async fn get_service(c: &mut Control, name_or_id: &str) -> Result<Service> {
    c.get_service(GetServiceRequest {
        name_or_id: name_or_id.to_string(),
    })
    .await
    .map_err(status)?
    .into_inner()
    .service
    .ok_or_else(|| anyhow!("no such service: {name_or_id}"))
}

/// `service ps SERVICE`.
pub async fn ps(c: &mut Control, a: &PsArgs, format: Format) -> Result<()> {
    let svc = get_service(c, &a.service).await?;
    let resp = c
        .list_tasks(ListTasksRequest {
            service: svc.id.clone(),
            node: String::new(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let rows = task_rows(
        spec_name(&svc),
        &resp.tasks,
        &resp.node_names,
        shoal_proto::now_ns(),
        a.no_trunc,
    );
    let mut out = String::new();
    if a.quiet {
        rows.iter()
            .for_each(|r| out.push_str(&format!("{}\n", r.id)));
        return Ok(output::print(&out)?);
    }
    match format {
        Format::Json => rows.iter().for_each(|r| out.push_str(&js::line(&r.json()))),
        Format::Table => {
            let mut t = Table::new(&[
                "ID",
                "NAME",
                "IMAGE",
                "NODE",
                "DESIRED STATE",
                "CURRENT STATE",
                "ERROR",
            ]);
            rows.iter().for_each(|r| t.row(r.cells(a.no_trunc)));
            out = t.render();
        }
    }
    Ok(output::print(&out)?)
}

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

/// `service inspect SERVICE...`: a JSON array of the services found; an error names the others.
pub async fn inspect(c: &mut Control, a: &InspectArgs) -> Result<()> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &a.services {
        match get_service(c, name).await {
            Ok(s) => found.push(s),
            Err(e) => errors.push(format!("{e}")),
        }
    }
    if a.pretty {
        let text: Vec<String> = found.iter().map(pretty).collect();
        if !text.is_empty() {
            output::print(&text.join("\n"))?;
        }
    } else {
        output::print(&js::pretty_array(found.iter().map(js::service).collect()))?;
    }
    fail_if_any(errors)
}

fn fail_if_any(errors: Vec<String>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("{}", errors.join("; ")))
    }
}

/// `service scale SERVICE=N...`: scales each service, then waits for each unless `--detach`.
pub async fn scale(c: &mut Control, a: &ScaleArgs) -> Result<()> {
    let mut errors = Vec::new();
    let mut scaled = Vec::new();
    for (name, replicas) in &a.targets {
        let res = c
            .scale_service(ScaleServiceRequest {
                name_or_id: name.clone(),
                replicas: *replicas,
            })
            .await;
        match res {
            Ok(r) => {
                output::print(&format!("{name} scaled to {replicas}\n"))?;
                if let Some(svc) = r.into_inner().service {
                    scaled.push(svc);
                }
            }
            Err(s) => errors.push(format!("{name}: {}", status(s))),
        }
    }
    if !a.detach {
        for svc in &scaled {
            if let Err(e) = converge::wait(c, svc, a.timeout).await {
                errors.push(crate::error_chain(&e));
            }
        }
    }
    fail_if_any(errors)
}

/// `service rm SERVICE...`: removes each, printing its name; keeps going past failures.
pub async fn rm(c: &mut Control, a: &RmArgs) -> Result<()> {
    let mut errors = Vec::new();
    for name in &a.services {
        let res = c
            .remove_service(RemoveServiceRequest {
                name_or_id: name.clone(),
            })
            .await;
        match res {
            Ok(_) => output::print(&format!("{name}\n"))?,
            Err(s) => errors.push(format!("{name}: {}", status(s))),
        }
    }
    fail_if_any(errors)
}

/// The `web.1.abcdef123456@host1` part of a log line, padded so slot numbers of different widths
/// line up (`slot_width` is the width of the largest slot number).
pub fn log_prefix(
    line: &LogLine,
    service_name: &str,
    hostname: &str,
    slot_width: usize,
    no_trunc: bool,
) -> String {
    let short = output::short_id(&line.task_id, no_trunc);
    let task_name = if line.task_name.is_empty() {
        format!("{service_name}.{short}")
    } else if !line.task_id.is_empty() && line.task_name.ends_with(&line.task_id) {
        let head = &line.task_name[..line.task_name.len() - line.task_id.len()];
        format!("{head}{short}")
    } else {
        line.task_name.clone()
    };
    // "web.12.xxx" -> slot "12"; global tasks have no numeric slot.
    let slot_len = task_name
        .strip_prefix(service_name)
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.split('.').next())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .map(str::len)
        .unwrap_or(slot_width);
    let pad = " ".repeat(slot_width.saturating_sub(slot_len));
    format!("{task_name}@{hostname}{pad}")
}

/// One printed log line, without the trailing newline of the data.
pub fn log_text(prefix: &str, line: &LogLine, timestamps: bool) -> String {
    let data = String::from_utf8_lossy(&line.data);
    let data = data.strip_suffix('\n').unwrap_or(&data);
    let data = data.strip_suffix('\r').unwrap_or(data);
    if timestamps {
        format!("{} {prefix}    | {data}", output::rfc3339(line.timestamp))
    } else {
        format!("{prefix}    | {data}")
    }
}

/// `service logs SERVICE`: streams the tasks' output; stderr lines go to stderr.
pub async fn logs(c: &mut Control, a: &LogsArgs) -> Result<()> {
    let svc = get_service(c, &a.service).await?;
    let name = spec_name(&svc).to_string();
    let tasks = c
        .list_tasks(ListTasksRequest {
            service: svc.id.clone(),
            node: String::new(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut node_names = tasks.node_names;
    let max_slot = tasks
        .tasks
        .iter()
        .map(|t| t.slot)
        .max()
        .unwrap_or(1)
        .max(svc.spec.as_ref().map(|s| s.replicas).unwrap_or(1));
    let slot_width = max_slot.to_string().len();
    let mut stream = c
        .service_logs(ServiceLogsRequest {
            service: svc.id.clone(),
            follow: a.follow,
            tail: a.tail,
            timestamps: a.timestamps,
        })
        .await
        .map_err(status)?
        .into_inner();
    while let Some(resp) = stream.message().await.map_err(status)? {
        for line in &resp.lines {
            if !line.node_id.is_empty() && !node_names.contains_key(&line.node_id) {
                // A task on a node we have not seen yet (follow mode): refresh the names once.
                if let Ok(r) = c
                    .list_tasks(ListTasksRequest {
                        service: svc.id.clone(),
                        node: String::new(),
                    })
                    .await
                {
                    node_names.extend(r.into_inner().node_names);
                }
                node_names
                    .entry(line.node_id.clone())
                    .or_insert_with(|| output::short_id(&line.node_id, false).to_string());
            }
            let host = node_names
                .get(&line.node_id)
                .map(String::as_str)
                .unwrap_or("");
            let prefix = log_prefix(line, &name, host, slot_width, a.no_trunc);
            let text = log_text(&prefix, line, a.timestamps);
            if line.stream == "stderr" {
                let mut err = std::io::stderr().lock();
                writeln!(err, "{text}")?;
            } else {
                output::print(&format!("{text}\n"))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use shoal_proto::v1::{Meta, TaskState, TaskStatus};

    fn create_args(args: &[&str]) -> CreateArgs {
        let cli = crate::cli::Cli::try_parse_from(
            ["shoalctl", "service", "create"].iter().chain(args.iter()),
        )
        .expect("parses");
        match cli.command {
            crate::cli::Command::Service(crate::cli::ServiceCommand::Create(a)) => *a,
            _ => panic!("not create"),
        }
    }

    #[test]
    fn spec_from_flags() {
        let a = create_args(&[
            "--name",
            "web",
            "--replicas",
            "3",
            "--env",
            "A=1",
            "--limit-memory",
            "64M",
            "--limit-cpu",
            "0.5",
            "--limit-pids",
            "100",
            "--reserve-memory",
            "32M",
            "--restart-condition",
            "on-failure",
            "--restart-max-attempts",
            "2",
            "--constraint",
            "node.role==worker",
            "busybox",
            "sleep",
            "3600",
        ]);
        let spec = build_spec(&a).expect("valid");
        assert_eq!(spec.replicas, 3);
        let task = spec.task.expect("task");
        let c = task.container.expect("container");
        assert_eq!(c.image, "busybox");
        assert_eq!(c.args, vec!["sleep", "3600"]);
        assert!(c.command.is_empty());
        assert_eq!(c.env, vec!["A=1"]);
        let res = task.resources.expect("resources");
        assert_eq!(res.limits.expect("limits").memory_bytes, 64 << 20);
        assert_eq!(res.limits.expect("limits").nano_cpus, 500_000_000);
        assert_eq!(res.reservations.expect("rsv").memory_bytes, 32 << 20);
        assert_eq!(res.pids_limit, 100);
        let r = task.restart.expect("restart");
        assert_eq!(r.condition, 1);
        assert_eq!(r.max_attempts, 2);
        assert_eq!(r.delay_ns, 5_000_000_000);
        let p = task.placement.expect("p");
        assert_eq!(p.constraints, vec!["node.role==worker"]);
        assert_eq!(p.max_replicas_per_node, 0);
        assert!(p.preferences.is_empty());
        assert_eq!(c.stop_grace_period_ns, 10_000_000_000);
    }

    #[test]
    fn placement_and_grace_flags() {
        let a = create_args(&[
            "--name",
            "web",
            "--max-replicas-per-node",
            "2",
            "--placement-pref",
            "spread=node.labels.zone",
            "--placement-pref",
            "spread=engine.labels.rack",
            "--stop-grace-period",
            "3s",
            "busybox",
        ]);
        let spec = build_spec(&a).expect("valid");
        let task = spec.task.clone().expect("task");
        let p = task.placement.expect("placement");
        assert_eq!(p.max_replicas_per_node, 2);
        assert_eq!(
            p.preferences,
            vec!["spread=node.labels.zone", "spread=engine.labels.rack"]
        );
        assert_eq!(
            task.container.expect("c").stop_grace_period_ns,
            3_000_000_000
        );
        let svc = Service {
            id: "s1".into(),
            spec: Some(spec),
            ..Default::default()
        };
        let doc = js::service(&svc);
        let t = &doc["Spec"]["TaskTemplate"];
        assert_eq!(t["Placement"]["MaxReplicas"], 2);
        assert_eq!(
            t["Placement"]["Preferences"][0]["Spread"]["SpreadDescriptor"],
            "node.labels.zone"
        );
        assert_eq!(t["ContainerSpec"]["StopGracePeriod"], 3_000_000_000_i64);
        let text = pretty(&svc);
        assert!(
            text.contains(" Preferences:   [Spread=node.labels.zone Spread=engine.labels.rack]\n"),
            "{text}"
        );
        assert!(text.contains(" Max Replicas:  2\n"), "{text}");
        assert!(text.contains(" Grace Period:  3s\n"), "{text}");
    }

    #[test]
    fn spec_errors_name_the_field() {
        let a = create_args(&[
            "--name",
            "x",
            "--mode",
            "global",
            "--replicas",
            "2",
            "busybox",
        ]);
        assert_eq!(
            build_spec(&a).expect_err("global+replicas").to_string(),
            "--replicas: cannot be used with --mode global"
        );
        let a = create_args(&["--name", "x", "--limit-memory", "1k", "busybox"]);
        assert!(build_spec(&a)
            .expect_err("tiny")
            .to_string()
            .starts_with("--limit-memory:"));
        let a = create_args(&["--name", "x", "--constraint", "bogus", "busybox"]);
        assert!(build_spec(&a)
            .expect_err("bad")
            .to_string()
            .starts_with("--constraint:"));
        let a = create_args(&["--name", "g", "--mode", "global", "busybox"]);
        assert_eq!(build_spec(&a).expect("global").replicas, 0);
    }

    fn task(id: &str, slot: u64, created: i64, state: TaskState, desired: TaskState) -> Task {
        Task {
            id: id.into(),
            service_name: "web".into(),
            slot,
            node_id: "node1".into(),
            meta: Some(Meta {
                created_at: created,
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: state as i32,
                timestamp: created,
                ..Default::default()
            }),
            desired_state: desired as i32,
            ..Default::default()
        }
    }

    #[test]
    fn ps_rows_sorted_with_history() {
        const S: i64 = 1_000_000_000;
        let mut failed = task(
            "aaaaaaaaaaaaaaaaaaaa",
            1,
            10 * S,
            TaskState::TaskFailed,
            TaskState::TaskShutdown,
        );
        if let Some(st) = failed.status.as_mut() {
            st.err = "task: non-zero exit (1)".into();
        }
        let tasks = vec![
            task(
                "cccccccccccccccccccc",
                2,
                11 * S,
                TaskState::TaskRunning,
                TaskState::TaskRunning,
            ),
            failed,
            task(
                "bbbbbbbbbbbbbbbbbbbb",
                1,
                20 * S,
                TaskState::TaskRunning,
                TaskState::TaskRunning,
            ),
        ];
        let names: HashMap<String, String> = [("node1".to_string(), "host1".to_string())].into();
        let rows = task_rows("web", &tasks, &names, 25 * S, false);
        let names_col: Vec<String> = rows.iter().map(|r| r.cells(false)[1].clone()).collect();
        assert_eq!(names_col, vec!["web.1", " \\_ web.1", "web.2"]);
        assert_eq!(rows[0].id, "bbbbbbbbbbbb");
        assert_eq!(rows[0].node, "host1");
        assert_eq!(rows[0].desired_state, "Running");
        assert_eq!(rows[0].current_state, "Running 5 seconds ago");
        assert_eq!(rows[1].desired_state, "Shutdown");
        assert_eq!(rows[1].cells(false)[6], "\"task: non-zero exit (1)\"");
        let j = rows[1].json();
        assert_eq!(j["Name"], "web.1");
        assert_eq!(j["Error"], "task: non-zero exit (1)");
        assert_eq!(j["CurrentState"], "Failed 15 seconds ago");
    }

    #[test]
    fn ls_rows() {
        let sum = ServiceSummary {
            service: Some(Service {
                id: "0123456789abcdefghij".into(),
                spec: Some(ServiceSpec {
                    name: "web".into(),
                    replicas: 3,
                    task: Some(TaskSpec {
                        container: Some(ContainerSpec {
                            image: "busybox".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            running_tasks: 2,
            desired_tasks: 3,
        };
        let r = ServiceRow::of(&sum);
        assert_eq!(
            r.cells(),
            vec!["0123456789ab", "web", "replicated", "2/3", "busybox", ""]
        );
        assert_eq!(
            js::line(&r.json()),
            "{\"ID\":\"0123456789ab\",\"Image\":\"busybox\",\"Mode\":\"replicated\",\"Name\":\"web\",\"Ports\":\"\",\"Replicas\":\"2/3\"}\n"
        );
    }

    #[test]
    fn log_lines() {
        let line = LogLine {
            task_id: "abcdefghijklmnopqrstuvwxy".into(),
            task_name: "web.1.abcdefghijklmnopqrstuvwxy".into(),
            node_id: "n1".into(),
            stream: "stdout".into(),
            timestamp: 1_500_000_000_000_000_000,
            data: b"hello\n".to_vec(),
        };
        let p = log_prefix(&line, "web", "host1", 1, false);
        assert_eq!(p, "web.1.abcdefghijkl@host1");
        assert_eq!(
            log_text(&p, &line, false),
            "web.1.abcdefghijkl@host1    | hello"
        );
        assert_eq!(
            log_text(&p, &line, true),
            "2017-07-14T02:40:00.000000000Z web.1.abcdefghijkl@host1    | hello"
        );
        // slot 1 of a service with 10+ replicas gets one more space
        assert_eq!(
            log_prefix(&line, "web", "host1", 2, false),
            "web.1.abcdefghijkl@host1 "
        );
        let bare = LogLine {
            task_name: String::new(),
            ..line.clone()
        };
        assert_eq!(
            log_prefix(&bare, "web", "h", 1, true),
            "web.abcdefghijklmnopqrstuvwxy@h"
        );
    }

    fn update_args(args: &[&str]) -> UpdateArgs {
        let cli = crate::cli::Cli::try_parse_from(
            ["shoalctl", "service", "update"].iter().chain(args.iter()),
        )
        .expect("parses");
        match cli.command {
            crate::cli::Command::Service(crate::cli::ServiceCommand::Update(a)) => *a,
            _ => panic!("not update"),
        }
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

    #[test]
    fn create_with_networks_and_ports() {
        let a = create_args(&[
            "--name",
            "web",
            "--network",
            "front",
            "--network",
            "name=back,alias=api",
            "-p",
            "8080:80",
            "--publish",
            "published=5353,target=53,protocol=udp,mode=host",
            "busybox",
        ]);
        let spec = build_spec(&a).expect("valid");
        let nets = &spec.task.as_ref().expect("task").networks;
        assert_eq!(nets.len(), 2);
        assert_eq!(nets[0].target, "front");
        assert_eq!(
            (nets[1].target.as_str(), nets[1].aliases.clone()),
            ("back", vec!["api".to_string()])
        );
        let ep = spec.endpoint.clone().expect("endpoint");
        assert_eq!(ep.mode, "vip");
        assert_eq!(
            ep.ports,
            vec![
                port(8080, 80, "tcp", "ingress"),
                port(5353, 53, "udp", "host")
            ]
        );
        let svc = Service {
            spec: Some(spec),
            ..Default::default()
        };
        let doc = js::service(&svc);
        assert_eq!(
            doc["Spec"]["TaskTemplate"]["Networks"],
            json!([{"Target": "front"}, {"Target": "back", "Aliases": ["api"]}])
        );
        assert_eq!(
            doc["Spec"]["EndpointSpec"],
            json!({"Mode": "vip", "Ports": [
                {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"},
                {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 5353, "PublishMode": "host"},
            ]})
        );
        assert!(doc.get("Endpoint").is_none());
        assert_eq!(ports_column(&svc), "*:8080->80/tcp");
        let text = pretty(&svc);
        assert!(text.contains("Networks:       front back\n"), "{text}");
        assert!(text.contains("Endpoint Mode:  vip\n"), "{text}");
        assert!(
            text.contains(" PublishedPort = 5353\n  Protocol = udp\n"),
            "{text}"
        );

        for (args, want) in [
            (&["--name", "w", "-p", "8080:80", "-p", "8080:90", "i"][..], "--publish: published port 8080/tcp is given twice"),
            (&["--name", "w", "-p", "8080:0", "i"], "--publish: target port 0 is out of range (1-65535)"),
            (&["--name", "w", "--endpoint-mode", "dnsrr", "-p", "8080:80", "i"], "--endpoint-mode: dnsrr cannot serve the ingress-mode port 8080/tcp (publish it with mode=host, or use vip)"),
            (&["--name", "w", "--network", "host", "--network", "front", "i"], "--network: the host network cannot be combined with other networks"),
            (&["--name", "w", "--network", "a", "--network", "a", "i"], "--network: the service is attached to network \"a\" twice"),
        ] {
            let e = build_spec(&create_args(args)).expect_err("refused");
            assert_eq!(e.to_string(), want, "{args:?}");
        }
    }

    #[test]
    fn ports_column_like_docker() {
        let svc = |ports: Vec<PortConfig>, allocated: Option<Vec<PortConfig>>| Service {
            spec: Some(ServiceSpec {
                endpoint: Some(EndpointSpec {
                    mode: "vip".into(),
                    ports,
                }),
                ..Default::default()
            }),
            endpoint: allocated.map(|ports| shoal_proto::v1::Endpoint {
                ports,
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = svc(
            vec![
                port(8081, 81, "tcp", "ingress"),
                port(8080, 80, "tcp", "ingress"),
                port(53, 53, "udp", "ingress"),
                port(9000, 90, "tcp", "host"),
                port(8083, 83, "tcp", "ingress"),
            ],
            None,
        );
        assert_eq!(
            ports_column(&s),
            "*:8080-8081->80-81/tcp, *:8083->83/tcp, *:53->53/udp"
        );
        // the allocated ports win: a published port 0 was filled in by the manager
        let s = svc(
            vec![port(0, 80, "tcp", "ingress")],
            Some(vec![port(30000, 80, "tcp", "ingress")]),
        );
        assert_eq!(ports_column(&s), "*:30000->80/tcp");
        assert_eq!(
            ports_column(&svc(vec![port(0, 80, "tcp", "ingress")], None)),
            ""
        );
    }

    fn web_spec() -> ServiceSpec {
        let mut spec = build_spec(&create_args(&[
            "--name",
            "web",
            "--network",
            "front",
            "-p",
            "8080:80",
            "-p",
            "8080:80/udp",
            "-e",
            "A=1",
            "-e",
            "B=2",
            "--constraint",
            "node.role==worker",
            "busybox",
        ]))
        .expect("valid");
        // the manager stores network IDs
        if let Some(t) = spec.task.as_mut() {
            t.networks[0].target = "frontid".into();
        }
        spec
    }

    #[test]
    fn update_applies_flags() {
        let ids: NetworkIds = [
            ("front".to_string(), "frontid".to_string()),
            ("back".to_string(), "backid".to_string()),
        ]
        .into();
        let mut spec = web_spec();
        let a = update_args(&[
            "--image",
            "nginx",
            "--replicas",
            "4",
            "--env-rm",
            "A",
            "--env-add",
            "B=3",
            "--env-add",
            "C=4",
            "--constraint-rm",
            "node.role==worker",
            "--constraint-add",
            "node.labels.zone==a",
            "--network-rm",
            "front",
            "--network-add",
            "name=back,alias=api",
            "--publish-rm",
            "8080/udp",
            "--publish-add",
            "9090:90",
            "--publish-add",
            "8080:81",
            "web",
        ]);
        apply_update(&mut spec, &a, &ids).expect("applies");
        assert_eq!(spec.replicas, 4);
        let task = spec.task.clone().expect("task");
        let c = task.container.expect("c");
        assert_eq!(c.image, "nginx");
        assert_eq!(c.env, vec!["B=3", "C=4"]);
        assert_eq!(
            task.placement.expect("p").constraints,
            vec!["node.labels.zone==a"]
        );
        assert_eq!(task.networks.len(), 1);
        assert_eq!(task.networks[0].target, "back");
        assert_eq!(task.networks[0].aliases, vec!["api"]);
        let ep = spec.endpoint.clone().expect("ep");
        assert_eq!(
            ep.ports,
            vec![
                port(9090, 90, "tcp", "ingress"),
                port(8080, 81, "tcp", "ingress")
            ]
        );

        let mut spec = web_spec();
        apply_update(
            &mut spec,
            &update_args(&["--publish-rm", "8080", "--endpoint-mode", "dnsrr", "web"]),
            &ids,
        )
        .expect("removes both protocols");
        assert!(spec.endpoint.as_ref().expect("ep").ports.is_empty());
        assert_eq!(spec.endpoint.as_ref().expect("ep").mode, "dnsrr");

        for (args, want) in [
            (&["--network-add", "front", "web"][..], "--network-add: service web is already attached to network front"),
            (&["--network-rm", "back", "web"], "--network-rm: service web is not attached to network back"),
            (&["--publish-rm", "9999", "web"], "--publish-rm: service web publishes no port matching published=9999"),
            (&["--endpoint-mode", "dnsrr", "web"], "--endpoint-mode: dnsrr cannot serve the ingress-mode port 8080/tcp (publish it with mode=host, or use vip)"),
            (&["--network-add", "host", "web"], "--network: the host network cannot be combined with other networks"),
            (&["--image", "", "web"], "image: an image is required (e.g. busybox:latest)"),
        ] {
            let mut spec = web_spec();
            let e = apply_update(&mut spec, &update_args(args), &ids).expect_err("refused");
            assert_eq!(e.to_string(), want, "{args:?}");
        }
        let mut global = web_spec();
        global.mode = ServiceMode::ModeGlobal as i32;
        global.replicas = 0;
        let e = apply_update(&mut global, &update_args(&["--replicas", "2", "web"]), &ids)
            .expect_err("global");
        assert_eq!(
            e.to_string(),
            "--replicas: cannot be used with a global service"
        );
        // a network gone from the manager is still removed by the ID the spec holds
        let mut spec = web_spec();
        apply_update(
            &mut spec,
            &update_args(&["--network-rm", "frontid", "web"]),
            &NetworkIds::new(),
        )
        .expect("by id");
        assert!(spec.task.expect("t").networks.is_empty());
    }

    #[test]
    fn endpoint_document() {
        let svc = Service {
            id: "s1".into(),
            spec: Some(web_spec()),
            endpoint: Some(shoal_proto::v1::Endpoint {
                spec: web_spec().endpoint,
                ports: vec![port(8080, 80, "tcp", "ingress")],
                virtual_ips: vec![shoal_proto::v1::VirtualIp {
                    network_id: "frontid".into(),
                    addr: "10.1.0.2/24".into(),
                }],
            }),
            ..Default::default()
        };
        let doc = js::service(&svc);
        let ep = &doc["Endpoint"];
        assert_eq!(ep["Spec"]["Mode"], "vip");
        assert_eq!(ep["Spec"]["Ports"][1]["Protocol"], "udp");
        assert_eq!(
            ep["Ports"],
            json!([{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}])
        );
        assert_eq!(
            ep["VirtualIPs"],
            json!([{"NetworkID": "frontid", "Addr": "10.1.0.2/24"}])
        );
    }

    #[test]
    fn pretty_inspect() {
        let a = create_args(&["--name", "web", "--limit-memory", "64M", "busybox"]);
        let svc = Service {
            id: "s1".into(),
            spec: Some(build_spec(&a).expect("valid")),
            ..Default::default()
        };
        let text = pretty(&svc);
        assert!(text.contains("Name:           web\n"), "{text}");
        assert!(text.contains(" Replicas:      1\n"));
        assert!(text.contains("  Memory:       64MiB\n"));
    }
}

#[cfg(test)]
mod confinement_tests {
    use super::*;
    use clap::Parser;

    fn create_args(args: &[&str]) -> CreateArgs {
        let cli = crate::cli::Cli::try_parse_from(
            ["shoalctl", "service", "create", "--name", "web"]
                .iter()
                .chain(args.iter())
                .chain(["busybox"].iter()),
        )
        .expect("parses");
        match cli.command {
            crate::cli::Command::Service(crate::cli::ServiceCommand::Create(a)) => *a,
            _ => panic!("not create"),
        }
    }

    fn update_args(args: &[&str]) -> UpdateArgs {
        let cli = crate::cli::Cli::try_parse_from(
            ["shoalctl", "service", "update"]
                .iter()
                .chain(args.iter())
                .chain(["web"].iter()),
        )
        .expect("parses");
        match cli.command {
            crate::cli::Command::Service(crate::cli::ServiceCommand::Update(a)) => *a,
            _ => panic!("not update"),
        }
    }

    fn container(spec: &ServiceSpec) -> ContainerSpec {
        spec.task
            .as_ref()
            .and_then(|t| t.container.clone())
            .expect("container")
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A file under the temp dir, unique to this test process, removed on drop.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str, body: &[u8]) -> Self {
            let path = std::env::temp_dir().join(format!("shoalctl-{}-{name}", std::process::id()));
            std::fs::write(&path, body).expect("write temp file");
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().expect("utf-8 temp path")
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn create_sends_every_knob() {
        let profile = TempFile::new("create.json", br#"{"defaultAction":"SCMP_ACT_ERRNO"}"#);
        let seccomp = format!("seccomp={}", profile.path());
        let spec = build_spec(&create_args(&[
            "--cap-add",
            "net_admin",
            "--cap-add",
            "CHOWN",
            "--cap-drop",
            "chown",
            "--cap-drop",
            "mknod",
            "--cap-drop",
            "CAP_MKNOD",
            "--device",
            "/dev/fuse",
            "--device",
            "/dev/sda:/dev/xvda:r",
            "--security-opt",
            "no-new-privileges",
            "--security-opt",
            &seccomp,
            "--read-only",
            "-u",
            "1000:100",
            "--group-add",
            "audio",
            "--group-add",
            "audio",
            "--ulimit",
            "nofile=10:20",
            "--ulimit",
            "nofile=1024:2048",
            "--sysctl",
            "net.core.somaxconn=1024",
            "--init",
            "--hostname",
            "box",
            "-w",
            "/srv",
            "--entrypoint",
            "/bin/sh -c",
            "--stop-signal",
            "SIGQUIT",
            "--log-opt",
            "max-size=1m",
        ]))
        .expect("valid");
        let c = container(&spec);
        // adding wins over dropping the same capability; names are normalized and sorted
        assert_eq!(c.capability_add, strings(&["CAP_CHOWN", "CAP_NET_ADMIN"]));
        assert_eq!(c.capability_drop, strings(&["CAP_MKNOD"]));
        assert_eq!(c.devices.len(), 2);
        assert_eq!(c.devices[1].path_in_container, "/dev/xvda");
        let p = c.privileges.clone().expect("privileges");
        assert!(p.no_new_privileges);
        let sc = p.seccomp.expect("seccomp");
        assert_eq!(sc.mode, "custom");
        assert_eq!(sc.profile, br#"{"defaultAction":"SCMP_ACT_ERRNO"}"#);
        assert!(c.read_only && c.init && !c.privileged);
        assert_eq!(c.user, "1000:100");
        assert_eq!(c.groups, strings(&["audio"]));
        assert_eq!(
            c.ulimits,
            vec![Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048
            }]
        );
        assert_eq!(
            c.sysctls.get("net.core.somaxconn").map(String::as_str),
            Some("1024")
        );
        assert_eq!(c.hostname, "box");
        assert_eq!(c.dir, "/srv");
        assert_eq!(c.command, strings(&["/bin/sh", "-c"]));
        assert_eq!(c.stop_signal, "SIGQUIT");
        let log = spec.task.as_ref().and_then(|t| t.log_driver.clone());
        assert_eq!(
            log,
            Some(Driver {
                name: "json-file".into(),
                options: [("max-size".to_string(), "1m".to_string())].into(),
            })
        );

        // nothing asked: nothing set, so the defaults apply on the node
        let plain = build_spec(&create_args(&[])).expect("valid");
        let c = container(&plain);
        assert!(c.privileges.is_none() && c.capability_add.is_empty() && c.command.is_empty());
        assert!(plain.task.as_ref().expect("task").log_driver.is_none());
        let all = build_spec(&create_args(&[
            "--cap-add",
            "ALL",
            "--cap-add",
            "NET_ADMIN",
        ]))
        .expect("valid");
        assert_eq!(container(&all).capability_add, strings(&["ALL"]));
    }

    #[test]
    fn create_refuses_what_the_manager_would() {
        let not_object = TempFile::new("array.json", b"[1, 2]");
        let not_json = TempFile::new("text.json", b"syscalls: all");
        let bad_action = TempFile::new(
            "action.json",
            br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOPE"}]}"#,
        );
        let missing =
            std::env::temp_dir().join(format!("shoalctl-{}-none.json", std::process::id()));
        let seccomp = |p: &str| format!("seccomp={p}");
        let cases: Vec<(Vec<String>, String)> = vec![
            (
                strings(&["--security-opt", &seccomp(&missing.display().to_string())]),
                format!(
                    "--security-opt: cannot read seccomp profile {}: No such file or directory (os error 2)",
                    missing.display()
                ),
            ),
            (
                strings(&["--security-opt", &seccomp(not_object.path())]),
                format!("--security-opt: seccomp profile {} is not a JSON object", not_object.path()),
            ),
            (
                strings(&["--security-opt", &seccomp(not_json.path())]),
                format!("--security-opt: seccomp profile {} is not JSON: expected value at line 1 column 1", not_json.path()),
            ),
            (
                strings(&["--security-opt", &seccomp(bad_action.path())]),
                format!("--security-opt: seccomp profile {}: syscalls[0].action: unknown action \"SCMP_ACT_NOPE\"", bad_action.path()),
            ),
            (strings(&["--workdir", "srv"]), "--workdir: \"srv\" must be an absolute path".into()),
            (strings(&["--user", "a:b:c"]), "--user: \"a:b:c\" is not USER[:GROUP] (names or numbers, e.g. 1000:1000 or nobody)".into()),
            (strings(&["--hostname", "a b"]), "--hostname: \"a b\" is not a hostname (at most 64 letters, digits, '-', '_' and '.')".into()),
            (strings(&["--group-add", "a b"]), "--group-add: \"a b\" is not a group name or number".into()),
            (strings(&["--device", "/dev/a:/dev/x", "--device", "/dev/b:/dev/x"]), "".into()),
        ];
        for (args, want) in cases {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let got = build_spec(&create_args(&refs))
                .map(|_| ())
                .map_err(|e| e.to_string());
            if want.is_empty() {
                // a second device for the same container path replaces the first
                assert!(got.is_ok(), "{args:?}: {got:?}");
            } else {
                assert_eq!(got, Err(want), "{args:?}");
            }
        }
    }

    #[test]
    fn capabilities_update_like_docker() {
        #[rustfmt::skip]
        let cases: [[&[&str]; 6]; 7] = [
            // (add, drop, --cap-add, --cap-drop, add after, drop after)
            [&[], &[], &["CAP_NET_ADMIN"], &[], &["CAP_NET_ADMIN"], &[]],
            [&[], &["CAP_NET_ADMIN"], &["CAP_NET_ADMIN"], &[], &["CAP_NET_ADMIN"], &[]],
            [&["CAP_NET_ADMIN"], &[], &[], &["CAP_NET_ADMIN"], &[], &["CAP_NET_ADMIN"]],
            [&[], &[], &["CAP_CHOWN"], &["CAP_CHOWN"], &["CAP_CHOWN"], &[]],
            [&["CAP_NET_ADMIN", "CAP_SYS_TIME"], &["CAP_MKNOD"], &["RESET"], &[], &[], &["CAP_MKNOD"]],
            [&["CAP_NET_ADMIN"], &["CAP_MKNOD"], &["RESET", "CAP_BPF"], &["RESET"], &["CAP_BPF"], &[]],
            // drop everything but keep what was added: only NET_ADMIN remains in effect
            [&["CAP_NET_ADMIN"], &["CAP_MKNOD"], &[], &["ALL"], &["CAP_NET_ADMIN"], &["ALL"]],
        ];
        for [add, drop, to_add, to_drop, want_add, want_drop] in cases {
            let (mut a, mut d) = (strings(add), strings(drop));
            update_capabilities(&mut a, &mut d, &strings(to_add), &strings(to_drop));
            assert_eq!(
                (a, d),
                (strings(want_add), strings(want_drop)),
                "{to_add:?} {to_drop:?}"
            );
        }
    }

    #[test]
    fn update_changes_the_knobs() {
        let mut spec = build_spec(&create_args(&[
            "--cap-drop",
            "NET_RAW",
            "--device",
            "/dev/fuse",
            "--device",
            "/dev/sda",
            "--security-opt",
            "seccomp=unconfined",
            "--group-add",
            "audio",
            "--ulimit",
            "nofile=1024",
            "--ulimit",
            "core=0",
            "--sysctl",
            "net.core.somaxconn=1024",
            "--user",
            "1000",
            "--entrypoint",
            "/bin/app",
            "--stop-signal",
            "SIGQUIT",
            "--hostname",
            "old",
            "--log-opt",
            "max-size=1m",
        ]))
        .expect("valid");
        let profile = TempFile::new("update.json", br#"{"defaultAction":"SCMP_ACT_ALLOW"}"#);
        let seccomp = format!("seccomp={}", profile.path());
        let a = update_args(&[
            "--cap-add",
            "net_raw",
            "--cap-drop",
            "SYS_CHROOT",
            "--privileged",
            "--read-only",
            "--init",
            "--device-rm",
            "/dev/sda",
            "--device",
            "/dev/fuse:/dev/fuse:r",
            "--device-add",
            "/dev/kvm",
            "--security-opt",
            &seccomp,
            "--security-opt",
            "no-new-privileges",
            "--group-rm",
            "audio",
            "--group-add",
            "video",
            "--ulimit-rm",
            "core",
            "--ulimit",
            "nofile=1:2",
            "--sysctl-rm",
            "net.core.somaxconn",
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "--user",
            "",
            "--entrypoint",
            "",
            "--stop-signal",
            "TERM",
            "--hostname",
            "new",
            "--workdir",
            "/w",
            "--log-opt",
            "max-file=5",
        ]);
        apply_update(&mut spec, &a, &NetworkIds::new()).expect("applies");
        let c = container(&spec);
        assert_eq!(c.capability_add, strings(&["CAP_NET_RAW"]));
        assert_eq!(c.capability_drop, strings(&["CAP_SYS_CHROOT"]));
        assert!(c.privileged && c.read_only && c.init);
        let devices: Vec<(&str, &str)> = c
            .devices
            .iter()
            .map(|d| (d.path_on_host.as_str(), d.cgroup_permissions.as_str()))
            .collect();
        assert_eq!(devices, vec![("/dev/fuse", "r"), ("/dev/kvm", "rwm")]);
        let p = c.privileges.clone().expect("privileges");
        assert!(p.no_new_privileges);
        assert_eq!(
            p.seccomp.map(|s| (s.mode, s.profile)),
            Some((
                "custom".into(),
                br#"{"defaultAction":"SCMP_ACT_ALLOW"}"#.to_vec()
            ))
        );
        assert_eq!(c.groups, strings(&["video"]));
        assert_eq!(
            c.ulimits,
            vec![Ulimit {
                name: "nofile".into(),
                soft: 1,
                hard: 2
            }]
        );
        assert_eq!(c.sysctls.len(), 1);
        assert_eq!(
            c.sysctls.get("net.ipv4.ip_forward").map(String::as_str),
            Some("1")
        );
        assert_eq!(
            (c.user.as_str(), c.dir.as_str(), c.hostname.as_str()),
            ("", "/w", "new")
        );
        assert!(
            c.command.is_empty(),
            "an empty --entrypoint resets to the image's"
        );
        assert_eq!(c.stop_signal, "TERM");
        let log = spec
            .task
            .as_ref()
            .and_then(|t| t.log_driver.clone())
            .expect("log driver");
        assert_eq!(log.options.get("max-size").map(String::as_str), Some("1m"));
        assert_eq!(log.options.get("max-file").map(String::as_str), Some("5"));

        // undo with explicit false values
        apply_update(
            &mut spec,
            &update_args(&[
                "--privileged=false",
                "--read-only=false",
                "--init=false",
                "--security-opt",
                "seccomp=default",
            ]),
            &NetworkIds::new(),
        )
        .expect("applies");
        let c = container(&spec);
        assert!(!c.privileged && !c.read_only && !c.init);
        assert_eq!(
            c.privileges.and_then(|p| p.seccomp).map(|s| s.mode),
            Some("default".into())
        );

        for (args, want) in [
            (
                &["--device-rm", "/dev/nope"][..],
                "--device-rm: service web has no device /dev/nope",
            ),
            (
                &["--group-rm", "wheel"],
                "--group-rm: service web has no group wheel",
            ),
            (
                &["--ulimit-rm", "nproc"],
                "--ulimit-rm: service web has no ulimit nproc",
            ),
            (
                &["--sysctl-rm", "net.x"],
                "--sysctl-rm: service web has no sysctl net.x",
            ),
            (
                &["--workdir", "rel"],
                "--workdir: \"rel\" must be an absolute path",
            ),
        ] {
            let mut s = spec.clone();
            let e =
                apply_update(&mut s, &update_args(args), &NetworkIds::new()).expect_err("refused");
            assert_eq!(e.to_string(), want, "{args:?}");
        }
    }

    #[test]
    fn pretty_shows_the_non_defaults() {
        let spec = build_spec(&create_args(&[
            "--cap-add",
            "NET_ADMIN",
            "--cap-drop",
            "ALL",
            "--device",
            "/dev/fuse",
            "--security-opt",
            "no-new-privileges",
            "--security-opt",
            "seccomp=unconfined",
            "--read-only",
            "--user",
            "nobody",
            "--ulimit",
            "nofile=1024:2048",
            "--sysctl",
            "net.core.somaxconn=1024",
            "--init",
            "--entrypoint",
            "/bin/sh -c",
            "--stop-signal",
            "SIGQUIT",
            "--log-opt",
            "max-file=2",
        ]))
        .expect("valid");
        let text = pretty(&Service {
            id: "s1".into(),
            spec: Some(spec),
            ..Default::default()
        });
        for line in [
            " Entrypoint:    /bin/sh -c\n",
            " User:          nobody\n",
            " Stop Signal:   SIGQUIT\n",
            " Read Only:     true\n",
            " Init:          true\n",
            " Devices:       /dev/fuse:/dev/fuse:rwm\n",
            " Ulimits:       nofile=1024:2048\n",
            " Sysctls:       net.core.somaxconn=1024\n",
            "Capabilities:\n Add:           CAP_NET_ADMIN\n Drop:          ALL\n",
            "Security Options:\n No New Privileges: true\n Seccomp:       unconfined\n",
            "Log Driver:\n Name:          json-file\n LogOpts:\n  max-file:     2\n",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
        let plain = pretty(&Service {
            spec: Some(build_spec(&create_args(&[])).expect("valid")),
            ..Default::default()
        });
        for absent in [
            "Capabilities",
            "Security Options",
            "Log Driver",
            "Privileged",
            "Init",
        ] {
            assert!(!plain.contains(absent), "{absent} in\n{plain}");
        }
    }
}
