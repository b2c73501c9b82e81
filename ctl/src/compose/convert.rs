//! The loaded compose model turned into what `stack deploy` writes, named and labelled as
//! `docker stack deploy` does (`cli/compose/convert`): services `STACK_SERVICE`, networks
//! `STACK_NET` (`STACK_default` for services that name none), secrets and configs
//! `STACK_NAME` unless `name:` or `external`, everything labelled with the stack.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use shoal_proto::spec::{validate_network, validate_service, LOG_DRIVER};
use shoal_proto::units::{parse_bytes, parse_nano_cpus};
use shoal_proto::v1::{
    update_config, BindOptions, ConfigReference, ConfigSpec, ContainerSpec, DependencyCondition,
    DeviceMapping, Driver, EndpointSpec, FileTarget, HealthConfig, Mount, MountType,
    NetworkAttachmentConfig, NetworkSpec, Placement, PortConfig, ResourceRequirements, Resources,
    RestartCondition, RestartPolicy, SecretReference, SecretSpec, ServiceDependency, ServiceMode,
    ServiceSpec, TaskSpec, TmpfsOptions, Ulimit, UpdateConfig, VolumeOptions,
};

use super::model::{
    external_name, Command, ComposeFile, FileObjectDef, FileRef, Healthcheck, MapOrList, PortEntry,
    ResourceDef, Scalar, Service, UlimitDef, UpdateDef, VolumeEntry, VolumeLong,
};
use super::{Resource, StackPlan};

/// The label docker puts on everything a stack creates.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// The label holding the image as the file wrote it.
pub const IMAGE_LABEL: &str = "com.docker.stack.image";

/// A conversion error: where in the file, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A field's value cannot be used.
    #[error("{path}: {reason}")]
    Field {
        /// "services.web.ports[1]"
        path: String,
        /// Why.
        reason: String,
    },
    /// The spec built for a service is refused by the same checks the manager runs.
    #[error("service {service}: {source}")]
    Spec {
        /// The service's short name.
        service: String,
        /// The check that failed.
        source: shoal_proto::spec::SpecError,
    },
    /// The stack name cannot prefix object names.
    #[error("invalid stack name {0:?}: it must not be blank")]
    StackName(String),
}

fn field(path: impl Into<String>, reason: impl Into<String>) -> ConvertError {
    ConvertError::Field {
        path: path.into(),
        reason: reason.into(),
    }
}

/// What `load` resolved from disk and the environment, so that planning is pure.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// The project directory: relative paths are resolved against it.
    pub dir: PathBuf,
    /// The files as named, for errors ("stack.yml", "a.yml+b.yml").
    pub files: String,
    /// `$HOME`, for `~/` in bind sources.
    pub home: Option<String>,
    /// Each service's final environment (`env_file`, then `environment`), `K=V`, sorted.
    pub env: BTreeMap<String, Vec<String>>,
    /// Secret contents by their key in the file (external ones absent).
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// Config contents by their key in the file.
    pub configs: BTreeMap<String, Vec<u8>>,
}

/// Builds the plan for `stack` from the model.
pub fn plan(model: &ComposeFile, res: &Resolved, stack: &str) -> Result<StackPlan, ConvertError> {
    if stack.trim().is_empty() {
        return Err(ConvertError::StackName(stack.to_string()));
    }
    let mut warnings = Vec::new();

    let (networks, network_names) = networks(model, stack, &mut warnings)?;

    let (secrets, secret_names) = file_objects(
        "secrets",
        &model.secrets,
        &res.secrets,
        stack,
        |name, labels, data| SecretSpec { name, labels, data },
    )?;
    let (configs, config_names) = file_objects(
        "configs",
        &model.configs,
        &res.configs,
        stack,
        |name, labels, data| ConfigSpec { name, labels, data },
    )?;

    let names = Names {
        stack,
        networks: &network_names,
        secrets: &secret_names,
        configs: &config_names,
    };
    let mut services = Vec::new();
    for (name, svc) in &model.services {
        let env = res.env.get(name).cloned().unwrap_or_default();
        let spec = service(model, res, &names, name, svc, env, &mut warnings)?;
        validate_service(&spec).map_err(|source| ConvertError::Spec {
            service: name.clone(),
            source,
        })?;
        services.push(spec);
    }
    Ok(StackPlan {
        stack: stack.to_string(),
        networks,
        secrets,
        configs,
        services,
        warnings,
    })
}

/// The full names of the file's objects, by their keys in the file.
struct Names<'a> {
    stack: &'a str,
    networks: &'a HashMap<String, String>,
    secrets: &'a HashMap<String, String>,
    configs: &'a HashMap<String, String>,
}

/// The networks services use (docker creates no others), and their full names by key.
#[allow(clippy::type_complexity)]
fn networks(
    model: &ComposeFile,
    stack: &str,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Resource<NetworkSpec>>, HashMap<String, String>), ConvertError> {
    let mut used: Vec<String> = Vec::new();
    for (name, svc) in &model.services {
        let keys: Vec<String> = match &svc.networks {
            Some(n) if !n.entries().is_empty() => n.entries().into_iter().map(|e| e.0).collect(),
            _ => vec!["default".to_string()],
        };
        for key in keys {
            if key != "default" && !model.networks.contains_key(&key) {
                return Err(field(
                    format!("services.{name}.networks"),
                    format!("service {name:?} references network {key:?}, which is not declared"),
                ));
            }
            if !used.contains(&key) {
                used.push(key);
            }
        }
    }
    used.sort();
    let mut out = Vec::new();
    let mut names = HashMap::new();
    for key in used {
        let def = model
            .networks
            .get(&key)
            .cloned()
            .flatten()
            .unwrap_or_default();
        if let Some(name) = external_name(def.external.as_ref(), def.name.as_deref(), &key) {
            names.insert(key, name.clone());
            out.push(Resource::External(name));
            continue;
        }
        let name = def.name.clone().unwrap_or_else(|| format!("{stack}_{key}"));
        if def.internal.is_some_and(|b| b.0) {
            warnings.push(format!(
                "network {key}: `internal` is not supported; the network is not internal"
            ));
        }
        let options: HashMap<String, String> = def
            .driver_opts
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_ref().map(|s| s.0.clone()).unwrap_or_default(),
                )
            })
            .collect();
        let ipam = def.ipam.as_ref().and_then(|i| i.config.first());
        let spec = NetworkSpec {
            name: name.clone(),
            driver: def.driver.clone().unwrap_or_else(|| "overlay".into()),
            subnet: ipam.and_then(|c| c.subnet.clone()).unwrap_or_default(),
            gateway: ipam.and_then(|c| c.gateway.clone()).unwrap_or_default(),
            // docker: the key's presence turns encryption on, whatever its value.
            encrypted: def.driver_opts.contains_key("encrypted"),
            attachable: def.attachable.is_some_and(|b| b.0),
            ingress: false,
            labels: labels_with_namespace(def.labels.as_ref(), stack),
            options,
        };
        validate_network(&spec).map_err(|e| field(format!("networks.{key}"), e.to_string()))?;
        names.insert(key, name);
        out.push(Resource::Create(spec));
    }
    Ok((out, names))
}

/// Secrets or configs to create or find, and the name each key of the file stands for.
type FileObjects<S> = (Vec<Resource<S>>, HashMap<String, String>);

/// The stack's secrets or configs (`section`), each created as STACK_KEY (or its `name:`) with
/// its content, or external; and the name each key stands for.
fn file_objects<S>(
    section: &str,
    defs: &BTreeMap<String, FileObjectDef>,
    contents: &BTreeMap<String, Vec<u8>>,
    stack: &str,
    spec: impl Fn(String, HashMap<String, String>, Vec<u8>) -> S,
) -> Result<FileObjects<S>, ConvertError> {
    let mut objects = Vec::new();
    let mut names = HashMap::new();
    for (key, def) in defs {
        let path = format!("{section}.{key}");
        match external_name(def.external.as_ref(), def.name.as_deref(), key) {
            Some(name) => {
                names.insert(key.clone(), name.clone());
                objects.push(Resource::External(name));
            }
            None => {
                let name = def.name.clone().unwrap_or_else(|| format!("{stack}_{key}"));
                let data = contents
                    .get(key)
                    .cloned()
                    .ok_or_else(|| field(&path, "no content (file, environment or content)"))?;
                names.insert(key.clone(), name.clone());
                objects.push(Resource::Create(spec(
                    name,
                    labels_with_namespace(def.labels.as_ref(), stack),
                    data,
                )));
            }
        }
    }
    Ok((objects, names))
}

/// A map-or-list of labels plus the stack's namespace label.
fn labels_with_namespace(labels: Option<&MapOrList>, stack: &str) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = labels
        .map(|l| {
            l.entries()
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    out.insert(NAMESPACE_LABEL.into(), stack.into());
    out
}

#[allow(clippy::too_many_arguments)]
fn service(
    model: &ComposeFile,
    res: &Resolved,
    names: &Names,
    name: &str,
    svc: &Service,
    env: Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<ServiceSpec, ConvertError> {
    let p = |k: &str| format!("services.{name}.{k}");
    let image = svc.image.clone().unwrap_or_default();
    let deploy = svc.deploy.clone().unwrap_or_default();

    let mut labels = labels_with_namespace(deploy.labels.as_ref(), names.stack);
    labels.insert(IMAGE_LABEL.into(), image.clone());

    let (mode, replicas) = match deploy.mode.as_deref().unwrap_or("replicated") {
        "replicated" => (
            ServiceMode::ModeReplicated,
            deploy.replicas.map_or(1, |r| r.0),
        ),
        "global" => {
            if deploy.replicas.is_some() {
                return Err(field(
                    p("deploy.replicas"),
                    "replicas can only be used with replicated or replicated-job mode",
                ));
            }
            (ServiceMode::ModeGlobal, 0)
        }
        other => {
            return Err(field(
                p("deploy.mode"),
                format!("unsupported mode {other:?} (replicated or global)"),
            ))
        }
    };

    let container = ContainerSpec {
        image,
        // The service-level `labels` are the containers' (docker's ContainerSpec.Labels), with
        // the stack's namespace label as docker adds it; `deploy.labels` are the service's.
        labels: labels_with_namespace(svc.labels.as_ref(), names.stack),
        command: command(svc.entrypoint.as_ref(), &p("entrypoint"))?,
        args: command(svc.command.as_ref(), &p("command"))?,
        env,
        dir: svc.working_dir.clone().unwrap_or_default(),
        user: svc.user.as_ref().map(|u| u.0.clone()).unwrap_or_default(),
        hostname: svc.hostname.clone().unwrap_or_default(),
        stop_grace_period_ns: opt_duration(
            svc.stop_grace_period.as_deref(),
            &p("stop_grace_period"),
        )?,
        groups: svc.group_add.iter().map(|g| g.0.clone()).collect(),
        capability_add: svc.cap_add.clone(),
        capability_drop: svc.cap_drop.clone(),
        privileged: svc.privileged.is_some_and(|b| b.0),
        devices: svc
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| device(d, &p(&format!("devices[{i}]"))))
            .collect::<Result<_, _>>()?,
        read_only: svc.read_only.is_some_and(|b| b.0),
        ulimits: svc
            .ulimits
            .iter()
            .map(|(n, u)| {
                let (soft, hard) = match u {
                    UlimitDef::Single(v) => (v.0, v.0),
                    UlimitDef::Pair { soft, hard } => (soft.0, hard.0),
                };
                Ulimit {
                    name: n.clone(),
                    soft,
                    hard,
                }
            })
            .collect(),
        sysctls: svc
            .sysctls
            .as_ref()
            .map(|s| {
                s.entries()
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default(),
        hosts: extra_hosts(svc.extra_hosts.as_ref(), &p("extra_hosts"))?,
        init: svc.init.is_some_and(|b| b.0),
        stop_signal: svc.stop_signal.clone().unwrap_or_default(),
        healthcheck: svc
            .healthcheck
            .as_ref()
            .map(|h| healthcheck(h, &p("healthcheck")))
            .transpose()?,
        secrets: secret_refs(&svc.secrets, names.secrets, &p("secrets"))?,
        configs: config_refs(&svc.configs, names.configs, &p("configs"))?,
        mounts: mounts(model, res, names.stack, name, svc)?,
        ..Default::default()
    };

    let networks = svc
        .networks
        .as_ref()
        .map(|n| n.entries())
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| vec![("default".to_string(), Vec::new())])
        .into_iter()
        .map(|(key, extra)| {
            let target = names
                .networks
                .get(&key)
                .cloned()
                .unwrap_or_else(|| format!("{}_{key}", names.stack));
            // docker adds the short name as an alias on user-defined networks only.
            let mut aliases = if matches!(target.as_str(), "host" | "bridge" | "none") {
                Vec::new()
            } else {
                vec![name.to_string()]
            };
            for a in extra {
                if !aliases.contains(&a) {
                    aliases.push(a);
                }
            }
            NetworkAttachmentConfig { target, aliases }
        })
        .collect::<Vec<_>>();
    // docker sorts the attachments by target, so reordering the file changes nothing.
    let mut networks = networks;
    networks.sort_by(|a, b| a.target.cmp(&b.target));

    let placement = deploy.placement.clone().unwrap_or_default();
    let mut ports = Vec::new();
    for (i, port) in svc.ports.iter().enumerate() {
        ports.extend(port_configs(
            port,
            &p(&format!("ports[{i}]")),
            name,
            warnings,
        )?);
    }
    // docker sorts by published port so that reordering the file changes nothing.
    ports.sort_by_key(|p| p.published_port);

    let mut spec = ServiceSpec {
        name: format!("{}_{name}", names.stack),
        labels,
        mode: mode as i32,
        replicas,
        task: Some(TaskSpec {
            container: Some(container),
            resources: resources(deploy.resources.as_ref(), &p("deploy.resources"))?,
            restart: restart(svc, &p(""))?,
            placement: Some(Placement {
                constraints: placement.constraints.clone(),
                max_replicas_per_node: placement.max_replicas_per_node.map_or(0, |m| m.0),
                preferences: placement
                    .preferences
                    .iter()
                    .map(|pr| format!("spread={}", pr.spread))
                    .collect(),
                // Any platform (the docker CLI fills these from the registry).
                platforms: Vec::new(),
            }),
            networks,
            log_driver: log_driver(svc, name, warnings),
            force_update: 0,
        }),
        endpoint: Some(EndpointSpec {
            mode: deploy.endpoint_mode.clone().unwrap_or_else(|| "vip".into()),
            ports,
        }),
        update: deploy
            .update_config
            .as_ref()
            .map(|u| update_config(u, &p("deploy.update_config"), true))
            .transpose()?,
        rollback: deploy
            .rollback_config
            .as_ref()
            .map(|u| update_config(u, &p("deploy.rollback_config"), false))
            .transpose()?,
        depends_on: Vec::new(),
    };
    if let Some(deps) = &svc.depends_on {
        for (dep, cond) in deps.entries() {
            if !model.services.contains_key(&dep) {
                return Err(field(
                    p("depends_on"),
                    format!("service {name:?} depends on undefined service {dep:?}"),
                ));
            }
            let condition = match cond.as_str() {
                "service_started" => DependencyCondition::DependsStarted,
                "service_healthy" => DependencyCondition::DependsHealthy,
                "service_completed_successfully" => DependencyCondition::DependsCompleted,
                other => {
                    return Err(field(
                        p(&format!("depends_on.{dep}.condition")),
                        format!("unknown condition {other:?} (service_started, service_healthy or service_completed_successfully)"),
                    ))
                }
            };
            spec.depends_on.push(ServiceDependency {
                service: format!("{}_{dep}", names.stack),
                condition: condition as i32,
            });
        }
    }
    Ok(spec)
}

/// `command`/`entrypoint`: a string is split as a shell would, a list is taken as is.
fn command(c: Option<&Command>, path: &str) -> Result<Vec<String>, ConvertError> {
    match c {
        None => Ok(Vec::new()),
        Some(Command::List(l)) => Ok(l.iter().map(|s| s.0.clone()).collect()),
        Some(Command::Shell(s)) => shlex::split(s).ok_or_else(|| {
            field(
                path,
                format!("cannot split {s:?} into words (unbalanced quotes?)"),
            )
        }),
    }
}

/// A Go-style duration as compose writes them ("1m30s", "1.5s", "500ms", "2h").
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid duration {s:?} (e.g. 10s, 1m30s, 500ms)");
    let t = s.trim();
    if t == "0" {
        return Ok(0);
    }
    let mut rest = t;
    let mut total: f64 = 0.0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let num: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += num * mult;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(total.round() as i64)
}

fn opt_duration(s: Option<&str>, path: &str) -> Result<i64, ConvertError> {
    s.map(|s| parse_duration(s).map_err(|e| field(path, e)))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// `HOST[:CONTAINER[:PERMS]]`.
fn device(d: &str, path: &str) -> Result<DeviceMapping, ConvertError> {
    let parts: Vec<&str> = d.split(':').collect();
    let (host, cont, perms) = match parts.as_slice() {
        [h] => (*h, "", ""),
        [h, c] => (*h, *c, ""),
        [h, c, p] => (*h, *c, *p),
        _ => {
            return Err(field(
                path,
                format!("invalid device {d:?} (HOST[:CONTAINER[:PERMS]])"),
            ))
        }
    };
    Ok(DeviceMapping {
        path_on_host: host.into(),
        path_in_container: cont.into(),
        cgroup_permissions: perms.into(),
    })
}

/// `extra_hosts` as /etc/hosts lines ("IP NAME"), as docker's stack deploy converts them.
fn extra_hosts(hosts: Option<&MapOrList>, path: &str) -> Result<Vec<String>, ConvertError> {
    let Some(hosts) = hosts else {
        return Ok(Vec::new());
    };
    let flags: Vec<String> = match hosts {
        MapOrList::List(l) => l.clone(),
        MapOrList::Map(m) => m
            .iter()
            .map(|(k, v)| format!("{k}:{}", v.as_ref().map_or("", |s| s.0.as_str())))
            .collect(),
    };
    flags
        .iter()
        .enumerate()
        .map(|(i, f)| {
            shoal_proto::spec::hosts::host_line_from_flag(f)
                .map_err(|e| field(format!("{path}[{i}]"), e))
        })
        .collect()
}

fn healthcheck(h: &Healthcheck, path: &str) -> Result<HealthConfig, ConvertError> {
    let test = if h.disable.is_some_and(|d| d.0) {
        vec!["NONE".to_string()]
    } else {
        match &h.test {
            // No test: the image's, with the timings given here (docker merges them).
            None => Vec::new(),
            Some(Command::Shell(s)) => vec!["CMD-SHELL".into(), s.clone()],
            Some(Command::List(l)) => l.iter().map(|s| s.0.clone()).collect(),
        }
    };
    let d = |v: &Option<String>, k: &str| opt_duration(v.as_deref(), &format!("{path}.{k}"));
    Ok(HealthConfig {
        test,
        interval_ns: d(&h.interval, "interval")?,
        timeout_ns: d(&h.timeout, "timeout")?,
        start_period_ns: d(&h.start_period, "start_period")?,
        start_interval_ns: d(&h.start_interval, "start_interval")?,
        retries: h
            .retries
            .map(|r| i32::try_from(r.0).map_err(|_| field(format!("{path}.retries"), "too large")))
            .transpose()?
            .unwrap_or(0),
    })
}

/// A file mode: octal when written with a leading 0 ("0440", `0440`, "0o440"), else decimal.
fn file_mode(s: &Scalar, path: &str) -> Result<u32, ConvertError> {
    let t = s.0.trim();
    let parsed = if let Some(o) = t.strip_prefix("0o") {
        u32::from_str_radix(o, 8)
    } else if t.len() > 1 && t.starts_with('0') {
        u32::from_str_radix(&t[1..], 8)
    } else {
        t.parse()
    };
    match parsed {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(field(path, format!("invalid file mode {t:?} (e.g. 0440)"))),
    }
}

fn file_target(
    r: &FileRef,
    default_target: impl Fn(&str) -> String,
    path: &str,
) -> Result<(String, FileTarget), ConvertError> {
    let l = r.long();
    if l.source.is_empty() {
        return Err(field(path, "a reference needs a source"));
    }
    let mode = l
        .mode
        .as_ref()
        .map(|m| file_mode(m, &format!("{path}.mode")))
        .transpose()?
        .unwrap_or(0o444);
    Ok((
        l.source.clone(),
        FileTarget {
            name: l
                .target
                .clone()
                .unwrap_or_else(|| default_target(&l.source)),
            uid: l.uid.map(|u| u.0).unwrap_or_else(|| "0".into()),
            gid: l.gid.map(|g| g.0).unwrap_or_else(|| "0".into()),
            mode,
        },
    ))
}

/// A service's `secrets:` or `configs:` (`kind`), each with its file and the name the stack
/// gave the object, sorted by file name so that reordering the file does not restart tasks (as
/// docker).
fn file_refs<R>(
    refs: &[FileRef],
    names: &HashMap<String, String>,
    path: &str,
    kind: &str,
    default_target: impl Fn(&str) -> String,
    make: impl Fn(String, FileTarget) -> R,
) -> Result<Vec<R>, ConvertError> {
    let mut out = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let (source, file) = file_target(r, &default_target, &p)?;
        let name = names
            .get(&source)
            .cloned()
            .ok_or_else(|| field(&p, format!("undefined {kind} {source:?}")))?;
        out.push((file, name));
    }
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok(out
        .into_iter()
        .map(|(file, name)| make(name, file))
        .collect())
}

fn secret_refs(
    refs: &[FileRef],
    names: &HashMap<String, String>,
    path: &str,
) -> Result<Vec<SecretReference>, ConvertError> {
    file_refs(
        refs,
        names,
        path,
        "secret",
        str::to_string,
        |secret_name, file| SecretReference {
            secret_id: String::new(),
            secret_name,
            file: Some(file),
        },
    )
}

fn config_refs(
    refs: &[FileRef],
    names: &HashMap<String, String>,
    path: &str,
) -> Result<Vec<ConfigReference>, ConvertError> {
    file_refs(
        refs,
        names,
        path,
        "config",
        |s| format!("/{s}"),
        |config_name, file| ConfigReference {
            config_id: String::new(),
            config_name,
            file: Some(file),
        },
    )
}

/// The short volume syntax in its long form: `SRC:DST[:OPTS]` or `DST` (anonymous).
pub fn short_volume(s: &str, path: &str) -> Result<VolumeLong, ConvertError> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut v = VolumeLong::default();
    match parts.as_slice() {
        [target] => {
            v.kind = Some("volume".into());
            v.target = Some(target.to_string());
        }
        [src, target] | [src, target, _] => {
            let is_path = src.starts_with(['/', '.', '~']);
            v.kind = Some(if is_path { "bind" } else { "volume" }.into());
            v.source = Some(src.to_string());
            v.target = Some(target.to_string());
            if let [_, _, opts] = parts.as_slice() {
                for opt in opts.split(',') {
                    match opt {
                        "ro" => v.read_only = Some(super::model::FlexBool(true)),
                        "rw" | "z" | "Z" | "" => {}
                        "nocopy" => {
                            v.volume = Some(super::model::VolumeOptsDef {
                                nocopy: Some(super::model::FlexBool(true)),
                            })
                        }
                        "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                            v.bind = Some(super::model::BindDef {
                                propagation: Some(opt.to_string()),
                            })
                        }
                        other => {
                            return Err(field(
                                path,
                                format!("unknown volume option {other:?} in {s:?}"),
                            ))
                        }
                    }
                }
            }
        }
        _ => {
            return Err(field(
                path,
                format!("invalid volume {s:?} (SOURCE:TARGET[:MODE])"),
            ))
        }
    }
    Ok(v)
}

/// A bind source made absolute against the project directory (`~/` against $HOME).
fn bind_source(src: &str, res: &Resolved) -> PathBuf {
    let p = if let (Some(rest), Some(home)) = (src.strip_prefix("~/"), res.home.as_ref()) {
        Path::new(home).join(rest)
    } else if src == "~" {
        PathBuf::from(res.home.clone().unwrap_or_else(|| "/".into()))
    } else {
        res.dir.join(src)
    };
    normalize(&p)
}

/// `a/./b/../c` → `a/c`, without touching the disk.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn mounts(
    model: &ComposeFile,
    res: &Resolved,
    stack: &str,
    name: &str,
    svc: &Service,
) -> Result<Vec<Mount>, ConvertError> {
    let mut out = Vec::new();
    for (i, entry) in svc.volumes.iter().enumerate() {
        let path = format!("services.{name}.volumes[{i}]");
        let v = match entry {
            VolumeEntry::Short(s) => short_volume(s, &path)?,
            VolumeEntry::Long(l) => l.clone(),
        };
        let target = v
            .target
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| field(&path, "a volume needs a target"))?;
        let source = v.source.clone().unwrap_or_default();
        let kind = v.kind.clone().unwrap_or_else(|| {
            if source.starts_with(['/', '.', '~']) {
                "bind".into()
            } else {
                "volume".into()
            }
        });
        let read_only = v.read_only.is_some_and(|b| b.0);
        let mut m = Mount {
            target,
            read_only,
            ..Default::default()
        };
        match kind.as_str() {
            "bind" => {
                if source.is_empty() {
                    return Err(field(&path, "a bind mount needs a source"));
                }
                m.r#type = MountType::MountBind as i32;
                m.source = bind_source(&source, res).display().to_string();
                if let Some(prop) = v.bind.as_ref().and_then(|b| b.propagation.clone()) {
                    m.bind_options = Some(BindOptions { propagation: prop });
                }
            }
            "volume" => {
                m.r#type = MountType::MountVolume as i32;
                let no_copy = v
                    .volume
                    .as_ref()
                    .and_then(|o| o.nocopy)
                    .is_some_and(|b| b.0);
                if source.is_empty() {
                    // Anonymous: removed with its task.
                    if no_copy {
                        m.volume_options = Some(VolumeOptions {
                            no_copy,
                            ..Default::default()
                        });
                    }
                } else {
                    let def = model.volumes.get(&source).ok_or_else(|| {
                        field(
                            &path,
                            format!("undefined volume {source:?} (declare it under the top-level volumes)"),
                        )
                    })?;
                    let def = def.clone().unwrap_or_default();
                    match external_name(def.external.as_ref(), def.name.as_deref(), &source) {
                        Some(ext) => {
                            m.source = ext;
                            if no_copy {
                                m.volume_options = Some(VolumeOptions {
                                    no_copy,
                                    ..Default::default()
                                });
                            }
                        }
                        None => {
                            m.source = def
                                .name
                                .clone()
                                .unwrap_or_else(|| format!("{stack}_{source}"));
                            let driver_config =
                                if def.driver.is_some() || !def.driver_opts.is_empty() {
                                    Some(Driver {
                                        name: def.driver.clone().unwrap_or_else(|| "local".into()),
                                        options: def
                                            .driver_opts
                                            .iter()
                                            .map(|(k, v)| (k.clone(), v.0.clone()))
                                            .collect(),
                                    })
                                } else {
                                    None
                                };
                            m.volume_options = Some(VolumeOptions {
                                no_copy,
                                labels: labels_with_namespace(def.labels.as_ref(), stack),
                                driver_config,
                            });
                        }
                    }
                }
            }
            "tmpfs" => {
                m.r#type = MountType::MountTmpfs as i32;
                let t = v.tmpfs.clone().unwrap_or_default();
                m.tmpfs_options = Some(TmpfsOptions {
                    size_bytes: t
                        .size
                        .map(|s| {
                            parse_bytes(&s.0)
                                .map_err(|e| field(format!("{path}.tmpfs.size"), e.to_string()))
                        })
                        .transpose()?
                        .unwrap_or(0),
                    mode: t
                        .mode
                        .map(|s| file_mode(&s, &format!("{path}.tmpfs.mode")))
                        .transpose()?
                        .unwrap_or(0),
                });
            }
            other => {
                return Err(field(
                    format!("{path}.type"),
                    format!("unsupported mount type {other:?} (bind, volume or tmpfs)"),
                ))
            }
        }
        out.push(m);
    }
    if let Some(t) = &svc.tmpfs {
        for (i, item) in t.items().iter().enumerate() {
            let path = format!("services.{name}.tmpfs[{i}]");
            let (target, opts) = item.split_once(':').unwrap_or((item.as_str(), ""));
            let mut o = TmpfsOptions::default();
            for opt in opts.split(',').filter(|o| !o.is_empty()) {
                match opt.split_once('=') {
                    Some(("size", s)) => {
                        o.size_bytes = parse_bytes(s).map_err(|e| field(&path, e.to_string()))?
                    }
                    Some(("mode", s)) => o.mode = file_mode(&Scalar(s.into()), &path)?,
                    _ => return Err(field(&path, format!("unknown tmpfs option {opt:?}"))),
                }
            }
            out.push(Mount {
                r#type: MountType::MountTmpfs as i32,
                target: target.to_string(),
                tmpfs_options: Some(o),
                ..Default::default()
            });
        }
    }
    Ok(out)
}

/// `START[-END]` → the ports in it.
fn port_range(s: &str, path: &str) -> Result<(u32, u32), ConvertError> {
    let bad = || field(path, format!("invalid port {s:?}"));
    let one = |p: &str| -> Result<u32, ConvertError> {
        match p.trim().parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n),
            _ => Err(bad()),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if b < a {
                return Err(bad());
            }
            Ok((a, b))
        }
        None => {
            let n = one(s)?;
            Ok((n, n))
        }
    }
}

fn port_configs(
    port: &PortEntry,
    path: &str,
    service: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<PortConfig>, ConvertError> {
    let mk = |target, published, protocol: &str, mode: &str| PortConfig {
        name: String::new(),
        protocol: protocol.to_string(),
        target_port: target,
        published_port: published,
        publish_mode: mode.to_string(),
    };
    match port {
        PortEntry::Short(s) => {
            let s = s.0.trim();
            let (body, protocol) = s.rsplit_once('/').unwrap_or((s, "tcp"));
            if !matches!(protocol, "tcp" | "udp") {
                return Err(field(
                    path,
                    format!("unsupported protocol {protocol:?} (tcp or udp)"),
                ));
            }
            let parts: Vec<&str> = body.split(':').collect();
            let (ip, published, target) = match parts.as_slice() {
                [t] => (None, None, *t),
                [p, t] => (None, Some(*p), *t),
                [ip, p, t] => (Some(*ip), Some(*p), *t),
                _ => return Err(field(path, format!("invalid port {s:?}"))),
            };
            if let Some(ip) = ip.filter(|ip| !ip.is_empty()) {
                warnings.push(format!(
                    "service {service}: {path}: host IP {ip} is not supported by the routing mesh; the port is published on every address"
                ));
            }
            let (t0, t1) = port_range(target, path)?;
            match published.filter(|p| !p.is_empty()) {
                None => Ok((t0..=t1).map(|t| mk(t, 0, protocol, "ingress")).collect()),
                Some(p) => {
                    let (p0, p1) = port_range(p, path)?;
                    if p1 - p0 != t1 - t0 {
                        return Err(field(
                            path,
                            format!("invalid port {s:?}: the published and target ranges differ in length"),
                        ));
                    }
                    Ok((0..=(t1 - t0))
                        .map(|i| mk(t0 + i, p0 + i, protocol, "ingress"))
                        .collect())
                }
            }
        }
        PortEntry::Long(l) => {
            let target = l
                .target
                .map(|t| t.0)
                .filter(|t| (1..=65535).contains(t))
                .ok_or_else(|| {
                    field(
                        format!("{path}.target"),
                        "a port needs a target between 1 and 65535",
                    )
                })?;
            let published = match &l.published {
                None => 0,
                Some(p) if p.0.is_empty() => 0,
                Some(p) => {
                    let (a, b) = port_range(&p.0, &format!("{path}.published"))?;
                    if a != b {
                        return Err(field(
                            format!("{path}.published"),
                            "a published range needs the short syntax (\"8000-8001:80-81\")",
                        ));
                    }
                    a
                }
            };
            let protocol = l.protocol.clone().unwrap_or_else(|| "tcp".into());
            let mode = l.mode.clone().unwrap_or_else(|| "ingress".into());
            if !matches!(mode.as_str(), "ingress" | "host") {
                return Err(field(
                    format!("{path}.mode"),
                    format!("unknown mode {mode:?} (ingress or host)"),
                ));
            }
            if l.host_ip.as_ref().is_some_and(|ip| !ip.is_empty()) {
                warnings.push(format!(
                    "service {service}: {path}: host_ip is not supported; the port is published on every address"
                ));
            }
            let mut pc = mk(target as u32, published, &protocol, &mode);
            pc.name = l.name.clone().unwrap_or_default();
            Ok(vec![pc])
        }
    }
}

fn resources(
    r: Option<&super::model::DeployResources>,
    path: &str,
) -> Result<Option<ResourceRequirements>, ConvertError> {
    let Some(r) = r else {
        return Ok(None);
    };
    let one = |d: Option<&ResourceDef>,
               k: &str|
     -> Result<(Option<Resources>, i64), ConvertError> {
        let Some(d) = d else {
            return Ok((None, 0));
        };
        let nano_cpus = d
            .cpus
            .as_ref()
            .map(|c| {
                parse_nano_cpus(&c.0).map_err(|e| field(format!("{path}.{k}.cpus"), e.to_string()))
            })
            .transpose()?
            .unwrap_or(0);
        let memory_bytes = d
            .memory
            .as_ref()
            .map(|m| {
                parse_bytes(&m.0).map_err(|e| field(format!("{path}.{k}.memory"), e.to_string()))
            })
            .transpose()?
            .unwrap_or(0);
        Ok((
            Some(Resources {
                nano_cpus,
                memory_bytes,
            }),
            d.pids.map_or(0, |p| p.0),
        ))
    };
    let (limits, pids_limit) = one(r.limits.as_ref(), "limits")?;
    let (reservations, _) = one(r.reservations.as_ref(), "reservations")?;
    Ok(Some(ResourceRequirements {
        limits,
        reservations,
        pids_limit,
    }))
}

/// `deploy.restart_policy`, else the legacy `restart:` mapped as docker maps it.
fn restart(svc: &Service, prefix: &str) -> Result<Option<RestartPolicy>, ConvertError> {
    let path = |k: &str| format!("{prefix}{k}");
    if let Some(r) = svc.deploy.as_ref().and_then(|d| d.restart_policy.as_ref()) {
        let condition = match r.condition.as_deref().unwrap_or("any") {
            "any" => RestartCondition::RestartAny,
            "on-failure" => RestartCondition::RestartOnFailure,
            "none" => RestartCondition::RestartNone,
            other => {
                return Err(field(
                    path("deploy.restart_policy.condition"),
                    format!("unknown condition {other:?} (none, on-failure or any)"),
                ))
            }
        };
        return Ok(Some(RestartPolicy {
            condition: condition as i32,
            delay_ns: match &r.delay {
                Some(d) => {
                    parse_duration(d).map_err(|e| field(path("deploy.restart_policy.delay"), e))?
                }
                // swarm's default delay.
                None => 5_000_000_000,
            },
            max_attempts: r.max_attempts.map_or(0, |m| m.0),
            window_ns: opt_duration(r.window.as_deref(), &path("deploy.restart_policy.window"))?,
        }));
    }
    let Some(legacy) = svc.restart.as_deref() else {
        return Ok(None);
    };
    let (condition, max_attempts) = match legacy.split_once(':') {
        _ if legacy == "always" || legacy == "unless-stopped" => (RestartCondition::RestartAny, 0),
        _ if legacy == "no" => (RestartCondition::RestartNone, 0),
        _ if legacy == "on-failure" => (RestartCondition::RestartOnFailure, 0),
        Some(("on-failure", n)) => (
            RestartCondition::RestartOnFailure,
            n.parse().map_err(|_| {
                field(
                    path("restart"),
                    format!("invalid restart policy {legacy:?}"),
                )
            })?,
        ),
        _ => {
            return Err(field(
                path("restart"),
                format!(
                "invalid restart policy {legacy:?} (no, always, on-failure[:N], unless-stopped)"
            ),
            ))
        }
    };
    Ok(Some(RestartPolicy {
        condition: condition as i32,
        delay_ns: 5_000_000_000,
        max_attempts,
        window_ns: 0,
    }))
}

fn log_driver(svc: &Service, name: &str, warnings: &mut Vec<String>) -> Option<Driver> {
    let l = svc.logging.as_ref()?;
    match l.driver.as_deref() {
        None | Some(LOG_DRIVER) => Some(Driver {
            name: LOG_DRIVER.into(),
            options: l
                .options
                .iter()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
        }),
        Some(other) => {
            warnings.push(format!(
                "service {name}: logging driver {other:?} is not supported (only {LOG_DRIVER}); using {LOG_DRIVER}"
            ));
            None
        }
    }
}

fn update_config(u: &UpdateDef, path: &str, is_update: bool) -> Result<UpdateConfig, ConvertError> {
    use update_config::{FailureAction, Order};
    let failure_action = match u.failure_action.as_deref().unwrap_or("pause") {
        "pause" => FailureAction::Pause,
        "continue" => FailureAction::Continue,
        "rollback" if is_update => FailureAction::Rollback,
        other => {
            return Err(field(
                format!("{path}.failure_action"),
                format!(
                    "unknown failure action {other:?} ({})",
                    if is_update {
                        "pause, continue or rollback"
                    } else {
                        "pause or continue"
                    }
                ),
            ))
        }
    };
    let order = match u.order.as_deref().unwrap_or("stop-first") {
        "stop-first" => Order::StopFirst,
        "start-first" => Order::StartFirst,
        other => {
            return Err(field(
                format!("{path}.order"),
                format!("unknown order {other:?} (stop-first or start-first)"),
            ))
        }
    };
    let ratio = u.max_failure_ratio.map_or(0.0, |r| r.0);
    if !(0.0..=1.0).contains(&ratio) {
        return Err(field(
            format!("{path}.max_failure_ratio"),
            "must be between 0 and 1",
        ));
    }
    Ok(UpdateConfig {
        // Compose's default parallelism is 1, as docker's.
        parallelism: u.parallelism.map_or(1, |p| p.0),
        delay_ns: opt_duration(u.delay.as_deref(), &format!("{path}.delay"))?,
        failure_action: failure_action as i32,
        monitor_ns: opt_duration(u.monitor.as_deref(), &format!("{path}.monitor"))?,
        max_failure_ratio: ratio as f32,
        order: order as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(10_000_000_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("500ms"), Ok(500_000_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000_000_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn file_modes() {
        let m = |s: &str| file_mode(&Scalar(s.into()), "p");
        assert_eq!(m("0440"), Ok(0o440));
        assert_eq!(m("288"), Ok(288));
        assert_eq!(m("0o400"), Ok(0o400));
        assert!(m("0999").is_err());
    }

    #[test]
    fn short_ports() {
        let mut w = Vec::new();
        let pc = |s: &str, w: &mut Vec<String>| {
            port_configs(&PortEntry::Short(Scalar(s.into())), "ports[0]", "web", w)
        };
        let p = pc("8080:80", &mut w).unwrap();
        assert_eq!(
            (
                p[0].published_port,
                p[0].target_port,
                p[0].protocol.as_str()
            ),
            (8080, 80, "tcp")
        );
        let p = pc("80", &mut w).unwrap();
        assert_eq!((p[0].published_port, p[0].target_port), (0, 80));
        let p = pc("53:53/udp", &mut w).unwrap();
        assert_eq!(p[0].protocol, "udp");
        let p = pc("8000-8001:80-81", &mut w).unwrap();
        assert_eq!(
            p.iter()
                .map(|p| (p.published_port, p.target_port))
                .collect::<Vec<_>>(),
            vec![(8000, 80), (8001, 81)]
        );
        assert!(w.is_empty());
        let p = pc("127.0.0.1:8080:80", &mut w).unwrap();
        assert_eq!(p[0].published_port, 8080);
        assert_eq!(w.len(), 1);
        assert!(pc("8000-8002:80-81", &mut w).is_err());
        assert!(pc("x:80", &mut w).is_err());
        assert!(pc("80/sctp", &mut w).is_err());
    }

    #[test]
    fn short_volumes() {
        let v = short_volume("data:/var/lib/x:ro", "p").unwrap();
        assert_eq!(v.kind.as_deref(), Some("volume"));
        assert_eq!(v.source.as_deref(), Some("data"));
        assert!(v.read_only.unwrap().0);
        let v = short_volume("./conf:/etc/x", "p").unwrap();
        assert_eq!(v.kind.as_deref(), Some("bind"));
        let v = short_volume("/cache", "p").unwrap();
        assert_eq!(v.kind.as_deref(), Some("volume"));
        assert!(v.source.is_none());
        assert!(short_volume("a:/b:bogus", "p").is_err());
        let res = Resolved {
            dir: PathBuf::from("/srv/app"),
            home: Some("/home/u".into()),
            ..Default::default()
        };
        assert_eq!(bind_source("./conf", &res), PathBuf::from("/srv/app/conf"));
        assert_eq!(bind_source("../x", &res), PathBuf::from("/srv/x"));
        assert_eq!(bind_source("~/d", &res), PathBuf::from("/home/u/d"));
        assert_eq!(bind_source("/abs", &res), PathBuf::from("/abs"));
    }
}
