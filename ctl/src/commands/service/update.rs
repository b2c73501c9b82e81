//! `service update` flags applied to an existing spec.

use std::collections::HashMap;

use anyhow::{anyhow, Result};
use shoal_proto::spec::{port_protocol, validate_service};
use shoal_proto::v1::{
    ContainerSpec, NetworkAttachmentConfig, PortConfig, ServiceMode, ServiceSpec,
};
use shoal_proto::wire;

use super::rollout_spec as rollout;
use super::spec::apply_confinement;
use crate::cli::UpdateArgs;

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
    update_labels(&mut spec.labels, &a.label_rm, &a.label_add);
    let task = spec.task.get_or_insert_with(Default::default);
    let c = task.container.get_or_insert_with(Default::default);
    if let Some(image) = &a.image {
        c.image = image.clone();
    }
    update_env(&mut c.env, a);
    update_labels(&mut c.labels, &a.container_label_rm, &a.container_label_add);
    rollout::update_health(&mut c.healthcheck, &a.shared.health)?;
    if a.force {
        // Swarm's --force: a new task template, so every task is replaced once.
        task.force_update = task.force_update.wrapping_add(1);
    }
    apply_confinement(&spec.name, c, &mut task.log_driver, a)?;
    update_files(&spec.name, c, a)?;
    let placement = task.placement.get_or_insert_with(Default::default);
    for expr in &a.constraint_rm {
        placement.constraints.retain(|x| x != expr);
    }
    for expr in &a.constraint_add {
        if !placement.constraints.contains(expr) {
            placement.constraints.push(expr.clone());
        }
    }
    update_networks(&spec.name, &mut task.networks, a, ids)?;
    let ep = spec.endpoint.get_or_insert_with(Default::default);
    update_ports(&spec.name, &mut ep.ports, a)?;
    if let Some(mode) = a.endpoint_mode {
        ep.mode = mode.as_str().to_string();
    }
    if ep.mode.is_empty() {
        ep.mode = wire::EndpointMode::default().as_str().into();
    }
    rollout::merge_replace_config(&mut spec.update, a.shared.update_config.flags());
    rollout::merge_replace_config(&mut spec.rollback, a.shared.rollback_config.flags());
    validate_service(spec)?;
    Ok(())
}

/// `--label-rm`/`--label-add` (or the container's): removals first, as docker; removing a
/// label that is not there changes nothing.
fn update_labels(labels: &mut HashMap<String, String>, rm: &[String], add: &[(String, String)]) {
    for k in rm {
        labels.remove(k);
    }
    for (k, v) in add {
        labels.insert(k.clone(), v.clone());
    }
}

/// `--secret-rm`/`--secret-add`, `--config-rm`/`--config-add` and `--mount-rm`/`--mount-add`:
/// removals by name (or ID) and target first; an addition replaces the entry with its target.
fn update_files(service: &str, c: &mut ContainerSpec, a: &UpdateArgs) -> Result<()> {
    let target = |f: &Option<shoal_proto::v1::FileTarget>| {
        f.as_ref().map(|f| f.name.clone()).unwrap_or_default()
    };
    for name in &a.secret_rm {
        let before = c.secrets.len();
        c.secrets
            .retain(|s| s.secret_name != *name && (s.secret_id.is_empty() || s.secret_id != *name));
        if c.secrets.len() == before {
            return Err(anyhow!(
                "--secret-rm: service {service} uses no secret {name}"
            ));
        }
    }
    for add in &a.secret_add {
        c.secrets.retain(|s| target(&s.file) != target(&add.file));
        c.secrets.push(add.clone());
    }
    for name in &a.config_rm {
        let before = c.configs.len();
        c.configs
            .retain(|s| s.config_name != *name && (s.config_id.is_empty() || s.config_id != *name));
        if c.configs.len() == before {
            return Err(anyhow!(
                "--config-rm: service {service} uses no config {name}"
            ));
        }
    }
    for add in &a.config_add {
        c.configs.retain(|s| target(&s.file) != target(&add.file));
        c.configs.push(add.clone());
    }
    for t in &a.mount_rm {
        let before = c.mounts.len();
        c.mounts.retain(|m| m.target != *t);
        if c.mounts.len() == before {
            return Err(anyhow!("--mount-rm: service {service} has no mount at {t}"));
        }
    }
    for add in &a.mount_add {
        c.mounts.retain(|m| m.target != add.target);
        c.mounts.push(add.clone());
    }
    Ok(())
}

/// `--env-rm KEY` and `--env-add KEY=VALUE` (an added key replaces the entry it had).
fn update_env(env: &mut Vec<String>, a: &UpdateArgs) {
    let key = |e: &str| e.split_once('=').map(|(k, _)| k).unwrap_or(e).to_string();
    for k in &a.env_rm {
        env.retain(|e| key(e) != *k);
    }
    for e in &a.env_add {
        env.retain(|x| key(x) != key(e));
        env.push(e.clone());
    }
}

/// `--network-rm` (by name or ID; the service must be attached) and `--network-add` (the
/// service must not be attached yet).
fn update_networks(
    service: &str,
    networks: &mut Vec<NetworkAttachmentConfig>,
    a: &UpdateArgs,
    ids: &NetworkIds,
) -> Result<()> {
    for name in &a.network_rm {
        let before = networks.len();
        networks.retain(|n| !same_network(&n.target, name, ids));
        if networks.len() == before {
            return Err(anyhow!(
                "--network-rm: service {service} is not attached to network {name}"
            ));
        }
    }
    for add in &a.network_add {
        if networks
            .iter()
            .any(|n| same_network(&n.target, &add.target, ids))
        {
            return Err(anyhow!(
                "--network-add: service {service} is already attached to network {}",
                add.target
            ));
        }
        networks.push(add.clone());
    }
    Ok(())
}

/// `--publish-rm` (something must match) and `--publish-add`.
fn update_ports(service: &str, ports: &mut Vec<PortConfig>, a: &UpdateArgs) -> Result<()> {
    for m in &a.publish_rm {
        let before = ports.len();
        ports.retain(|p| !m.matches(p));
        if ports.len() == before {
            return Err(anyhow!(
                "--publish-rm: service {service} publishes no port matching {m}"
            ));
        }
    }
    for add in &a.publish_add {
        // Docker's "add or update": the same published port and protocol is replaced.
        if add.published_port != 0 {
            ports.retain(|p| {
                p.published_port != add.published_port
                    || port_protocol(&p.protocol) != port_protocol(&add.protocol)
            });
        }
        ports.push(add.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use shoal_proto::v1::{ContainerSpec, TaskSpec};

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
            _ => panic!("not service update"),
        }
    }

    fn spec() -> ServiceSpec {
        let mut c = ContainerSpec {
            image: "nginx".into(),
            ..Default::default()
        };
        c.secrets
            .push(crate::cli::parse_secret("source=pw1,target=pw").unwrap());
        c.mounts
            .push(crate::cli::parse_mount("src=data,dst=/data").unwrap());
        ServiceSpec {
            name: "web".into(),
            replicas: 1,
            task: Some(TaskSpec {
                container: Some(c),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn service_and_container_labels_are_removed_then_added() {
        let mut s = spec();
        s.labels.insert("keep".into(), "1".into());
        s.labels.insert("old".into(), "1".into());
        if let Some(c) = s.task.as_mut().and_then(|t| t.container.as_mut()) {
            c.labels.insert("c-old".into(), "1".into());
        }
        let a = update_args(&[
            "--label-rm",
            "old",
            "--label-rm",
            "missing",
            "--label-add",
            "new=2",
            "--container-label-rm",
            "c-old",
            "--container-label-add",
            "c-new=x",
            "--container-label-add",
            "flag",
        ]);
        assert!(!a.changes_nothing());
        apply_update(&mut s, &a, &NetworkIds::new()).unwrap();
        let want: HashMap<String, String> = [("keep", "1"), ("new", "2")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(s.labels, want);
        let c = s.task.unwrap().container.unwrap();
        let want: HashMap<String, String> = [("c-new", "x"), ("flag", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(c.labels, want);
    }

    #[test]
    fn secrets_and_mounts_are_replaced_by_target() {
        let mut s = spec();
        let a = update_args(&[
            "--secret-rm",
            "pw1",
            "--secret-add",
            "source=pw2,target=pw",
            "--mount-add",
            "src=other,dst=/data",
            "--config-add",
            "conf",
        ]);
        apply_update(&mut s, &a, &NetworkIds::new()).unwrap();
        let c = s.task.unwrap().container.unwrap();
        assert_eq!(c.secrets.len(), 1);
        assert_eq!(c.secrets[0].secret_name, "pw2");
        assert_eq!(c.mounts.len(), 1);
        assert_eq!(c.mounts[0].source, "other");
        assert_eq!(c.configs[0].file.as_ref().unwrap().name, "/conf");
        let mut s = spec();
        let e = apply_update(
            &mut s,
            &update_args(&["--mount-rm", "/nope"]),
            &NetworkIds::new(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "--mount-rm: service web has no mount at /nope");
        let e = apply_update(
            &mut s,
            &update_args(&["--secret-rm", "x"]),
            &NetworkIds::new(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "--secret-rm: service web uses no secret x");
    }
}
