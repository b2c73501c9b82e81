//! A task's container configuration: the spec and the image made into what the runtime runs, as
//! docker does it, plus the parts only the node can fill in (host devices, the init binary).

use std::path::Path;

use shoal_proto::template::{self, TemplateContext, TemplateError};
use shoal_proto::v1::{ContainerSpec, Driver, MountType, Task};

use crate::image::Image;
use crate::runtime::{
    devices, ContainerConfig, LogConfig, MountKind, MountSpec, Rlimit, SeccompConfig,
};
use crate::volumes::{self, VolumeCreate, VolumeStore};

/// Builds the container configuration from the task and its image, as docker does: the task's
/// command replaces the image's Entrypoint, its args replace Cmd, env is appended by key.
pub fn container_config(task: &Task, image: &Image) -> ContainerConfig {
    let spec = task.spec.clone().unwrap_or_default();
    let c = spec.container.unwrap_or_default();
    let res = spec.resources.unwrap_or_default();
    let limits = res.limits.unwrap_or_default();
    let (entrypoint, cmd) = if !c.command.is_empty() {
        (c.command.clone(), c.args.clone())
    } else if !c.args.is_empty() {
        (image.config.entrypoint.clone(), c.args.clone())
    } else {
        (image.config.entrypoint.clone(), image.config.cmd.clone())
    };
    let mut env: Vec<String> = image.config.env.clone();
    for kv in &c.env {
        let key = kv.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    let hostname = if c.hostname.is_empty() {
        task.id.chars().take(12).collect()
    } else {
        c.hostname.clone()
    };
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={hostname}"));
    }
    let mut cfg = ContainerConfig {
        id: task.id.clone(),
        layers: image.layers.clone(),
        args: entrypoint.into_iter().chain(cmd).collect(),
        env,
        cwd: if !c.dir.is_empty() {
            c.dir.clone()
        } else if !image.config.working_dir.is_empty() {
            image.config.working_dir.clone()
        } else {
            "/".into()
        },
        user: if c.user.is_empty() {
            image.config.user.clone()
        } else {
            c.user.clone()
        },
        hostname,
        memory_bytes: limits.memory_bytes,
        nano_cpus: limits.nano_cpus,
        pids_limit: res.pids_limit,
        netns: None,
        resolv_conf: None,
        extra_hosts: c.hosts.clone(),
        ..Default::default()
    };
    confine(&c, spec.log_driver.as_ref(), &mut cfg);
    cfg
}

/// The spec's confinement knobs, as docker applies them (validated by the manager already:
/// unknown names are ignored here rather than failing a task).
fn confine(c: &ContainerSpec, log_driver: Option<&Driver>, cfg: &mut ContainerConfig) {
    use shoal_proto::security;
    cfg.privileged = c.privileged;
    cfg.capabilities = Some(if c.privileged {
        security::CAPABILITIES.iter().map(|(n, _)| *n).collect()
    } else {
        security::effective_capabilities(&c.capability_add, &c.capability_drop)
    });
    let privileges = c.privileges.clone().unwrap_or_default();
    let seccomp = privileges.seccomp.unwrap_or_default();
    cfg.seccomp = match seccomp.mode.as_str() {
        "unconfined" => SeccompConfig::Unconfined,
        "custom" => SeccompConfig::Custom(String::from_utf8_lossy(&seccomp.profile).into_owned()),
        _ => SeccompConfig::Default,
    };
    cfg.no_new_privileges = privileges.no_new_privileges;
    cfg.read_only = c.read_only;
    cfg.groups = c.groups.clone();
    // -1 is unlimited, RLIM_INFINITY.
    let limit = |v: i64| u64::try_from(v).unwrap_or(u64::MAX);
    cfg.ulimits = c
        .ulimits
        .iter()
        .map(|u| Rlimit {
            name: u.name.clone(),
            soft: limit(u.soft),
            hard: limit(u.hard),
        })
        .collect();
    cfg.sysctls = c
        .sysctls
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    cfg.stop_signal = security::signal_number(&c.stop_signal).unwrap_or(0);
    // Validated by the manager; a value it refused cannot arrive here, so defaults are a safe fallback.
    if let Ok(rotation) = shoal_proto::spec::log_rotation(log_driver) {
        cfg.log = LogConfig {
            max_size_bytes: rotation.max_size,
            max_files: rotation.max_file.max(1),
        };
    }
}

/// The node-specific parts of the configuration: host devices (all of them when privileged)
/// and the init binary. Errors name the node and the path, for `service ps`.
pub fn node_config(
    c: &ContainerSpec,
    node: &str,
    init: &Path,
    cfg: &mut ContainerConfig,
) -> Result<(), String> {
    if c.privileged {
        cfg.devices = devices::host_devices();
    }
    for d in &c.devices {
        let host = Path::new(&d.path_on_host);
        let inside = if d.path_in_container.is_empty() {
            host
        } else {
            Path::new(&d.path_in_container)
        };
        let perms = if d.cgroup_permissions.is_empty() {
            "rwm"
        } else {
            d.cgroup_permissions.as_str()
        };
        let dev = devices::device_node(host, inside, perms)
            .map_err(|e| format!("--device on node {node}: {e}"))?;
        cfg.devices.retain(|x| x.path != dev.path);
        cfg.devices.push(dev);
    }
    if c.init {
        if !init.is_file() {
            return Err(format!(
                "--init: no init binary at {} on node {node} (install Debian's tini package, or start shoal-agent with --init-path)",
                init.display()
            ));
        }
        cfg.init = Some(init.to_path_buf());
    }
    Ok(())
}

/// The task's name as swarm shows it: `SERVICE.SLOT.TASKID`, or `SERVICE.NODEID.TASKID` for a
/// global task.
pub fn task_name(task: &Task) -> String {
    if task.slot > 0 {
        format!("{}.{}.{}", task.service_name, task.slot, task.id)
    } else {
        format!("{}.{}.{}", task.service_name, task.node_id, task.id)
    }
}

/// What the task's templates (`{{.Task.Slot}}`...) expand to on this node.
pub fn template_context(task: &Task, node_hostname: &str) -> TemplateContext {
    TemplateContext {
        service_id: task.service_id.clone(),
        service_name: task.service_name.clone(),
        task_id: task.id.clone(),
        task_slot: task.slot,
        task_name: task_name(task),
        node_id: task.node_id.clone(),
        node_hostname: node_hostname.to_string(),
    }
}

/// Expands the templates of the hostname and of the environment's values (the part after `=`).
pub fn expand_templates(
    ctx: &TemplateContext,
    cfg: &mut ContainerConfig,
) -> Result<(), TemplateError> {
    cfg.hostname = template::expand(&cfg.hostname, ctx)?;
    for kv in &mut cfg.env {
        if let Some((key, value)) = kv.split_once('=') {
            if value.contains("{{") {
                *kv = format!("{key}={}", template::expand(value, ctx)?);
            }
        }
    }
    Ok(())
}

/// The task's `--mount`s made into what the runtime mounts: bind sources checked, volumes
/// created (and marked as used by the task) in `volumes`. On an error, volumes already marked
/// stay marked: the caller releases the task.
pub fn resolve_mounts(
    task: &Task,
    ctx: &TemplateContext,
    volumes: &VolumeStore,
) -> Result<Vec<MountSpec>, String> {
    let c = task
        .spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for (i, m) in c.mounts.iter().enumerate() {
        if !m.target.starts_with('/') {
            return Err(format!(
                "mount target {:?} is not an absolute path",
                m.target
            ));
        }
        let source = template::expand(&m.source, ctx).map_err(|e| e.to_string())?;
        let target = Path::new(&m.target).to_path_buf();
        let kind = match MountType::try_from(m.r#type).unwrap_or(MountType::MountBind) {
            MountType::MountBind => {
                let path = Path::new(&source);
                if !path.is_absolute() {
                    return Err(format!("bind source path must be absolute: {source:?}"));
                }
                if !path.exists() {
                    return Err(format!("bind source path does not exist: {source}"));
                }
                MountKind::Bind {
                    source: path.to_path_buf(),
                    propagation: m
                        .bind_options
                        .as_ref()
                        .map(|b| b.propagation.clone())
                        .unwrap_or_default(),
                    copy_up: false,
                }
            }
            MountType::MountVolume => {
                let opts = m.volume_options.clone().unwrap_or_default();
                let driver = opts.driver_config.unwrap_or_default();
                let anonymous = source.is_empty();
                let name = if anonymous {
                    volumes::anonymous_name(&task.id, i)
                } else {
                    source.clone()
                };
                let create = VolumeCreate {
                    driver: driver.name,
                    labels: opts.labels.into_iter().collect(),
                    options: driver.options.into_iter().collect(),
                    anonymous,
                };
                let vol = volumes
                    .ensure(&name, &create, &task.id)
                    .map_err(|e| e.to_string())?;
                volume_kind(&vol.record.options, vol.data, !opts.no_copy)
            }
            MountType::MountTmpfs => {
                let t = m.tmpfs_options.unwrap_or_default();
                MountKind::Tmpfs {
                    size_bytes: t.size_bytes,
                    mode: t.mode,
                }
            }
        };
        out.push(MountSpec {
            target,
            kind,
            read_only: m.read_only,
        });
    }
    Ok(out)
}

/// What a local volume mounts: its directory, or what its `type`/`device`/`o` options name
/// (`o=bind,device=/path` binds that path).
fn volume_kind(
    options: &std::collections::BTreeMap<String, String>,
    data: std::path::PathBuf,
    copy_up: bool,
) -> MountKind {
    let get = |k: &str| options.get(k).cloned().unwrap_or_default();
    let (fstype, device, o) = (get("type"), get("device"), get("o"));
    if fstype.is_empty() && device.is_empty() {
        return MountKind::Bind {
            source: data,
            propagation: String::new(),
            copy_up,
        };
    }
    if o.split(',').any(|x| x == "bind" || x == "rbind") {
        return MountKind::Bind {
            source: device.into(),
            propagation: String::new(),
            copy_up: false,
        };
    }
    MountKind::Filesystem {
        fstype,
        device,
        data: o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{
        BindOptions, ContainerSpec, Mount, TaskSpec, TmpfsOptions, VolumeOptions,
    };

    fn task_with(mounts: Vec<Mount>) -> Task {
        Task {
            id: "task1".into(),
            service_id: "svc1".into(),
            service_name: "web".into(),
            slot: 2,
            node_id: "node1".into(),
            spec: Some(TaskSpec {
                container: Some(ContainerSpec {
                    mounts,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn names_and_templates_follow_swarm() {
        let mut t = task_with(vec![]);
        assert_eq!(task_name(&t), "web.2.task1");
        t.slot = 0;
        assert_eq!(task_name(&t), "web.node1.task1");
        t.slot = 2;
        let ctx = template_context(&t, "host-a");
        let mut cfg = ContainerConfig {
            hostname: "{{.Service.Name}}-{{.Task.Slot}}".into(),
            env: vec![
                "A={{.Node.Hostname}}".into(),
                "B=x=y".into(),
                "NAME={{ .Task.Name }}".into(),
            ],
            ..Default::default()
        };
        expand_templates(&ctx, &mut cfg).unwrap();
        assert_eq!(cfg.hostname, "web-2");
        assert_eq!(cfg.env, vec!["A=host-a", "B=x=y", "NAME=web.2.task1"]);
        cfg.env = vec!["C={{.Bogus}}".into()];
        assert!(expand_templates(&ctx, &mut cfg).is_err());
    }

    #[test]
    fn mounts_resolve_to_binds_volumes_and_tmpfs() {
        let data = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(data.path());
        let src = data.path().join("srv-2");
        std::fs::create_dir(&src).unwrap();
        let t = task_with(vec![
            Mount {
                r#type: MountType::MountBind as i32,
                source: format!("{}/srv-{{{{.Task.Slot}}}}", data.path().display()),
                target: "/data".into(),
                read_only: true,
                bind_options: Some(BindOptions {
                    propagation: "rslave".into(),
                }),
                ..Default::default()
            },
            Mount {
                r#type: MountType::MountVolume as i32,
                source: "db-{{.Task.Slot}}".into(),
                target: "/var/lib/db".into(),
                ..Default::default()
            },
            Mount {
                r#type: MountType::MountVolume as i32,
                source: String::new(),
                target: "/cache".into(),
                volume_options: Some(VolumeOptions {
                    no_copy: true,
                    ..Default::default()
                }),
                ..Default::default()
            },
            Mount {
                r#type: MountType::MountTmpfs as i32,
                target: "/tmp".into(),
                tmpfs_options: Some(TmpfsOptions {
                    size_bytes: 1 << 20,
                    mode: 0o700,
                }),
                ..Default::default()
            },
        ]);
        let ctx = template_context(&t, "h");
        let mounts = resolve_mounts(&t, &ctx, &store).unwrap();
        assert_eq!(
            mounts[0].kind,
            MountKind::Bind {
                source: src,
                propagation: "rslave".into(),
                copy_up: false
            }
        );
        assert!(mounts[0].read_only);
        assert_eq!(
            mounts[1].kind,
            MountKind::Bind {
                source: store.data_path("db-2"),
                propagation: String::new(),
                copy_up: true
            }
        );
        let anon = volumes::anonymous_name("task1", 2);
        assert_eq!(
            mounts[2].kind,
            MountKind::Bind {
                source: store.data_path(&anon),
                propagation: String::new(),
                copy_up: false
            }
        );
        assert_eq!(
            mounts[3].kind,
            MountKind::Tmpfs {
                size_bytes: 1 << 20,
                mode: 0o700
            }
        );
        let vols = store.list("").unwrap();
        assert_eq!(vols.len(), 2);
        assert!(vols
            .iter()
            .all(|v| v.in_use_by == vec!["task1".to_string()]));
        store.release_task("task1").unwrap();
        assert_eq!(store.list("").unwrap().len(), 1);
    }

    #[test]
    fn missing_bind_sources_and_unknown_drivers_fail_the_task() {
        let data = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(data.path());
        let t = task_with(vec![Mount {
            r#type: MountType::MountBind as i32,
            source: "/srv/does-not-exist".into(),
            target: "/x".into(),
            ..Default::default()
        }]);
        let err = resolve_mounts(&t, &template_context(&t, "h"), &store).unwrap_err();
        assert_eq!(err, "bind source path does not exist: /srv/does-not-exist");
        let t = task_with(vec![Mount {
            r#type: MountType::MountVolume as i32,
            source: "v1".into(),
            target: "/x".into(),
            volume_options: Some(VolumeOptions {
                driver_config: Some(Driver {
                    name: "rexray".into(),
                    options: Default::default(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let err = resolve_mounts(&t, &template_context(&t, "h"), &store).unwrap_err();
        assert_eq!(err, "volume driver \"rexray\" is not supported");
    }

    #[test]
    fn local_driver_options_mount_a_device_or_bind_a_path() {
        let opts = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let data = std::path::PathBuf::from("/v/_data");
        assert_eq!(
            volume_kind(
                &opts(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=64m")]),
                data.clone(),
                true
            ),
            MountKind::Filesystem {
                fstype: "tmpfs".into(),
                device: "tmpfs".into(),
                data: "size=64m".into()
            }
        );
        assert_eq!(
            volume_kind(
                &opts(&[("type", "none"), ("device", "/srv/d"), ("o", "bind")]),
                data,
                true
            ),
            MountKind::Bind {
                source: "/srv/d".into(),
                propagation: String::new(),
                copy_up: false
            }
        );
    }
}
