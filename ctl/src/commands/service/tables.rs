//! The rows of `service ls` and `service ps`, and docker's PORTS column.

use std::collections::HashMap;

use serde_json::{json, Value};
use shoal_proto::spec::port_protocol;
use shoal_proto::v1::{PortConfig, Service, ServiceSummary, Task, TaskSpec};

use crate::output::{self, rollout};

/// The ports a service publishes: the allocated ones once the manager filled them in, else
/// those of the spec.
pub(super) fn published_ports(svc: &Service) -> Vec<PortConfig> {
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
        .filter(|p| p.is_ingress() && p.published_port != 0)
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

pub(super) fn spec_name(s: &Service) -> &str {
    s.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")
}

/// The image as tables show it: without the digest `stack deploy --resolve-image` pinned to a
/// tag (docker's tables show `redis:7`, inspect shows the whole reference).
fn image_of(spec: Option<&TaskSpec>) -> &str {
    spec.and_then(|t| t.container.as_ref())
        .map(|c| crate::commands::resolve_image::without_digest(&c.image))
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
    /// "running/desired", with the update state while one is not completed: "2/4 (updating)".
    pub replicas: String,
    /// Image reference.
    pub image: String,
    /// Published ingress ports, docker's way (`*:8080->80/tcp`).
    pub ports: String,
    /// The last update's `{State, Message}` (docker's names), or null before any (then left
    /// out of the JSON).
    pub update_status: serde_json::Value,
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
            replicas: match rollout::unfinished_update(svc.update_status.as_ref()) {
                Some(state) => format!("{}/{} ({state})", sum.running_tasks, sum.desired_tasks),
                None => format!("{}/{}", sum.running_tasks, sum.desired_tasks),
            },
            image: image_of(spec.task.as_ref()).to_string(),
            ports: ports_column(&svc),
            update_status: svc.update_status.as_ref().map_or(
                Value::Null,
                |st| json!({"State": rollout::update_state_name(st.state), "Message": st.message}),
            ),
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
        let mut v = json!({"ID": self.id, "Name": self.name, "Mode": self.mode,
                           "Replicas": self.replicas, "Image": self.image, "Ports": self.ports});
        if let (false, Some(m)) = (self.update_status.is_null(), v.as_object_mut()) {
            m.insert("UpdateStatus".into(), self.update_status.clone());
        }
        v
    }
}

/// A `service ps` row.
#[derive(Debug, Clone, PartialEq)]
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
    /// "Running 5 seconds ago", with the health as `docker ps` shows it:
    /// "Starting 3 seconds ago (health: starting)".
    pub current_state: String,
    /// "starting" | "healthy" | "unhealthy", or empty without a healthcheck.
    pub health: String,
    /// The whole health as the agent reported it (failing streak, last probes).
    pub health_detail: Option<shoal_proto::v1::HealthStatus>,
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
        // `HealthDetail` has docker's `State.Health` shape (`docker inspect` of a container).
        let detail = self.health_detail.as_ref().map(|h| {
            json!({
                "Status": h.status,
                "FailingStreak": h.failing_streak,
                "Log": h.log.iter().map(|r| json!({
                    "Start": output::rfc3339(r.start),
                    "End": output::rfc3339(r.end),
                    "ExitCode": r.exit_code,
                    "Output": r.output,
                })).collect::<Vec<_>>(),
            })
        });
        json!({"ID": self.id, "Name": self.name, "Image": self.image, "Node": self.node,
               "DesiredState": self.desired_state, "CurrentState": self.current_state,
               "Health": self.health, "HealthDetail": detail, "Error": self.error})
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
            current_state: format!(
                "{}{}",
                output::current_state(st.state, st.timestamp, now_ns),
                rollout::health_suffix(st.health.as_ref())
            ),
            health: st
                .health
                .as_ref()
                .map(|h| h.status.clone())
                .unwrap_or_default(),
            health_detail: st.health.clone(),
            error: st.err,
        });
        prev = Some(name);
    }
    rows
}
