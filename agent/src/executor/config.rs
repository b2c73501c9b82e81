//! A task's container configuration: the spec and the image made into what the runtime runs, as
//! docker does it, plus the parts only the node can fill in (host devices, the init binary).

use std::path::Path;

use shoal_proto::v1::{ContainerSpec, Driver, Task};

use crate::image::Image;
use crate::runtime::{devices, ContainerConfig, LogConfig, Rlimit, SeccompConfig};

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
