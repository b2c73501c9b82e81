//! The in-memory, indexed cluster state and the pure, deterministic apply of one `StoreRequest`.
//!
//! Nothing here does I/O: [`State::apply_request`] mutates the maps, records an undo log so a
//! failed precondition (or a failed disk write) can put everything back, and returns the events
//! and the keys whose new values the caller must persist.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::{Cluster, Meta, Node, Service, StoreRequest, Task, TaskState, TaskStatus};

/// A store object of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// The cluster object (CA, join token secrets, settings).
    Cluster(Cluster),
    /// A node (worker or manager host).
    Node(Node),
    /// A service.
    Service(Service),
    /// A task (one replica, or one node's instance of a global service).
    Task(Task),
}

/// One change made by an applied request.
// The variants stay unboxed as the interface fixes them; events are built once per change and
// shared behind an `Arc`, so the size difference costs nothing that matters.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An object that did not exist before.
    Created(Object),
    /// An existing object changed.
    Updated {
        /// The object before the change.
        old: Object,
        /// The object after the change.
        new: Object,
    },
    /// An object was deleted; this is its last value.
    Removed(Object),
}

/// The kind of a store object; also the index of its sled tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// [`Cluster`].
    Cluster = 0,
    /// [`Node`].
    Node = 1,
    /// [`Service`].
    Service = 2,
    /// [`Task`].
    Task = 3,
}

/// Identifies one object: its kind and id.
pub type Key = (Kind, String);

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Cluster(_) => Kind::Cluster,
            Object::Node(_) => Kind::Node,
            Object::Service(_) => Kind::Service,
            Object::Task(_) => Kind::Task,
        }
    }

    /// The object's id.
    pub fn id(&self) -> &str {
        match self {
            Object::Cluster(o) => &o.id,
            Object::Node(o) => &o.id,
            Object::Service(o) => &o.id,
            Object::Task(o) => &o.id,
        }
    }

    /// The object's kind and id.
    pub fn key(&self) -> Key {
        (self.kind(), self.id().to_string())
    }
}

/// What a successful apply changed: events for watchers and keys to persist.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// One event per effective change, in action order.
    pub events: Vec<Event>,
    /// Every key whose value changed; the caller writes the current value (or a delete).
    pub touched: BTreeSet<Key>,
    /// Previous values, oldest first, so [`State::rollback`] can undo the whole request.
    pub undo: Vec<(Key, Option<Object>)>,
}

/// The cluster state: every object, with the indexes the manager's components query.
#[derive(Debug, Clone, Default)]
pub struct State {
    clusters: BTreeMap<String, Cluster>,
    nodes: BTreeMap<String, Node>,
    services: BTreeMap<String, Service>,
    tasks: BTreeMap<String, Task>,
    service_by_name: HashMap<String, String>,
    node_by_fingerprint: HashMap<String, String>,
    tasks_by_service: HashMap<String, BTreeSet<String>>,
    tasks_by_node: HashMap<String, BTreeSet<String>>,
}

impl State {
    /// The cluster object, once `init` has written it.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.clusters.values().next()
    }

    /// A node by id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// All nodes, ordered by id.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// The node whose current certificate has this SHA-256 fingerprint.
    pub fn node_by_fingerprint(&self, fp: &str) -> Option<&Node> {
        self.node_by_fingerprint
            .get(fp)
            .and_then(|id| self.nodes.get(id))
    }

    /// A service by id.
    pub fn service(&self, id: &str) -> Option<&Service> {
        self.services.get(id)
    }

    /// A service by its (unique) name.
    pub fn service_by_name(&self, name: &str) -> Option<&Service> {
        self.service_by_name
            .get(name)
            .and_then(|id| self.services.get(id))
    }

    /// All services, ordered by id.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// A task by id.
    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    /// All tasks, ordered by id.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// The tasks of one service (any state), ordered by id.
    pub fn tasks_of_service(&self, service_id: &str) -> impl Iterator<Item = &Task> {
        self.tasks_by_service
            .get(service_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    /// The tasks assigned to one node (any state), ordered by id.
    pub fn tasks_of_node(&self, node_id: &str) -> impl Iterator<Item = &Task> {
        self.tasks_by_node
            .get(node_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    /// Every object, clusters first, then nodes, services and tasks.
    pub fn objects(&self) -> impl Iterator<Item = Object> + '_ {
        let clusters = self.clusters.values().cloned().map(Object::Cluster);
        let nodes = self.nodes.values().cloned().map(Object::Node);
        let services = self.services.values().cloned().map(Object::Service);
        let tasks = self.tasks.values().cloned().map(Object::Task);
        clusters.chain(nodes).chain(services).chain(tasks)
    }

    /// The current value of an object.
    pub fn get(&self, key: &Key) -> Option<Object> {
        let (kind, id) = key;
        match kind {
            Kind::Cluster => self.clusters.get(id).cloned().map(Object::Cluster),
            Kind::Node => self.nodes.get(id).cloned().map(Object::Node),
            Kind::Service => self.services.get(id).cloned().map(Object::Service),
            Kind::Task => self.tasks.get(id).cloned().map(Object::Task),
        }
    }

    /// Inserts or replaces an object, keeping every index right; returns the previous value.
    pub(crate) fn put(&mut self, obj: Object) -> Option<Object> {
        let old = self.remove(&obj.key());
        match obj {
            Object::Cluster(c) => {
                self.clusters.insert(c.id.clone(), c);
            }
            Object::Node(n) => {
                if !n.cert_fingerprint.is_empty() {
                    self.node_by_fingerprint
                        .insert(n.cert_fingerprint.clone(), n.id.clone());
                }
                self.nodes.insert(n.id.clone(), n);
            }
            Object::Service(s) => {
                let name = s
                    .spec
                    .as_ref()
                    .map(|sp| sp.name.clone())
                    .unwrap_or_default();
                self.service_by_name.insert(name, s.id.clone());
                self.services.insert(s.id.clone(), s);
            }
            Object::Task(t) => {
                self.tasks_by_service
                    .entry(t.service_id.clone())
                    .or_default()
                    .insert(t.id.clone());
                if !t.node_id.is_empty() {
                    self.tasks_by_node
                        .entry(t.node_id.clone())
                        .or_default()
                        .insert(t.id.clone());
                }
                self.tasks.insert(t.id.clone(), t);
            }
        }
        old
    }

    /// Deletes an object and its index entries; returns its last value.
    pub(crate) fn remove(&mut self, key: &Key) -> Option<Object> {
        let (kind, id) = key;
        match kind {
            Kind::Cluster => self.clusters.remove(id).map(Object::Cluster),
            Kind::Node => {
                let n = self.nodes.remove(id)?;
                if self.node_by_fingerprint.get(&n.cert_fingerprint) == Some(&n.id) {
                    self.node_by_fingerprint.remove(&n.cert_fingerprint);
                }
                Some(Object::Node(n))
            }
            Kind::Service => {
                let s = self.services.remove(id)?;
                let name = service_name(&s);
                if self.service_by_name.get(name) == Some(&s.id) {
                    self.service_by_name.remove(name);
                }
                Some(Object::Service(s))
            }
            Kind::Task => {
                let t = self.tasks.remove(id)?;
                remove_from_index(&mut self.tasks_by_service, &t.service_id, &t.id);
                remove_from_index(&mut self.tasks_by_node, &t.node_id, &t.id);
                Some(Object::Task(t))
            }
        }
    }

    /// Puts back the values recorded in an undo log (newest change undone first).
    pub(crate) fn rollback(&mut self, undo: Vec<(Key, Option<Object>)>) {
        for (key, old) in undo.into_iter().rev() {
            match old {
                Some(obj) => {
                    self.put(obj);
                }
                None => {
                    self.remove(&key);
                }
            }
        }
    }

    /// Applies every action of `req` at raft `index`. On a failed precondition the state is
    /// left exactly as it was and the error names what failed.
    pub(crate) fn apply_request(
        &mut self,
        index: u64,
        req: &StoreRequest,
    ) -> Result<Applied, String> {
        let mut applied = Applied::default();
        for action in &req.actions {
            let Some(action) = &action.action else {
                continue;
            };
            if let Err(msg) = self.apply_action(index, action, &mut applied) {
                self.rollback(std::mem::take(&mut applied.undo));
                return Err(msg);
            }
        }
        Ok(applied)
    }

    fn apply_action(
        &mut self,
        index: u64,
        action: &Action,
        applied: &mut Applied,
    ) -> Result<(), String> {
        match action {
            Action::PutCluster(c) => {
                let mut c = c.clone();
                set_version(&mut c.meta, index);
                self.write(Object::Cluster(c), applied);
            }
            Action::PutNode(n) => {
                let mut n = n.clone();
                set_version(&mut n.meta, index);
                self.write(Object::Node(n), applied);
            }
            Action::RemoveNode(id) => self.delete(&(Kind::Node, id.clone()), applied),
            Action::CreateService(s) => {
                let name = service_name(s);
                if self.services.contains_key(&s.id) {
                    return Err(format!("service id {:?} already exists", s.id));
                }
                if self.service_by_name.contains_key(name) {
                    return Err(format!("service name {name:?} is already in use"));
                }
                let mut s = s.clone();
                set_version(&mut s.meta, index);
                self.write(Object::Service(s), applied);
            }
            Action::UpdateService(s) => {
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
                let mut s = s.clone();
                set_version(&mut s.meta, index);
                self.write(Object::Service(s), applied);
            }
            Action::RemoveService(id) => self.delete(&(Kind::Service, id.clone()), applied),
            Action::CreateTask(t) => {
                if self.tasks.contains_key(&t.id) {
                    return Err(format!("task id {:?} already exists", t.id));
                }
                let mut t = t.clone();
                set_version(&mut t.meta, index);
                self.write(Object::Task(t), applied);
            }
            Action::RemoveTask(id) => self.delete(&(Kind::Task, id.clone()), applied),
            Action::TaskStatus(update) => {
                let Some(task) = self.tasks.get(&update.task_id) else {
                    return Ok(()); // the task is gone: a late report, nothing to do
                };
                let Some(status) = &update.status else {
                    return Ok(());
                };
                let (Ok(next), current) = (TaskState::try_from(status.state), task_state(task))
                else {
                    return Ok(()); // an unknown state number cannot be ordered: ignore it
                };
                // Forward moves only; a report in the same state may refresh its message/err
                // (e.g. why a pending task cannot be placed) but never its timestamp alone.
                let same_with_news = next == current
                    && task
                        .status
                        .as_ref()
                        .is_some_and(|s| s.message != status.message || s.err != status.err);
                if !current.can_transition_to(next) && !same_with_news {
                    return Ok(());
                }
                let mut t = task.clone();
                t.status = Some(status.clone());
                set_version(&mut t.meta, index);
                self.write(Object::Task(t), applied);
            }
            Action::TaskDesired(update) => {
                let Some(task) = self.tasks.get(&update.task_id) else {
                    return Ok(());
                };
                let Ok(next) = TaskState::try_from(update.desired_state) else {
                    return Ok(());
                };
                let current = TaskState::try_from(task.desired_state).unwrap_or(TaskState::TaskNew);
                if !current.can_transition_to(next) {
                    return Ok(());
                }
                let mut t = task.clone();
                t.desired_state = next as i32;
                set_version(&mut t.meta, index);
                self.write(Object::Task(t), applied);
            }
            Action::TaskAssign(assign) => {
                let Some(task) = self.tasks.get(&assign.task_id) else {
                    return Ok(());
                };
                // Global tasks come with their node preset; the scheduler confirms it fits.
                let preset_here = task.node_id.is_empty() || task.node_id == assign.node_id;
                if task_state(task) != TaskState::TaskPending || !preset_here {
                    return Ok(()); // already scheduled (or gone further): a stale decision
                }
                let mut t = task.clone();
                t.node_id = assign.node_id.clone();
                let status = t.status.get_or_insert_with(TaskStatus::default);
                status.state = TaskState::TaskAssigned as i32;
                status.message = "assigned".to_string();
                status.err.clear();
                set_version(&mut t.meta, index);
                self.write(Object::Task(t), applied);
            }
            Action::CreateNetwork(_)
            | Action::UpdateNetwork(_)
            | Action::RemoveNetwork(_)
            | Action::TaskAllocate(_)
            | Action::ServiceEndpoint(_)
            | Action::NodeAllocate(_) => {
                return Err("networks are not supported by this manager yet".to_string());
            }
        }
        Ok(())
    }

    /// Upserts `obj`, recording the event and the undo entry.
    fn write(&mut self, obj: Object, applied: &mut Applied) {
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

fn set_version(meta: &mut Option<Meta>, index: u64) {
    meta.get_or_insert_with(Meta::default).version = index;
}

fn service_name(s: &Service) -> &str {
    s.spec.as_ref().map(|sp| sp.name.as_str()).unwrap_or("")
}

fn task_state(t: &Task) -> TaskState {
    t.status
        .as_ref()
        .and_then(|s| TaskState::try_from(s.state).ok())
        .unwrap_or(TaskState::TaskNew)
}

fn remove_from_index(index: &mut HashMap<String, BTreeSet<String>>, owner: &str, id: &str) {
    if let Some(set) = index.get_mut(owner) {
        set.remove(id);
        if set.is_empty() {
            index.remove(owner);
        }
    }
}
