//! Docker-shaped JSON: `service inspect` / `node inspect` / `network inspect` documents and
//! one-object-per-line rows.
//!
//! Field names follow `docker service inspect` / `docker node inspect`; like docker, optional fields
//! that are empty or zero are left out, except the ones scripts usually read (Image, Mode,
//! RestartPolicy, Labels).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use shoal_proto::spec::{endpoint_mode, port_protocol, port_publish_mode};
use shoal_proto::v1::{
    EndpointSpec, Network, Node, NodeRole, PortConfig, Privileges, Resources, Service, ServiceMode,
    ServiceSpec,
};
use shoal_proto::wire::NetworkDriver;

use super::rollout;
use super::{availability_name, node_state_name, restart_condition_name, rfc3339};

/// One JSON object on one line (the `--format json` form of a table row).
pub fn line(value: &Value) -> String {
    let mut s = value.to_string();
    s.push('\n');
    s
}

/// A JSON array, indented like docker's inspect output.
pub fn pretty_array(values: Vec<Value>) -> String {
    let mut s =
        serde_json::to_string_pretty(&Value::Array(values)).unwrap_or_else(|_| "[]".to_string());
    s.push('\n');
    s
}

/// Inserts `key: value` unless the value is empty/zero (docker's `omitempty`).
fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(n) => n.as_i64() == Some(0) || n.as_u64() == Some(0),
        Value::Bool(b) => !b,
    };
    if !empty {
        map.insert(key.to_string(), value);
    }
}

fn resources(r: Option<&Resources>, pids: Option<i64>) -> Value {
    let mut m = Map::new();
    if let Some(r) = r {
        put(&mut m, "NanoCPUs", json!(r.nano_cpus));
        put(&mut m, "MemoryBytes", json!(r.memory_bytes));
    }
    if let Some(p) = pids {
        put(&mut m, "Pids", json!(p));
    }
    Value::Object(m)
}

fn labels(map: &std::collections::HashMap<String, String>) -> Value {
    let sorted: std::collections::BTreeMap<_, _> = map.iter().collect();
    json!(sorted)
}

/// Docker's PortConfig: `{Protocol, TargetPort, PublishedPort, PublishMode}` (Name if set).
fn port(p: &PortConfig) -> Value {
    let mut m = Map::new();
    put(&mut m, "Name", json!(p.name));
    m.insert("Protocol".into(), json!(port_protocol(&p.protocol)));
    m.insert("TargetPort".into(), json!(p.target_port));
    m.insert("PublishedPort".into(), json!(p.published_port));
    m.insert(
        "PublishMode".into(),
        json!(port_publish_mode(&p.publish_mode)),
    );
    Value::Object(m)
}

/// Docker's EndpointSpec: `{Mode, Ports}` (Ports left out when none).
fn endpoint_spec(ep: &EndpointSpec) -> Value {
    let mut m = Map::new();
    m.insert("Mode".into(), json!(endpoint_mode(&ep.mode)));
    let ports: Vec<Value> = ep.ports.iter().map(port).collect();
    put(&mut m, "Ports", json!(ports));
    Value::Object(m)
}

/// Docker's Privileges: `{Seccomp: {Mode, Profile}, NoNewPrivileges}`; the profile's bytes in
/// base64, as Go marshals a `[]byte`.
fn privileges(p: &Privileges) -> Value {
    let mut m = Map::new();
    if let Some(sc) = &p.seccomp {
        let mut seccomp = Map::new();
        put(&mut seccomp, "Mode", json!(sc.mode));
        put(&mut seccomp, "Profile", json!(BASE64.encode(&sc.profile)));
        put(&mut m, "Seccomp", Value::Object(seccomp));
    }
    put(&mut m, "NoNewPrivileges", json!(p.no_new_privileges));
    Value::Object(m)
}

/// `docker service inspect` document of one service.
pub fn service(svc: &Service) -> Value {
    let meta = svc.meta.unwrap_or_default();
    let spec = svc.spec.clone().unwrap_or_default();
    let mut doc = json!({
        "ID": svc.id,
        "Version": {"Index": meta.version},
        "CreatedAt": rfc3339(meta.created_at),
        "UpdatedAt": rfc3339(meta.updated_at),
        "Spec": spec_doc(&spec),
    });
    let Some(obj) = doc.as_object_mut() else {
        return doc;
    };
    if let Some(prev) = &svc.previous_spec {
        obj.insert("PreviousSpec".into(), spec_doc(prev));
    }
    if let Some(ep) = &svc.endpoint {
        let mut m = Map::new();
        m.insert(
            "Spec".into(),
            endpoint_spec(&ep.spec.clone().unwrap_or_default()),
        );
        let ports: Vec<Value> = ep.ports.iter().map(port).collect();
        put(&mut m, "Ports", json!(ports));
        let vips: Vec<Value> = ep
            .virtual_ips
            .iter()
            .map(|v| json!({"NetworkID": v.network_id, "Addr": v.addr}))
            .collect();
        put(&mut m, "VirtualIPs", json!(vips));
        obj.insert("Endpoint".into(), Value::Object(m));
    }
    if let Some(st) = &svc.update_status {
        obj.insert("UpdateStatus".into(), rollout::update_status_json(st));
    }
    doc
}

/// docker's `SecretReferenceFileTarget` / `ConfigReferenceFileTarget` (Mode as a number).
fn file_target(f: Option<&shoal_proto::v1::FileTarget>) -> Value {
    let f = f.cloned().unwrap_or_default();
    json!({"Name": f.name, "UID": f.uid, "GID": f.gid, "Mode": f.mode})
}

/// "bind" | "volume" | "tmpfs".
pub fn mount_type_name(t: i32) -> &'static str {
    match shoal_proto::v1::MountType::try_from(t) {
        Ok(shoal_proto::v1::MountType::MountBind) => "bind",
        Ok(shoal_proto::v1::MountType::MountTmpfs) => "tmpfs",
        _ => "volume",
    }
}

/// docker's `mount.Mount`.
fn mount(m: &shoal_proto::v1::Mount) -> Value {
    let mut doc = Map::new();
    doc.insert("Type".into(), json!(mount_type_name(m.r#type)));
    put(&mut doc, "Source", json!(m.source));
    doc.insert("Target".into(), json!(m.target));
    put(&mut doc, "ReadOnly", json!(m.read_only));
    if let Some(b) = &m.bind_options {
        doc.insert("BindOptions".into(), json!({"Propagation": b.propagation}));
    }
    if let Some(v) = &m.volume_options {
        let mut vo = Map::new();
        put(&mut vo, "NoCopy", json!(v.no_copy));
        put(&mut vo, "Labels", labels(&v.labels));
        if let Some(d) = &v.driver_config {
            vo.insert(
                "DriverConfig".into(),
                json!({"Name": d.name, "Options": d.options}),
            );
        }
        doc.insert("VolumeOptions".into(), Value::Object(vo));
    }
    if let Some(t) = &m.tmpfs_options {
        let mut to = Map::new();
        put(&mut to, "SizeBytes", json!(t.size_bytes));
        put(&mut to, "Mode", json!(t.mode));
        doc.insert("TmpfsOptions".into(), Value::Object(to));
    }
    Value::Object(doc)
}

/// A service spec as docker's `Spec` (also `PreviousSpec`).
fn spec_doc(spec: &ServiceSpec) -> Value {
    let task = spec.task.clone().unwrap_or_default();
    let c = task.container.clone().unwrap_or_default();

    let mut container = Map::new();
    container.insert("Image".into(), json!(c.image));
    put(&mut container, "Labels", labels(&c.labels));
    put(&mut container, "Command", json!(c.command));
    put(&mut container, "Args", json!(c.args));
    put(&mut container, "Env", json!(c.env));
    put(&mut container, "Dir", json!(c.dir));
    put(&mut container, "User", json!(c.user));
    put(&mut container, "Hostname", json!(c.hostname));
    put(
        &mut container,
        "StopGracePeriod",
        json!(c.stop_grace_period_ns),
    );
    put(&mut container, "Groups", json!(c.groups));
    if let Some(p) = &c.privileges {
        put(&mut container, "Privileges", privileges(p));
    }
    put(&mut container, "CapabilityAdd", json!(c.capability_add));
    put(&mut container, "CapabilityDrop", json!(c.capability_drop));
    put(&mut container, "Privileged", json!(c.privileged));
    let devices: Vec<Value> = c
        .devices
        .iter()
        .map(|d| {
            json!({"PathOnHost": d.path_on_host, "PathInContainer": d.path_in_container,
                   "CgroupPermissions": d.cgroup_permissions})
        })
        .collect();
    put(&mut container, "Devices", json!(devices));
    put(&mut container, "ReadOnly", json!(c.read_only));
    let ulimits: Vec<Value> = c
        .ulimits
        .iter()
        .map(|u| json!({"Name": u.name, "Soft": u.soft, "Hard": u.hard}))
        .collect();
    put(&mut container, "Ulimits", json!(ulimits));
    put(&mut container, "Sysctls", labels(&c.sysctls));
    put(&mut container, "Init", json!(c.init));
    put(&mut container, "StopSignal", json!(c.stop_signal));
    if let Some(h) = &c.healthcheck {
        container.insert("Healthcheck".into(), rollout::healthcheck_json(h));
    }
    let secrets: Vec<Value> = c
        .secrets
        .iter()
        .map(|s| {
            json!({"File": file_target(s.file.as_ref()), "SecretID": s.secret_id,
                        "SecretName": s.secret_name})
        })
        .collect();
    put(&mut container, "Secrets", json!(secrets));
    let configs: Vec<Value> = c
        .configs
        .iter()
        .map(|s| {
            json!({"File": file_target(s.file.as_ref()), "ConfigID": s.config_id,
                        "ConfigName": s.config_name})
        })
        .collect();
    put(&mut container, "Configs", json!(configs));
    let mounts: Vec<Value> = c.mounts.iter().map(mount).collect();
    put(&mut container, "Mounts", json!(mounts));

    let res = task.resources.unwrap_or_default();
    let mut resources_doc = Map::new();
    resources_doc.insert(
        "Limits".into(),
        resources(res.limits.as_ref(), Some(res.pids_limit)),
    );
    resources_doc.insert(
        "Reservations".into(),
        resources(res.reservations.as_ref(), None),
    );

    let restart = task.restart.unwrap_or_default();
    let placement = task.placement.clone().unwrap_or_default();
    let mut placement_doc = Map::new();
    put(
        &mut placement_doc,
        "Constraints",
        json!(placement.constraints),
    );
    put(
        &mut placement_doc,
        "MaxReplicas",
        json!(placement.max_replicas_per_node),
    );
    let prefs: Vec<Value> = placement
        .preferences
        .iter()
        .map(|p| {
            let target = p.strip_prefix("spread=").unwrap_or(p);
            json!({"Spread": {"SpreadDescriptor": target}})
        })
        .collect();
    put(&mut placement_doc, "Preferences", json!(prefs));

    let mode = if spec.mode == ServiceMode::ModeGlobal as i32 {
        json!({"Global": {}})
    } else {
        json!({"Replicated": {"Replicas": spec.replicas}})
    };

    let mut template = Map::new();
    template.insert("ContainerSpec".into(), Value::Object(container));
    template.insert("Resources".into(), Value::Object(resources_doc));
    template.insert(
        "RestartPolicy".into(),
        json!({
            "Condition": restart_condition_name(restart.condition),
            "Delay": restart.delay_ns,
            "MaxAttempts": restart.max_attempts,
        }),
    );
    template.insert("Placement".into(), Value::Object(placement_doc));
    let networks: Vec<Value> = task
        .networks
        .iter()
        .map(|n| {
            let mut m = Map::new();
            m.insert("Target".into(), json!(n.target));
            put(&mut m, "Aliases", json!(n.aliases));
            Value::Object(m)
        })
        .collect();
    put(&mut template, "Networks", json!(networks));
    if let Some(d) = &task.log_driver {
        let mut m = Map::new();
        m.insert("Name".into(), json!(d.name));
        put(&mut m, "Options", labels(&d.options));
        template.insert("LogDriver".into(), Value::Object(m));
    }

    json!({
        "Name": spec.name,
        "Labels": labels(&spec.labels),
        "TaskTemplate": template,
        "Mode": mode,
        "UpdateConfig": rollout::update_config_json(spec.update.as_ref()),
        "RollbackConfig": rollout::update_config_json(spec.rollback.as_ref()),
        "EndpointSpec": endpoint_spec(&spec.endpoint.clone().unwrap_or_default()),
    })
}

/// "swarm" for overlay networks (they span the cluster), "local" for the others.
pub fn network_scope(driver: &str) -> &'static str {
    if driver.parse() == Ok(NetworkDriver::Overlay) {
        "swarm"
    } else {
        "local"
    }
}

/// One service on a network, for `network inspect`'s Services: its name and, in vip mode, its
/// virtual IP there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkService {
    /// Service name.
    pub name: String,
    /// The VIP without its prefix length ("10.1.0.2"), or empty.
    pub vip: String,
}

/// `docker network inspect` document of one network.
pub fn network(n: &Network, services: &[NetworkService]) -> Value {
    let meta = n.meta.unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    let (subnet, gateway) = n.addressing();
    let mut config = Vec::new();
    if !subnet.is_empty() {
        let mut c = Map::new();
        c.insert("Subnet".into(), json!(subnet));
        put(&mut c, "Gateway", json!(gateway));
        config.push(Value::Object(c));
    }
    let mut options = n.docker_options();
    if spec.encrypted {
        options.entry("encrypted".into()).or_default();
    }
    let services_doc: Map<String, Value> = services
        .iter()
        .map(|s| {
            let mut m = Map::new();
            put(&mut m, "VIP", json!(s.vip));
            (s.name.clone(), Value::Object(m))
        })
        .collect();
    json!({
        "Name": spec.name,
        "Id": n.id,
        "Created": rfc3339(meta.created_at),
        "Scope": network_scope(&spec.driver),
        "Driver": spec.driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": {}, "Config": config},
        "Internal": false,
        "Attachable": spec.attachable,
        "Ingress": spec.ingress,
        "Options": labels(&options),
        "Labels": labels(&spec.labels),
        "Services": services_doc,
    })
}

/// `docker node inspect` document of one node.
pub fn node(n: &Node) -> Value {
    let meta = n.meta.unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    let desc = n.description.clone().unwrap_or_default();
    let status = n.status.clone().unwrap_or_default();
    let role = if spec.role == NodeRole::RoleManager as i32 {
        "manager"
    } else {
        "worker"
    };
    let mut status_doc = Map::new();
    status_doc.insert("State".into(), json!(node_state_name(status.state)));
    put(&mut status_doc, "Message", json!(status.message));
    put(&mut status_doc, "Addr", json!(status.addr));

    let mut doc = json!({
        "ID": n.id,
        "Version": {"Index": meta.version},
        "CreatedAt": rfc3339(meta.created_at),
        "UpdatedAt": rfc3339(meta.updated_at),
        "Spec": {
            "Labels": labels(&spec.labels),
            "Role": role,
            "Availability": availability_name(spec.availability),
        },
        "Description": {
            "Hostname": desc.hostname,
            "Platform": {"Architecture": desc.architecture, "OS": desc.os},
            "Resources": resources(desc.resources.as_ref(), None),
            "Engine": {"EngineVersion": desc.agent_version, "Labels": labels(&desc.engine_labels)},
        },
        "Status": status_doc,
    });
    if let (Some(ms), Some(obj)) = (&n.manager_status, doc.as_object_mut()) {
        let mut m = Map::new();
        put(&mut m, "Leader", json!(ms.leader));
        m.insert("Reachability".into(), json!(ms.reachability));
        m.insert("Addr".into(), json!(ms.addr));
        obj.insert("ManagerStatus".into(), Value::Object(m));
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{
        ContainerSpec, ManagerStatus, Meta, NodeDescription, NodeSpec, NodeStatus, Placement,
        ResourceRequirements, RestartPolicy, ServiceSpec, TaskSpec,
    };

    fn svc() -> Service {
        Service {
            id: "s1".into(),
            meta: Some(Meta {
                version: 7,
                created_at: 1_500_000_000_000_000_000,
                updated_at: 1_500_000_001_000_000_000,
            }),
            spec: Some(ServiceSpec {
                name: "web".into(),
                replicas: 3,
                task: Some(TaskSpec {
                    container: Some(ContainerSpec {
                        image: "busybox".into(),
                        args: vec!["sleep".into(), "3600".into()],
                        ..Default::default()
                    }),
                    resources: Some(ResourceRequirements {
                        limits: Some(Resources {
                            nano_cpus: 500_000_000,
                            memory_bytes: 64 << 20,
                        }),
                        reservations: None,
                        pids_limit: 100,
                    }),
                    restart: Some(RestartPolicy {
                        condition: 1,
                        delay_ns: 5_000_000_000,
                        max_attempts: 3,
                        window_ns: 0,
                    }),
                    placement: Some(Placement {
                        constraints: vec!["node.role==worker".into()],
                        ..Default::default()
                    }),
                    networks: Vec::new(),
                    log_driver: None,
                    force_update: 0,
                }),
                ..Default::default()
            }),
            spec_version: 1,
            ..Default::default()
        }
    }

    #[test]
    fn service_document() {
        let v = service(&svc());
        assert_eq!(v["ID"], "s1");
        assert_eq!(v["Version"]["Index"], 7);
        assert_eq!(v["CreatedAt"], "2017-07-14T02:40:00.000000000Z");
        let t = &v["Spec"]["TaskTemplate"];
        assert_eq!(t["ContainerSpec"]["Image"], "busybox");
        assert_eq!(t["ContainerSpec"]["Args"], json!(["sleep", "3600"]));
        assert!(t["ContainerSpec"].get("Command").is_none());
        assert_eq!(t["Resources"]["Limits"]["MemoryBytes"], 64 << 20);
        assert_eq!(t["Resources"]["Limits"]["NanoCPUs"], 500_000_000);
        assert_eq!(t["Resources"]["Limits"]["Pids"], 100);
        assert_eq!(t["Resources"]["Reservations"], json!({}));
        assert_eq!(t["RestartPolicy"]["Condition"], "on-failure");
        assert_eq!(t["RestartPolicy"]["Delay"], 5_000_000_000_i64);
        assert_eq!(t["RestartPolicy"]["MaxAttempts"], 3);
        assert_eq!(t["Placement"]["Constraints"], json!(["node.role==worker"]));
        assert_eq!(v["Spec"]["Mode"], json!({"Replicated": {"Replicas": 3}}));
        assert_eq!(v["Spec"]["Labels"], json!({}));

        let mut g = svc();
        if let Some(s) = g.spec.as_mut() {
            s.mode = ServiceMode::ModeGlobal as i32;
        }
        assert_eq!(service(&g)["Spec"]["Mode"], json!({"Global": {}}));
    }

    #[test]
    fn confinement_fields_use_dockers_names() {
        use shoal_proto::v1::{DeviceMapping, Driver, SeccompOpts, Ulimit};
        let mut s = svc();
        if let Some(t) = s.spec.as_mut().and_then(|x| x.task.as_mut()) {
            t.log_driver = Some(Driver {
                name: "json-file".into(),
                options: [("max-size".to_string(), "1m".to_string())].into(),
            });
            if let Some(c) = t.container.as_mut() {
                c.command = vec!["/bin/sh".into(), "-c".into()];
                c.dir = "/srv".into();
                c.user = "1000:1000".into();
                c.hostname = "box".into();
                c.groups = vec!["audio".into()];
                c.privileges = Some(Privileges {
                    seccomp: Some(SeccompOpts {
                        mode: "custom".into(),
                        profile: b"{}".to_vec(),
                    }),
                    no_new_privileges: true,
                });
                c.capability_add = vec!["CAP_NET_ADMIN".into()];
                c.capability_drop = vec!["ALL".into()];
                c.privileged = true;
                c.devices = vec![DeviceMapping {
                    path_on_host: "/dev/fuse".into(),
                    path_in_container: "/dev/fuse".into(),
                    cgroup_permissions: "rwm".into(),
                }];
                c.read_only = true;
                c.ulimits = vec![Ulimit {
                    name: "nofile".into(),
                    soft: 1024,
                    hard: 2048,
                }];
                c.sysctls = [("net.core.somaxconn".to_string(), "1024".to_string())].into();
                c.init = true;
                c.stop_signal = "SIGQUIT".into();
            }
        }
        let v = service(&s);
        let t = &v["Spec"]["TaskTemplate"];
        assert_eq!(
            t["ContainerSpec"],
            json!({
                "Image": "busybox",
                "Command": ["/bin/sh", "-c"],
                "Args": ["sleep", "3600"],
                "Dir": "/srv",
                "User": "1000:1000",
                "Hostname": "box",
                "Groups": ["audio"],
                "Privileges": {
                    // base64 of the profile's bytes, as Go marshals a []byte
                    "Seccomp": {"Mode": "custom", "Profile": "e30="},
                    "NoNewPrivileges": true
                },
                "CapabilityAdd": ["CAP_NET_ADMIN"],
                "CapabilityDrop": ["ALL"],
                "Privileged": true,
                "Devices": [{"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse",
                             "CgroupPermissions": "rwm"}],
                "ReadOnly": true,
                "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}],
                "Sysctls": {"net.core.somaxconn": "1024"},
                "Init": true,
                "StopSignal": "SIGQUIT"
            })
        );
        assert_eq!(
            t["LogDriver"],
            json!({"Name": "json-file", "Options": {"max-size": "1m"}})
        );

        // defaults are left out, as docker's omitempty does
        let plain = service(&svc());
        let c = &plain["Spec"]["TaskTemplate"]["ContainerSpec"];
        for absent in [
            "Privileges",
            "CapabilityAdd",
            "Privileged",
            "Devices",
            "ReadOnly",
            "Ulimits",
            "Sysctls",
            "Init",
            "StopSignal",
            "Groups",
            "User",
            "Hostname",
            "Dir",
        ] {
            assert!(c.get(absent).is_none(), "{absent}");
        }
        assert!(plain["Spec"]["TaskTemplate"].get("LogDriver").is_none());
        let unconfined = Privileges {
            seccomp: Some(SeccompOpts {
                mode: "unconfined".into(),
                profile: Vec::new(),
            }),
            no_new_privileges: false,
        };
        assert_eq!(
            privileges(&unconfined),
            json!({"Seccomp": {"Mode": "unconfined"}})
        );
    }

    #[test]
    fn node_document() {
        let n = Node {
            id: "n1".into(),
            spec: Some(NodeSpec {
                role: NodeRole::RoleManager as i32,
                availability: 2,
                labels: [("zone".to_string(), "east".to_string())].into(),
            }),
            description: Some(NodeDescription {
                hostname: "host1".into(),
                os: "linux".into(),
                architecture: "x86_64".into(),
                resources: Some(Resources {
                    nano_cpus: 2_000_000_000,
                    memory_bytes: 1 << 30,
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: 2,
                addr: "10.0.0.1".into(),
                ..Default::default()
            }),
            manager_status: Some(ManagerStatus {
                raft_id: 1,
                addr: "10.0.0.1:4242".into(),
                leader: true,
                reachability: "reachable".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = node(&n);
        assert_eq!(v["Spec"]["Role"], "manager");
        assert_eq!(v["Spec"]["Availability"], "drain");
        assert_eq!(v["Spec"]["Labels"]["zone"], "east");
        assert_eq!(v["Description"]["Hostname"], "host1");
        assert_eq!(v["Description"]["Platform"]["OS"], "linux");
        assert_eq!(v["Description"]["Resources"]["MemoryBytes"], 1 << 30);
        assert_eq!(v["Status"]["State"], "ready");
        assert!(v["Status"].get("Message").is_none());
        assert_eq!(v["ManagerStatus"]["Leader"], true);
        assert_eq!(v["ManagerStatus"]["Reachability"], "reachable");

        let worker = Node {
            id: "n2".into(),
            ..Default::default()
        };
        assert!(node(&worker).get("ManagerStatus").is_none());
        assert_eq!(node(&worker)["Spec"]["Role"], "worker");
    }

    #[test]
    fn rows_are_single_lines() {
        assert_eq!(line(&json!({"ID": "x"})), "{\"ID\":\"x\"}\n");
        assert!(pretty_array(vec![]).starts_with("[]"));
    }

    #[test]
    fn secrets_configs_and_mounts_in_dockers_shape() {
        let mut s = svc();
        let c = s
            .spec
            .as_mut()
            .and_then(|x| x.task.as_mut())
            .and_then(|t| t.container.as_mut())
            .expect("container");
        c.secrets.push(shoal_proto::v1::SecretReference {
            secret_id: "sid".into(),
            secret_name: "pw".into(),
            file: Some(shoal_proto::v1::FileTarget {
                name: "pw".into(),
                uid: "0".into(),
                gid: "0".into(),
                mode: 0o444,
            }),
        });
        c.mounts.push(shoal_proto::v1::Mount {
            r#type: shoal_proto::v1::MountType::MountTmpfs as i32,
            target: "/tmp".into(),
            tmpfs_options: Some(shoal_proto::v1::TmpfsOptions {
                size_bytes: 1024,
                mode: 0,
            }),
            ..Default::default()
        });
        let v = service(&s);
        let cs = &v["Spec"]["TaskTemplate"]["ContainerSpec"];
        assert_eq!(
            cs["Secrets"],
            json!([{"File": {"Name": "pw", "UID": "0", "GID": "0", "Mode": 292},
                    "SecretID": "sid", "SecretName": "pw"}])
        );
        assert_eq!(
            cs["Mounts"],
            json!([{"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"SizeBytes": 1024}}])
        );
        assert!(cs.get("Configs").is_none());
    }
}
