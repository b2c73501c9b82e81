//! Applying one `StoreRequest` to the [`State`]: the version check, one function per action
//! kind, and the undo log that puts everything back when a precondition fails.

use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::{
    Cluster, Config, Meta, Network, Node, NodeAllocation, NodeAvailability, NodeSpecUpdate, Secret,
    Service, ServiceEndpointUpdate, StoreRequest, Task, TaskAllocation, TaskAssignment,
    TaskDesiredUpdate, TaskState, TaskStatus, TaskStatusUpdate,
};

use super::{
    ingress_ports, node_addresses, service_addresses, service_name, task_addresses, Applied, Event,
    Key, Kind, Object, State,
};
use crate::store::StoreError;

impl State {
    /// Applies every action of `req` at raft `index`. On a failed precondition the state is
    /// left exactly as it was and the error names what failed.
    pub(crate) fn apply_request(
        &mut self,
        index: u64,
        req: &StoreRequest,
    ) -> Result<Applied, StoreError> {
        let mut applied = Applied::default();
        for action in &req.actions {
            let Some(action) = &action.action else {
                continue;
            };
            let result = self.check_version(action).and_then(|()| {
                self.apply_action(index, action, &mut applied)
                    .map_err(StoreError::Conflict)
            });
            if let Err(e) = result {
                self.rollback(std::mem::take(&mut applied.undo));
                return Err(e);
            }
        }
        Ok(applied)
    }

    /// Compare-and-set for whole-object puts: a put of an existing object must carry the version
    /// it was read at, so a read-modify-write never silently undoes a write it did not see. Done
    /// at apply time, so every replica (and every future leader) decides the same.
    fn check_version(&self, action: &Action) -> Result<(), StoreError> {
        let (key, sent, stored) = match action {
            Action::PutCluster(c) => (
                (Kind::Cluster, &c.id),
                &c.meta,
                self.clusters.get(&c.id).map(|o| &o.meta),
            ),
            Action::PutNode(n) => (
                (Kind::Node, &n.id),
                &n.meta,
                self.nodes.get(&n.id).map(|o| &o.meta),
            ),
            Action::UpdateService(s) => (
                (Kind::Service, &s.id),
                &s.meta,
                self.services.get(&s.id).map(|o| &o.meta),
            ),
            Action::UpdateNetwork(n) => (
                (Kind::Network, &n.id),
                &n.meta,
                self.networks.get(&n.id).map(|o| &o.meta),
            ),
            Action::UpdateSecret(x) => (
                (Kind::Secret, &x.id),
                &x.meta,
                self.secrets.get(&x.id).map(|o| &o.meta),
            ),
            Action::UpdateConfig(x) => (
                (Kind::Config, &x.id),
                &x.meta,
                self.configs.get(&x.id).map(|o| &o.meta),
            ),
            _ => return Ok(()),
        };
        // A put of an object that does not exist creates it (or fails its own precondition).
        let Some(stored) = stored else {
            return Ok(());
        };
        let version = |m: &Option<Meta>| m.as_ref().map_or(0, |m| m.version);
        let (expected, found) = (version(sent), version(stored));
        if expected != found {
            return Err(StoreError::OutOfSequence {
                kind: key.0,
                id: key.1.clone(),
                expected,
                found,
            });
        }
        Ok(())
    }

    /// Applies one action: a dispatch to the function for its kind. An `Err` is a failed
    /// precondition; stale or late decisions are no-ops, not errors.
    fn apply_action(
        &mut self,
        index: u64,
        action: &Action,
        applied: &mut Applied,
    ) -> Result<(), String> {
        match action {
            Action::PutCluster(c) => self.put_cluster(index, c, applied),
            Action::PutNode(n) => self.put_node(index, n, applied),
            Action::RemoveNode(id) => self.remove_node(index, id, applied),
            Action::RevokeAdmin(r) => {
                self.revoke_admins(index, &r.fingerprints, &r.holder, applied)
            }
            Action::NodeSpecUpdate(update) => return self.node_spec_update(index, update, applied),
            Action::NodeAllocate(alloc) => return self.node_allocate(index, alloc, applied),
            Action::CreateService(s) => return self.create_service(index, s, applied),
            Action::UpdateService(s) => return self.update_service(index, s, applied),
            Action::RemoveService(id) => self.delete(&(Kind::Service, id.clone()), applied),
            Action::ServiceEndpoint(update) => {
                return self.service_endpoint(index, update, applied)
            }
            Action::CreateTask(t) => return self.create_task(index, t, applied),
            Action::RemoveTask(id) => self.delete(&(Kind::Task, id.clone()), applied),
            Action::TaskStatus(update) => self.task_status(index, update, applied),
            Action::TaskDesired(update) => self.task_desired(index, update, applied),
            Action::TaskAssign(assign) => self.task_assign(index, assign, applied),
            Action::TaskAllocate(alloc) => return self.task_allocate(index, alloc, applied),
            Action::CreateNetwork(n) => return self.create_network(index, n, applied),
            Action::UpdateNetwork(n) => return self.update_network(index, n, applied),
            Action::RemoveNetwork(id) => return self.remove_network(id, applied),
            Action::CreateSecret(sec) => return self.create_secret(index, sec, applied),
            Action::RemoveSecret(id) => return self.remove_secret(id, applied),
            Action::CreateConfig(c) => return self.create_config(index, c, applied),
            Action::RemoveConfig(id) => return self.remove_config(id, applied),
            Action::UpdateSecret(sec) => return self.update_secret(index, sec, applied),
            Action::UpdateConfig(c) => return self.update_config(index, c, applied),
        }
        Ok(())
    }

    fn put_cluster(&mut self, index: u64, c: &Cluster, applied: &mut Applied) {
        self.write(index, Object::Cluster(c.clone()), applied);
    }

    fn put_node(&mut self, index: u64, n: &Node, applied: &mut Applied) {
        let mut n = n.clone();
        // Addresses are the allocator's (NodeAllocate): a read-modify-write of the node
        // elsewhere (heartbeats, `node update`) must not undo a fresh allocation.
        if let Some(old) = self.nodes.get(&n.id) {
            n.attachments = old.attachments.clone();
            n.mesh_addr = old.mesh_addr.clone();
        }
        // A manager demoted: the admin certificates issued to it go in the same apply.
        let demoted = n.manager_status.is_none()
            && self
                .nodes
                .get(&n.id)
                .is_some_and(|old| old.manager_status.is_some());
        let id = n.id.clone();
        self.write(index, Object::Node(n), applied);
        if demoted {
            self.revoke_admins(index, &[], &id, applied);
        }
    }

    fn remove_node(&mut self, index: u64, id: &str, applied: &mut Applied) {
        self.delete(&(Kind::Node, id.to_string()), applied);
        self.revoke_admins(index, &[], id, applied);
    }

    fn node_spec_update(
        &mut self,
        index: u64,
        update: &NodeSpecUpdate,
        applied: &mut Applied,
    ) -> Result<(), String> {
        let Some(node) = self.nodes.get(&update.node_id) else {
            return Ok(()); // removed meanwhile: nothing left to edit
        };
        let mut n = node.clone();
        let spec = n.spec.get_or_insert_with(Default::default);
        if let Some(a) = update.availability {
            let a = NodeAvailability::try_from(a)
                .map_err(|_| format!("node availability {a} is not known"))?;
            spec.availability = a as i32;
        }
        for k in &update.labels_rm {
            spec.labels.remove(k);
        }
        for (k, v) in &update.labels_add {
            spec.labels.insert(k.clone(), v.clone());
        }
        // Concurrent adds each passed the caller's check; the sum must pass too.
        shoal_proto::spec::check_label_count("--label-add", spec.labels.len())
            .map_err(|e| e.to_string())?;
        self.write(index, Object::Node(n), applied);
        Ok(())
    }

    fn node_allocate(
        &mut self,
        index: u64,
        alloc: &NodeAllocation,
        applied: &mut Applied,
    ) -> Result<(), String> {
        let Some(node) = self.nodes.get(&alloc.node_id) else {
            return Ok(());
        };
        let mut n = node.clone();
        n.attachments = alloc.attachments.clone();
        n.mesh_addr = alloc.mesh_addr.clone();
        self.check_free(&node_addresses(&n), &(Kind::Node, n.id.clone()))?;
        self.write(index, Object::Node(n), applied);
        Ok(())
    }

    fn create_service(
        &mut self,
        index: u64,
        s: &Service,
        applied: &mut Applied,
    ) -> Result<(), String> {
        let name = service_name(s);
        if self.services.contains_key(&s.id) {
            return Err(format!("service id {:?} already exists", s.id));
        }
        if self.service_by_name.contains_key(name) {
            return Err(format!("service name {name:?} is already in use"));
        }
        self.check_files_exist(None, s)?;
        self.write(index, Object::Service(s.clone()), applied);
        Ok(())
    }

    fn update_service(
        &mut self,
        index: u64,
        s: &Service,
        applied: &mut Applied,
    ) -> Result<(), String> {
        if !self.services.contains_key(&s.id) {
            return Err(format!("service {:?} does not exist", s.id));
        }
        let name = service_name(s);
        match self.service_by_name.get(name) {
            Some(owner) if *owner != s.id => {
                return Err(format!("service name {name:?} is already in use"));
            }
            _ => {}
        }
        self.check_files_exist(self.services.get(&s.id), s)?;
        let mut s = s.clone();
        // The endpoint is the allocator's (ServiceEndpoint): an update read before the
        // allocator's last write must not bring back stale VIPs or ports.
        s.endpoint = self
            .services
            .get(&s.id)
            .and_then(|old| old.endpoint.clone());
        self.write(index, Object::Service(s), applied);
        Ok(())
    }

    fn service_endpoint(
        &mut self,
        index: u64,
        update: &ServiceEndpointUpdate,
        applied: &mut Applied,
    ) -> Result<(), String> {
        let Some(service) = self.services.get(&update.service_id) else {
            return Ok(());
        };
        if service.spec_version != update.spec_version {
            return Ok(()); // the spec changed since: the allocator will look again
        }
        let mut s = service.clone();
        s.endpoint = update.endpoint.clone();
        self.check_free(&service_addresses(&s), &(Kind::Service, s.id.clone()))?;
        self.check_ingress_ports_free(&s)?;
        self.write(index, Object::Service(s), applied);
        Ok(())
    }

    /// Fails if one of `s`'s ingress-mode published ports is held by another service.
    fn check_ingress_ports_free(&self, s: &Service) -> Result<(), String> {
        for key in ingress_ports(s) {
            if let Some(other) = self.ingress_ports.get(&key) {
                if *other != s.id {
                    let other_name = self.services.get(other).map(service_name).unwrap_or(other);
                    return Err(format!(
                        "published port {}/{} is already in use by service {other_name}",
                        key.1, key.0
                    ));
                }
            }
        }
        Ok(())
    }

    fn create_task(&mut self, index: u64, t: &Task, applied: &mut Applied) -> Result<(), String> {
        if self.tasks.contains_key(&t.id) {
            return Err(format!("task id {:?} already exists", t.id));
        }
        self.write(index, Object::Task(t.clone()), applied);
        Ok(())
    }

    fn task_status(&mut self, index: u64, update: &TaskStatusUpdate, applied: &mut Applied) {
        let Some(task) = self.tasks.get(&update.task_id) else {
            return; // the task is gone: a late report, nothing to do
        };
        let Some(status) = &update.status else {
            return;
        };
        let (Ok(next), current) = (TaskState::try_from(status.state), task.observed_state()) else {
            return; // an unknown state number cannot be ordered: ignore it
        };
        // Forward moves only; a report in the same state may refresh its message/err (e.g.
        // why a pending task cannot be placed) or its health (a healthcheck's progress), but
        // never its timestamp: that stays the time of the state change (the updater's monitor
        // window counts from the time a task reached RUNNING).
        let same_with_news = next == current
            && task.status.as_ref().is_some_and(|s| {
                s.message != status.message || s.err != status.err || s.health != status.health
            });
        if !current.can_transition_to(next) && !same_with_news {
            return;
        }
        let mut status = status.clone();
        if next == current {
            status.timestamp = task
                .status
                .as_ref()
                .map_or(status.timestamp, |s| s.timestamp);
        }
        let mut t = task.clone();
        t.status = Some(status);
        self.write(index, Object::Task(t), applied);
    }

    fn task_desired(&mut self, index: u64, update: &TaskDesiredUpdate, applied: &mut Applied) {
        let Some(task) = self.tasks.get(&update.task_id) else {
            return;
        };
        let Ok(next) = TaskState::try_from(update.desired_state) else {
            return;
        };
        let current = TaskState::try_from(task.desired_state).unwrap_or(TaskState::TaskNew);
        if !current.can_transition_to(next) {
            return;
        }
        let mut t = task.clone();
        t.desired_state = next as i32;
        self.write(index, Object::Task(t), applied);
    }

    fn task_assign(&mut self, index: u64, assign: &TaskAssignment, applied: &mut Applied) {
        let Some(task) = self.tasks.get(&assign.task_id) else {
            return;
        };
        // Global tasks come with their node preset; the scheduler confirms it fits.
        let preset_here = task.node_id.is_empty() || task.node_id == assign.node_id;
        if task.observed_state() != TaskState::TaskPending || !preset_here {
            return; // already scheduled (or gone further): a stale decision
        }
        let mut t = task.clone();
        t.node_id = assign.node_id.clone();
        let status = t.status.get_or_insert_with(TaskStatus::default);
        status.state = TaskState::TaskAssigned as i32;
        status.message = "assigned".to_string();
        status.err.clear();
        self.write(index, Object::Task(t), applied);
    }

    fn task_allocate(
        &mut self,
        index: u64,
        alloc: &TaskAllocation,
        applied: &mut Applied,
    ) -> Result<(), String> {
        let Some(task) = self.tasks.get(&alloc.task_id) else {
            return Ok(());
        };
        if task.observed_state() != TaskState::TaskNew {
            return Ok(()); // allocated already: a stale decision
        }
        let mut t = task.clone();
        t.networks = alloc.networks.clone();
        t.endpoint = alloc.endpoint.clone();
        self.check_free(&task_addresses(&t), &(Kind::Task, t.id.clone()))?;
        let status = t.status.get_or_insert_with(TaskStatus::default);
        status.state = TaskState::TaskPending as i32;
        status.message = "pending task scheduling".to_string();
        status.err.clear();
        self.write(index, Object::Task(t), applied);
        Ok(())
    }

    fn create_network(
        &mut self,
        index: u64,
        n: &Network,
        applied: &mut Applied,
    ) -> Result<(), String> {
        if self.networks.contains_key(&n.id) {
            return Err(format!("network id {:?} already exists", n.id));
        }
        self.check_network(n)?;
        self.write(index, Object::Network(n.clone()), applied);
        Ok(())
    }

    fn update_network(
        &mut self,
        index: u64,
        n: &Network,
        applied: &mut Applied,
    ) -> Result<(), String> {
        if !self.networks.contains_key(&n.id) {
            return Err(format!("network {:?} does not exist", n.id));
        }
        self.check_network(n)?;
        self.write(index, Object::Network(n.clone()), applied);
        Ok(())
    }

    /// Removes a network no service names and no live task holds an address on.
    fn remove_network(&mut self, id: &str, applied: &mut Applied) -> Result<(), String> {
        let Some(net) = self.networks.get(id) else {
            return Ok(());
        };
        let name = net.spec.as_ref().map(|s| s.name.as_str()).unwrap_or(id);
        let users: Vec<&str> = self.services_on_network(id).map(service_name).collect();
        if !users.is_empty() {
            return Err(format!(
                "network {name} is in use by service {}: remove the service or \
                 `service update --network-rm {name}` first",
                users.join(", ")
            ));
        }
        if let Some(((_, ip), holder)) = self.addresses.iter().find(|((n, _), _)| n == id) {
            if holder.0 == Kind::Task {
                return Err(format!(
                    "network {name} is still in use by task {} ({ip}); wait until it has stopped",
                    holder.1
                ));
            }
        }
        self.delete(&(Kind::Network, id.to_string()), applied);
        Ok(())
    }

    /// A network's name must be unique and its subnet and VNI must not overlap another network's.
    fn check_network(&self, n: &Network) -> Result<(), String> {
        let name = n.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("");
        if let Some(owner) = self.network_by_name.get(name) {
            if *owner != n.id {
                return Err(format!("network name {name:?} is already in use"));
            }
        }
        let subnet: Option<ipnet::Ipv4Net> = if n.subnet.is_empty() {
            None
        } else {
            Some(
                n.subnet
                    .parse()
                    .map_err(|e| format!("network {name}: subnet {:?}: {e}", n.subnet))?,
            )
        };
        for other in self.networks.values().filter(|o| o.id != n.id) {
            let other_name = other.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("");
            if n.vni != 0 && other.vni == n.vni {
                return Err(format!(
                    "VXLAN id {} is already used by network {other_name}",
                    n.vni
                ));
            }
            let theirs: Option<ipnet::Ipv4Net> = other.subnet.parse().ok();
            if let (Some(a), Some(b)) = (subnet, theirs) {
                if a.contains(&b.network()) || b.contains(&a.network()) {
                    return Err(format!(
                        "subnet {a} overlaps subnet {b} of network {other_name}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every secret and config `new` mounts that `old` did not must exist: a `secret rm` that
    /// raced the control API's resolution cannot leave a service mounting nothing. What `old`
    /// mounted cannot have gone (its removal was refused); what only its previous spec mounted
    /// may have (as in docker), and a rollback to it is not refused here.
    fn check_files_exist(&self, old: Option<&Service>, new: &Service) -> Result<(), String> {
        let Some(c) = super::container_of(new) else {
            return Ok(());
        };
        let previous = old
            .and_then(|o| o.previous_spec.as_deref())
            .and_then(|sp| sp.task.as_ref())
            .and_then(|t| t.container.as_ref());
        let olds: Vec<&shoal_proto::v1::ContainerSpec> = old
            .and_then(super::container_of)
            .into_iter()
            .chain(previous)
            .collect();
        for r in &c.secrets {
            let known = olds
                .iter()
                .any(|o| o.secrets.iter().any(|x| x.secret_id == r.secret_id));
            if !known && !self.secrets.contains_key(&r.secret_id) {
                return Err(format!("secret not found: {}", r.secret_name));
            }
        }
        for r in &c.configs {
            let known = olds
                .iter()
                .any(|o| o.configs.iter().any(|x| x.config_id == r.config_id));
            if !known && !self.configs.contains_key(&r.config_id) {
                return Err(format!("config not found: {}", r.config_name));
            }
        }
        Ok(())
    }

    /// Secrets are immutable: created once under a name no other secret has.
    fn create_secret(
        &mut self,
        index: u64,
        sec: &Secret,
        applied: &mut Applied,
    ) -> Result<(), String> {
        let name = sec.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("");
        if self.secrets.contains_key(&sec.id) {
            return Err(format!("secret id {:?} already exists", sec.id));
        }
        if self.secret_by_name.contains_key(name) {
            return Err(format!("secret {name} already exists"));
        }
        self.write(index, Object::Secret(sec.clone()), applied);
        Ok(())
    }

    /// Removes a secret no service's current spec mounts (a `previous_spec` does not count,
    /// as in docker: a rollback to it then fails to resolve instead).
    fn remove_secret(&mut self, id: &str, applied: &mut Applied) -> Result<(), String> {
        let Some(sec) = self.secrets.get(id) else {
            return Ok(());
        };
        let users: Vec<&str> = self.services_using_secret(id).map(service_name).collect();
        if !users.is_empty() {
            let name = sec.spec.as_ref().map(|s| s.name.as_str()).unwrap_or(id);
            return Err(format!(
                "secret {name} is in use by service {}",
                users.join(", ")
            ));
        }
        self.delete(&(Kind::Secret, id.to_string()), applied);
        Ok(())
    }

    /// Configs are immutable: created once under a name no other config has.
    fn create_config(
        &mut self,
        index: u64,
        c: &Config,
        applied: &mut Applied,
    ) -> Result<(), String> {
        let name = c.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("");
        if self.configs.contains_key(&c.id) {
            return Err(format!("config id {:?} already exists", c.id));
        }
        if self.config_by_name.contains_key(name) {
            return Err(format!("config {name} already exists"));
        }
        self.write(index, Object::Config(c.clone()), applied);
        Ok(())
    }

    /// A secret's labels change; its name and data never do (docker's rule: rotate by creating
    /// a new secret).
    fn update_secret(
        &mut self,
        index: u64,
        sec: &Secret,
        applied: &mut Applied,
    ) -> Result<(), String> {
        let Some(old) = self.secrets.get(&sec.id) else {
            return Err(format!("secret {:?} does not exist", sec.id));
        };
        let (old, new) = (
            old.spec.clone().unwrap_or_default(),
            sec.spec.clone().unwrap_or_default(),
        );
        immutable_data(
            "secret",
            &old.name,
            (&old.name, &old.data),
            (&new.name, &new.data),
        )?;
        self.write(index, Object::Secret(sec.clone()), applied);
        Ok(())
    }

    /// A config's labels change; its name and data never do.
    fn update_config(
        &mut self,
        index: u64,
        c: &Config,
        applied: &mut Applied,
    ) -> Result<(), String> {
        let Some(old) = self.configs.get(&c.id) else {
            return Err(format!("config {:?} does not exist", c.id));
        };
        let (old, new) = (
            old.spec.clone().unwrap_or_default(),
            c.spec.clone().unwrap_or_default(),
        );
        immutable_data(
            "config",
            &old.name,
            (&old.name, &old.data),
            (&new.name, &new.data),
        )?;
        self.write(index, Object::Config(c.clone()), applied);
        Ok(())
    }

    /// Removes a config no service's current spec mounts.
    fn remove_config(&mut self, id: &str, applied: &mut Applied) -> Result<(), String> {
        let Some(c) = self.configs.get(id) else {
            return Ok(());
        };
        let users: Vec<&str> = self.services_using_config(id).map(service_name).collect();
        if !users.is_empty() {
            let name = c.spec.as_ref().map(|s| s.name.as_str()).unwrap_or(id);
            return Err(format!(
                "config {name} is in use by service {}",
                users.join(", ")
            ));
        }
        self.delete(&(Kind::Config, id.to_string()), applied);
        Ok(())
    }

    /// Removes admin credentials (see [`crate::store::admin_credentials::revoke_admin_credentials`]), writing the
    /// cluster object only if one went.
    fn revoke_admins(
        &mut self,
        index: u64,
        fingerprints: &[String],
        holder: &str,
        applied: &mut Applied,
    ) {
        let Some(mut c) = self.cluster().cloned() else {
            return;
        };
        if crate::store::admin_credentials::revoke_admin_credentials(&mut c, fingerprints, holder) {
            self.write(index, Object::Cluster(c), applied);
        }
    }

    /// Upserts `obj` with its version set to the raft `index` that writes it, recording the
    /// event and the undo entry.
    fn write(&mut self, index: u64, mut obj: Object, applied: &mut Applied) {
        meta_mut(&mut obj).get_or_insert_with(Meta::default).version = index;
        let key = obj.key();
        let old = self.put(obj.clone());
        applied.events.push(match &old {
            Some(old) => Event::Updated {
                old: old.clone(),
                new: obj,
            },
            None => Event::Created(obj),
        });
        applied.undo.push((key.clone(), old));
        applied.touched.insert(key);
    }

    /// Deletes `key` if present (removing a missing object is not an error: removals race).
    fn delete(&mut self, key: &Key, applied: &mut Applied) {
        if let Some(old) = self.remove(key) {
            applied.events.push(Event::Removed(old.clone()));
            applied.undo.push((key.clone(), Some(old)));
            applied.touched.insert(key.clone());
        }
    }
}

/// The object's metadata, whatever its kind.
fn meta_mut(obj: &mut Object) -> &mut Option<Meta> {
    match obj {
        Object::Cluster(o) => &mut o.meta,
        Object::Node(o) => &mut o.meta,
        Object::Service(o) => &mut o.meta,
        Object::Task(o) => &mut o.meta,
        Object::Network(o) => &mut o.meta,
        Object::Secret(o) => &mut o.meta,
        Object::Config(o) => &mut o.meta,
    }
}

/// The refusal of an update that would change a secret's or config's name or data.
fn immutable_data(
    kind: &str,
    name: &str,
    (old_name, old_data): (&str, &[u8]),
    (new_name, new_data): (&str, &[u8]),
) -> Result<(), String> {
    if old_name != new_name {
        return Err(format!("{kind} {name}: its name cannot change"));
    }
    // Digests are compared, not the data, so the time a refusal takes says nothing of where a
    // secret differs from a guess.
    use sha2::{Digest as _, Sha256};
    if Sha256::digest(old_data) != Sha256::digest(new_data) {
        return Err(format!(
            "{kind} {name}: only its labels can be updated, its data is immutable: create a \
             {kind} with another name and point the services at it (`service update \
             --{kind}-rm {name} --{kind}-add source=NEW,target={name}`)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use shoal_proto::v1::store_action::Action;
    use shoal_proto::v1::{HealthStatus, Task, TaskState, TaskStatus, TaskStatusUpdate};

    use crate::store::Store;
    use crate::test_support::apply;

    fn report(state: TaskState, at: i64, health: &str) -> Action {
        Action::TaskStatus(TaskStatusUpdate {
            task_id: "t".into(),
            status: Some(TaskStatus {
                state: state as i32,
                timestamp: at,
                message: "started".into(),
                health: Some(HealthStatus {
                    status: health.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
    }

    /// Health reports in the same state are kept (`service ps` shows them), but the timestamp
    /// stays the time the task reached its state (the updater's monitor window counts from it).
    #[test]
    fn health_in_the_same_state_is_kept_with_the_state_timestamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open store");
        let task = Task {
            id: "t".into(),
            status: Some(TaskStatus {
                state: TaskState::TaskStarting as i32,
                ..Default::default()
            }),
            desired_state: TaskState::TaskRunning as i32,
            ..Default::default()
        };
        apply(&store, 1, vec![Action::CreateTask(task)]);
        apply(
            &store,
            2,
            vec![report(TaskState::TaskRunning, 10, "healthy")],
        );
        apply(
            &store,
            3,
            vec![report(TaskState::TaskRunning, 20, "unhealthy")],
        );
        let st = store
            .read(|s| s.task("t").and_then(|t| t.status.clone()))
            .expect("task");
        assert_eq!(st.timestamp, 10);
        assert_eq!(st.health.map(|h| h.status).as_deref(), Some("unhealthy"));
        // The same report again changes nothing.
        apply(
            &store,
            4,
            vec![report(TaskState::TaskRunning, 30, "unhealthy")],
        );
        let v = store.read(|s| s.task("t").and_then(|t| t.meta).map(|m| m.version));
        assert_eq!(v, Some(3));
    }
}
