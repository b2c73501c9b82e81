//! `shoalctl stack deploy|ls|services|ps|rm|config`: a stack is the services, networks, secrets
//! and configs labelled `com.docker.stack.namespace=STACK`, made from compose files as
//! `docker stack deploy` makes them (the loader is `crate::compose`).

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{anyhow, Result};
use serde_json::json;
use shoal_proto::v1::{
    CreateNetworkRequest, CreateServiceRequest, EndpointSpec, ListNetworksRequest,
    RemoveNetworkRequest, RemoveServiceRequest, Service, ServiceSpec, ServiceSummary,
    UpdateServiceRequest,
};
use shoal_proto::wire;

use super::secret::{self as data, DataObject, Kind};
use super::service;
use super::{converge, rollout};
use crate::cli::{
    Format, StackConfigArgs, StackDeployArgs, StackPsArgs, StackRmArgs, StackServicesArgs,
};
use crate::client::{status, Control};
use crate::compose::{self, LoadOptions, Resource, StackPlan};
use crate::output::{self, json as js, table::Table};

/// The label naming an object's stack, as docker's.
pub use crate::compose::NAMESPACE_LABEL;

fn load_options(files: &[std::path::PathBuf]) -> LoadOptions {
    LoadOptions {
        files: files.to_vec(),
        env: std::env::vars().collect(),
    }
}

fn print_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("WARNING: {w}");
    }
}

/// A stack name as docker takes it: anything not blank (the manager checks the service,
/// network, secret and config names made from it).
pub fn check_stack_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(anyhow!("invalid stack name {name:?}: it must not be blank"));
    }
    Ok(())
}

/// `stack config -c FILE...`: prints the merged, interpolated file.
pub fn config(a: &StackConfigArgs) -> Result<()> {
    let project = compose::load(&load_options(&a.files.compose_files))?;
    print_warnings(&project.warnings);
    output::print(&project.yaml)?;
    Ok(())
}

/// Loads the compose files and plans the stack: everything checked before a manager is dialled.
pub fn load_plan(a: &StackDeployArgs) -> Result<StackPlan> {
    check_stack_name(&a.stack)?;
    let project = compose::load(&load_options(&a.files.compose_files))?;
    let plan = compose::plan(&project, &a.stack)?;
    // The plan's warnings include the loader's.
    print_warnings(&plan.warnings);
    Ok(plan)
}

/// A `Creating ...` line of `stack deploy`, unless `--quiet`.
fn progress(quiet: bool, line: &str) -> Result<()> {
    if !quiet {
        output::print(line)?;
    }
    Ok(())
}

/// The order to create services in: each after the stack services it depends on, otherwise as
/// given. A cycle is an error naming the services in it.
pub fn deploy_order(services: &[ServiceSpec]) -> Result<Vec<usize>> {
    let names: HashSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    let mut placed: HashSet<&str> = HashSet::new();
    let mut order = Vec::with_capacity(services.len());
    while order.len() < services.len() {
        let next = services.iter().enumerate().find(|(i, s)| {
            !order.contains(i)
                && s.depends_on.iter().all(|d| {
                    // A dependency outside the stack is the manager's to wait for.
                    !names.contains(d.service.as_str()) || placed.contains(d.service.as_str())
                })
        });
        match next {
            Some((i, s)) => {
                placed.insert(s.name.as_str());
                order.push(i);
            }
            None => {
                let mut stuck: Vec<&str> = services
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !order.contains(i))
                    .map(|(_, s)| s.name.as_str())
                    .collect();
                stuck.sort();
                return Err(anyhow!(
                    "depends_on: the services {} depend on each other in a cycle",
                    stuck.join(", ")
                ));
            }
        }
    }
    Ok(order)
}

/// Name <-> ID of the objects a spec refers to.
#[derive(Debug, Clone, Default)]
pub struct Refs {
    /// Network name -> ID.
    pub networks: HashMap<String, String>,
    /// Secret name -> ID.
    pub secrets: HashMap<String, String>,
    /// Config name -> ID.
    pub configs: HashMap<String, String>,
}

impl Refs {
    /// Fills in the IDs of the networks, secrets and configs a planned spec names.
    pub fn resolve(&self, spec: &mut ServiceSpec) -> Result<()> {
        let service = spec.name.clone();
        let Some(task) = spec.task.as_mut() else {
            return Ok(());
        };
        for n in &mut task.networks {
            if let Some(id) = self.networks.get(&n.target) {
                n.target = id.clone();
            } else if !self.networks.values().any(|id| id == &n.target) {
                return Err(anyhow!(
                    "service {service}: network {:?} not found",
                    n.target
                ));
            }
        }
        if let Some(c) = task.container.as_mut() {
            let id_of = |ids: &HashMap<String, String>, kind: &str, name: &str| {
                ids.get(name)
                    .cloned()
                    .ok_or_else(|| anyhow!("service {service}: {kind} {name:?} not found"))
            };
            for s in &mut c.secrets {
                s.secret_id = id_of(&self.secrets, "secret", &s.secret_name)?;
            }
            for r in &mut c.configs {
                r.config_id = id_of(&self.configs, "config", &r.config_name)?;
            }
        }
        Ok(())
    }

    /// The name of an ID in a name -> ID map.
    fn name_of<'a>(map: &'a HashMap<String, String>, id: &str) -> Option<&'a str> {
        map.iter().find(|(_, v)| *v == id).map(|(k, _)| k.as_str())
    }

    /// A spec with what the manager fills in or keeps to itself made equal, so a stored spec and
    /// a planned one compare on what the user wrote.
    pub fn normalized(&self, spec: &ServiceSpec) -> ServiceSpec {
        let mut s = spec.clone();
        let ep = s.endpoint.get_or_insert_with(EndpointSpec::default);
        if ep.mode.is_empty() {
            ep.mode = wire::EndpointMode::default().as_str().into();
        }
        if let Some(task) = s.task.as_mut() {
            task.force_update = 0;
            for n in &mut task.networks {
                if let Some(id) = self.networks.get(&n.target) {
                    n.target = id.clone();
                }
            }
            if let Some(c) = task.container.as_mut() {
                c.registry_auth = None;
                for r in &mut c.secrets {
                    if r.secret_name.is_empty() {
                        r.secret_name = Self::name_of(&self.secrets, &r.secret_id)
                            .unwrap_or_default()
                            .to_string();
                    }
                    r.secret_id.clear();
                }
                for r in &mut c.configs {
                    if r.config_name.is_empty() {
                        r.config_name = Self::name_of(&self.configs, &r.config_id)
                            .unwrap_or_default()
                            .to_string();
                    }
                    r.config_id.clear();
                }
            }
        }
        s
    }

    /// Whether the planned spec asks for something the stored one does not have.
    pub fn changed(&self, planned: &ServiceSpec, stored: &ServiceSpec) -> bool {
        self.normalized(planned) != self.normalized(stored)
    }
}

/// The stack an object belongs to, from its labels.
fn stack_of(labels: &HashMap<String, String>) -> Option<&str> {
    labels.get(NAMESPACE_LABEL).map(String::as_str)
}

fn service_labels(s: &Service) -> Option<&HashMap<String, String>> {
    s.spec.as_ref().map(|s| &s.labels)
}

/// The services of one stack, by name.
async fn stack_services(c: &mut Control, stack: &str) -> Result<Vec<ServiceSummary>> {
    Ok(service::all_services(c)
        .await?
        .into_iter()
        .filter(|s| {
            s.service
                .as_ref()
                .and_then(service_labels)
                .and_then(stack_of)
                == Some(stack)
        })
        .collect())
}

fn data_map(objects: &[DataObject]) -> HashMap<String, String> {
    objects
        .iter()
        .map(|o| (o.name.clone(), o.id.clone()))
        .collect()
}

/// Makes sure the stack's secrets or configs exist: external ones must, the others are created.
/// Their data is immutable: a config whose stored data differs is an error saying how to rotate
/// it (a secret's data is never returned, so an existing secret is kept as it is).
async fn ensure_data<S>(
    c: &mut Control,
    quiet: bool,
    kind: Kind,
    wanted: &[Resource<S>],
    split: impl Fn(&S) -> (String, HashMap<String, String>, Vec<u8>),
) -> Result<HashMap<String, String>> {
    let existing = data::list(c, kind).await?;
    let mut ids = data_map(&existing);
    for r in wanted {
        match r {
            Resource::External(name) => {
                if !ids.contains_key(name) {
                    return Err(anyhow!(
                        "{} {name:?} is declared as external, but could not be found: create it \
                         with `shoalctl {} create {name} FILE` first",
                        kind.noun(),
                        kind.noun()
                    ));
                }
            }
            Resource::Create(spec) => {
                let (name, labels, bytes) = split(spec);
                if existing.iter().any(|o| o.name == name) {
                    // The manager compares the data (a secret's never leaves it) and takes the
                    // labels.
                    if !data::update_data(c, kind, &name, labels, bytes).await? {
                        return Err(anyhow!(
                            "{} {name} already exists with different data: {}s are immutable; \
                             to change it, give the new version a new name (e.g. `name: \
                             {name}_v2` in the compose file) and deploy again",
                            kind.noun(),
                            kind.noun()
                        ));
                    }
                    continue;
                }
                progress(quiet, &format!("Creating {} {name}\n", kind.noun()))?;
                let id = data::create_data(c, kind, &name, labels, bytes).await?;
                ids.insert(name, id);
            }
        }
    }
    Ok(ids)
}

/// `stack deploy`: `--prune` removes the stack's services that are no longer in the files;
/// then networks, secrets and configs, then each service created or updated (only when its spec
/// changed), dependencies first.
pub async fn deploy(c: &mut Control, plan: StackPlan, a: &StackDeployArgs) -> Result<()> {
    // As docker: prune first, then networks, secrets, configs and services.
    let existing: BTreeMap<String, Service> = service::all_services(c)
        .await?
        .into_iter()
        .filter_map(|s| s.service)
        .map(|s| {
            (
                s.spec.as_ref().map(|x| x.name.clone()).unwrap_or_default(),
                s,
            )
        })
        .collect();
    if a.prune {
        let planned: HashSet<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
        for svc in existing.values() {
            let spec = svc.spec.clone().unwrap_or_default();
            if stack_of(&spec.labels) == Some(plan.stack.as_str())
                && !planned.contains(spec.name.as_str())
            {
                progress(a.quiet, &format!("Removing service {}\n", spec.name))?;
                c.remove_service(RemoveServiceRequest {
                    name_or_id: svc.id.clone(),
                })
                .await
                .map_err(|s| status(s).context(format!("removing service {}", spec.name)))?;
            }
        }
    }
    let mut refs = Refs::default();
    // Networks: external ones must exist before anything is created.
    let networks = c
        .list_networks(ListNetworksRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .networks;
    for n in &networks {
        if let Some(spec) = &n.spec {
            refs.networks.insert(spec.name.clone(), n.id.clone());
        }
    }
    for r in &plan.networks {
        if let Resource::External(name) = r {
            if !refs.networks.contains_key(name) {
                return Err(anyhow!(
                    "network {name:?} is declared as external, but could not be found: create \
                     it with `shoalctl network create {name}` before the stack is deployed"
                ));
            }
        }
    }
    for r in &plan.networks {
        if let Resource::Create(spec) = r {
            if refs.networks.contains_key(&spec.name) {
                continue;
            }
            progress(a.quiet, &format!("Creating network {}\n", spec.name))?;
            let net = c
                .create_network(CreateNetworkRequest {
                    spec: Some(spec.clone()),
                })
                .await
                .map_err(status)?
                .into_inner()
                .network
                .ok_or_else(|| anyhow!("the manager answered without the created network"))?;
            refs.networks.insert(spec.name.clone(), net.id);
        }
    }
    refs.secrets = ensure_data(c, a.quiet, Kind::Secret, &plan.secrets, |s| {
        (s.name.clone(), s.labels.clone(), s.data.clone())
    })
    .await?;
    refs.configs = ensure_data(c, a.quiet, Kind::Config, &plan.configs, |s| {
        (s.name.clone(), s.labels.clone(), s.data.clone())
    })
    .await?;

    // What --detach=false waits for, in deploy order.
    let mut created: Vec<Service> = Vec::new();
    let mut updated: Vec<(String, Option<shoal_proto::v1::UpdateStatus>)> = Vec::new();
    for i in deploy_order(&plan.services)? {
        let mut spec = plan.services[i].clone();
        refs.resolve(&mut spec)?;
        let name = spec.name.clone();
        let stored = existing.get(&name).and_then(|svc| svc.spec.as_ref());
        if let Some(warning) =
            super::resolve_image::resolve(&mut spec, stored, a.resolve_image).await
        {
            eprintln!("WARNING: {warning}");
        }
        match existing.get(&name) {
            Some(svc) => {
                let stored = svc.spec.clone().unwrap_or_default();
                // Fresh credentials alone do not roll a service: they go with the next change.
                if !refs.changed(&spec, &stored) {
                    continue;
                }
                // `--force` counts stay as they are: a redeploy is not a forced update.
                if let (Some(t), Some(old)) = (spec.task.as_mut(), stored.task.as_ref()) {
                    t.force_update = old.force_update;
                }
                if a.with_registry_auth {
                    service::attach_registry_auth(&mut spec)?;
                }
                progress(
                    a.quiet,
                    &format!("Updating service {name} (id: {})\n", svc.id),
                )?;
                c.update_service(UpdateServiceRequest {
                    name_or_id: svc.id.clone(),
                    spec: Some(spec),
                    version: svc.meta.map_or(0, |m| m.version),
                    rollback: String::new(),
                })
                .await
                .map_err(|s| status(s).context(format!("updating service {name}")))?;
                updated.push((svc.id.clone(), svc.update_status.clone()));
            }
            None => {
                if a.with_registry_auth {
                    service::attach_registry_auth(&mut spec)?;
                }
                progress(a.quiet, &format!("Creating service {name}\n"))?;
                let svc = c
                    .create_service(CreateServiceRequest { spec: Some(spec) })
                    .await
                    .map_err(|s| status(s).context(format!("creating service {name}")))?
                    .into_inner()
                    .service;
                created.extend(svc);
            }
        }
    }
    if a.detach {
        return Ok(());
    }
    for svc in &created {
        converge::wait(c, svc, a.timeout).await?;
    }
    for (id, before) in updated {
        rollout::follow(c, &id, before, false, a.timeout, a.quiet).await?;
    }
    Ok(())
}

/// `stack ls`: NAME, SERVICES.
pub async fn ls(c: &mut Control, format: Format) -> Result<()> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for s in service::all_services(c).await? {
        if let Some(stack) = s
            .service
            .as_ref()
            .and_then(service_labels)
            .and_then(stack_of)
        {
            *counts.entry(stack.to_string()).or_default() += 1;
        }
    }
    let mut out = String::new();
    match format {
        Format::Json => counts.iter().for_each(|(name, n)| {
            out.push_str(&js::line(&json!({"Name": name, "Namespace": "",
                "Orchestrator": "Swarm", "Services": n.to_string()})))
        }),
        Format::Table => {
            let mut t = Table::new(&["NAME", "SERVICES"]);
            counts
                .iter()
                .for_each(|(name, n)| t.row(vec![name.clone(), n.to_string()]));
            out = t.render();
        }
    }
    Ok(output::print(&out)?)
}

/// `stack services STACK`: `service ls` of the stack's services.
pub async fn services(c: &mut Control, a: &StackServicesArgs, format: Format) -> Result<()> {
    let services = stack_services(c, &a.stack).await?;
    if services.is_empty() {
        eprintln!("Nothing found in stack: {}", a.stack);
        return Ok(());
    }
    service::print_services(&services, a.quiet, format)
}

/// `stack ps STACK`: `service ps` of every service of the stack.
pub async fn ps(c: &mut Control, a: &StackPsArgs, format: Format) -> Result<()> {
    let services = stack_services(c, &a.stack).await?;
    let now = shoal_proto::now_ns();
    let mut rows = Vec::new();
    for svc in services.iter().filter_map(|s| s.service.as_ref()) {
        rows.extend(service::tasks_of(c, svc, now, a.no_trunc).await?);
    }
    if rows.is_empty() {
        eprintln!("Nothing found in stack: {}", a.stack);
        return Ok(());
    }
    service::print_tasks(&rows, a.quiet, a.no_trunc, format)
}

/// `stack rm STACK...`: the services first, then the secrets, configs and networks labelled
/// with the stack; volumes are never removed. Keeps going past failures.
pub async fn rm(c: &mut Control, a: &StackRmArgs) -> Result<()> {
    let mut errors = Vec::new();
    for stack in &a.stacks {
        let mut removed_any = false;
        for s in stack_services(c, stack).await? {
            let Some(svc) = s.service else { continue };
            let name = svc.spec.map(|s| s.name).unwrap_or_default();
            removed_any = true;
            output::print(&format!("Removing service {name}\n"))?;
            if let Err(s) = c
                .remove_service(RemoveServiceRequest {
                    name_or_id: svc.id.clone(),
                })
                .await
            {
                errors.push(format!("service {name}: {}", status(s)));
            }
        }
        for kind in [Kind::Secret, Kind::Config] {
            for o in data::list(c, kind).await? {
                if stack_of(&o.labels) != Some(stack.as_str()) {
                    continue;
                }
                removed_any = true;
                output::print(&format!("Removing {} {}\n", kind.noun(), o.name))?;
                if let Err(e) = data::remove(c, kind, &o.id).await {
                    errors.push(format!(
                        "{} {}: {}",
                        kind.noun(),
                        o.name,
                        crate::error_chain(&e)
                    ));
                }
            }
        }
        let networks = c
            .list_networks(ListNetworksRequest {})
            .await
            .map_err(status)?
            .into_inner()
            .networks;
        for n in networks {
            let spec = n.spec.unwrap_or_default();
            if stack_of(&spec.labels) != Some(stack.as_str()) {
                continue;
            }
            removed_any = true;
            output::print(&format!("Removing network {}\n", spec.name))?;
            if let Err(s) = c
                .remove_network(RemoveNetworkRequest {
                    name_or_id: n.id.clone(),
                })
                .await
            {
                errors.push(format!("network {}: {}", spec.name, status(s)));
            }
        }
        if !removed_any {
            eprintln!("Nothing found in stack: {stack}");
        }
    }
    super::fail_if_any(errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{
        ConfigReference, ContainerSpec, DependencyCondition, NetworkAttachmentConfig, RegistryAuth,
        SecretReference, ServiceDependency, TaskSpec,
    };

    fn svc(name: &str, deps: &[&str]) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            depends_on: deps
                .iter()
                .map(|d| ServiceDependency {
                    service: d.to_string(),
                    condition: DependencyCondition::DependsStarted as i32,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn names(services: &[ServiceSpec], order: &[usize]) -> Vec<String> {
        order.iter().map(|i| services[*i].name.clone()).collect()
    }

    #[test]
    fn dependencies_are_created_first() {
        let s = vec![
            svc("app_web", &["app_api"]),
            svc("app_api", &["app_db", "app_cache"]),
            svc("app_db", &[]),
            svc("app_cache", &["other_stack_thing"]),
        ];
        let order = deploy_order(&s).unwrap();
        assert_eq!(
            names(&s, &order),
            ["app_db", "app_cache", "app_api", "app_web"]
        );
        let plain = vec![svc("a", &[]), svc("b", &[])];
        assert_eq!(deploy_order(&plain).unwrap(), [0, 1]);
        let cycle = vec![svc("a", &["b"]), svc("b", &["a"]), svc("c", &[])];
        let e = deploy_order(&cycle).unwrap_err().to_string();
        assert!(e.contains("a, b") && e.contains("cycle"), "{e}");
    }

    fn planned() -> ServiceSpec {
        ServiceSpec {
            name: "app_web".into(),
            labels: [(NAMESPACE_LABEL.to_string(), "app".to_string())].into(),
            replicas: 2,
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: "nginx".into(),
                    secrets: vec![SecretReference {
                        secret_id: String::new(),
                        secret_name: "app_pw".into(),
                        file: None,
                    }],
                    configs: vec![ConfigReference {
                        config_id: String::new(),
                        config_name: "app_conf".into(),
                        file: None,
                    }],
                    ..Default::default()
                }),
                networks: vec![NetworkAttachmentConfig {
                    target: "app_default".into(),
                    aliases: vec!["web".into()],
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn refs() -> Refs {
        Refs {
            networks: [("app_default".to_string(), "net1".to_string())].into(),
            secrets: [("app_pw".to_string(), "sec1".to_string())].into(),
            configs: [("app_conf".to_string(), "cfg1".to_string())].into(),
        }
    }

    #[test]
    fn names_resolve_to_ids() {
        let mut s = planned();
        refs().resolve(&mut s).unwrap();
        let t = s.task.unwrap();
        assert_eq!(t.networks[0].target, "net1");
        let c = t.container.unwrap();
        assert_eq!(c.secrets[0].secret_id, "sec1");
        assert_eq!(c.configs[0].config_id, "cfg1");
        let mut missing = planned();
        let r = Refs {
            secrets: HashMap::new(),
            ..refs()
        };
        let e = r.resolve(&mut missing).unwrap_err().to_string();
        assert!(e.contains("secret \"app_pw\" not found"), "{e}");
    }

    #[test]
    fn an_unchanged_service_is_not_updated() {
        let r = refs();
        let mut stored = planned();
        r.resolve(&mut stored).unwrap();
        // What the manager fills in or keeps to itself.
        stored.endpoint = Some(EndpointSpec {
            mode: "vip".into(),
            ports: vec![],
        });
        let t = stored.task.as_mut().unwrap();
        t.force_update = 3;
        let c = t.container.as_mut().unwrap();
        c.secrets[0].secret_name.clear();
        c.registry_auth = Some(RegistryAuth::default());
        let mut plan = planned();
        r.resolve(&mut plan).unwrap();
        assert!(!r.changed(&plan, &stored));
        plan.replicas = 3;
        assert!(r.changed(&plan, &stored));
        let mut env = planned();
        env.task
            .as_mut()
            .unwrap()
            .container
            .as_mut()
            .unwrap()
            .env
            .push("A=1".into());
        assert!(r.changed(&env, &stored));
    }

    #[test]
    fn stack_names() {
        assert!(check_stack_name("app").is_ok());
        assert!(check_stack_name("my-app_2").is_ok());
        assert!(check_stack_name("").is_err());
        assert!(check_stack_name("  ").is_err());
    }
}
