//! `/tasks`: list and inspect. One `ListTasks` (which also gives node hostnames), plus
//! `ListServices` (services' names, labels and spec versions for the `service`, `label` and
//! `_up-to-date` filters) and `ListNetworks` (network names of the attachments). Tasks whose
//! service was removed may be missing, as the control API drops them with it.

use std::collections::HashMap;

use axum::extract::{Path, Query, State as AxState};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use shoal_proto::v1::{
    ListNetworksRequest, ListServicesRequest, ListTasksRequest, Service, Task, TaskState,
};

use super::error::{ApiError, ApiResult};
use super::filters::Filters;
use super::spec;
use super::time::rfc3339;
use super::State;

/// This group's routes (unversioned paths).
pub fn routes() -> Router<State> {
    Router::new()
        .route("/tasks", get(list))
        .route("/tasks/{id}", get(inspect))
}

/// The filter keys `GET /tasks` knows (moby's, with the CLI's hidden `_up-to-date`).
const TASK_FILTERS: &[&str] = &[
    "id",
    "name",
    "label",
    "service",
    "node",
    "desired-state",
    "runtime",
    "_up-to-date",
];

/// What the task JSON and filters need besides the tasks: services by id, node id → hostname,
/// network id → name.
#[derive(Debug, Default)]
pub struct TaskContext {
    /// Services by id.
    pub services: HashMap<String, Service>,
    /// Node id → hostname.
    pub node_names: HashMap<String, String>,
    /// Network id → name.
    pub network_names: HashMap<String, String>,
}

/// Everything a task listing needs, in three calls.
async fn load(ctx: &State) -> ApiResult<(Vec<Task>, TaskContext)> {
    let mut control = ctx.control();
    let tasks = control
        .list_tasks(ListTasksRequest::default())
        .await?
        .into_inner();
    let services = control
        .list_services(ListServicesRequest {})
        .await?
        .into_inner()
        .services
        .into_iter()
        .filter_map(|s| s.service)
        .map(|s| (s.id.clone(), s))
        .collect();
    let network_names = control
        .list_networks(ListNetworksRequest {})
        .await?
        .into_inner()
        .networks
        .into_iter()
        .map(|n| (n.id, n.spec.map(|s| s.name).unwrap_or_default()))
        .collect();
    Ok((
        tasks.tasks,
        TaskContext {
            services,
            node_names: tasks.node_names,
            network_names,
        },
    ))
}

async fn list(
    AxState(ctx): AxState<State>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let filters = Filters::parse(q.get("filters").map(String::as_str))?;
    filters.check(TASK_FILTERS)?;
    let (tasks, tc) = load(&ctx).await?;
    let out = filter_tasks(&tasks, &tc, &filters)?
        .into_iter()
        .map(|t| task_json(t, &tc))
        .collect();
    Ok(Json(Value::Array(out)))
}

async fn inspect(AxState(ctx): AxState<State>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let (tasks, tc) = load(&ctx).await?;
    let task = find_task(&tasks, &id)?;
    Ok(Json(task_json(task, &tc)))
}

/// A task by full id or unique id prefix: 404 "no such task: X", 400 when ambiguous.
pub fn find_task<'a>(tasks: &'a [Task], id: &str) -> ApiResult<&'a Task> {
    if let Some(t) = tasks.iter().find(|t| t.id == id) {
        return Ok(t);
    }
    let mut matches = tasks
        .iter()
        .filter(|t| !id.is_empty() && t.id.starts_with(id));
    match (matches.next(), matches.next()) {
        (Some(t), None) => Ok(t),
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "task {id} is ambiguous (several task ids start with it)"
        ))),
        _ => Err(ApiError::not_found(format!("no such task: {id}"))),
    }
}

/// A service named by a filter value: full id, exact name, then unique id prefix (moby's order).
fn resolve_service<'a>(tc: &'a TaskContext, v: &str) -> ApiResult<&'a Service> {
    if let Some(s) = tc.services.get(v) {
        return Ok(s);
    }
    if let Some(s) = tc
        .services
        .values()
        .find(|s| s.spec.as_ref().is_some_and(|sp| sp.name == v))
    {
        return Ok(s);
    }
    let mut m = tc.services.values().filter(|s| s.id.starts_with(v));
    match (m.next(), m.next()) {
        (Some(s), None) if !v.is_empty() => Ok(s),
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "service {v} is ambiguous (several service ids start with it)"
        ))),
        _ => Err(ApiError::not_found(format!("no such service: {v}"))),
    }
}

/// A node named by a filter value: full id, hostname, then unique id prefix.
fn resolve_node(tc: &TaskContext, v: &str) -> ApiResult<String> {
    if tc.node_names.contains_key(v) {
        return Ok(v.to_string());
    }
    if let Some((id, _)) = tc.node_names.iter().find(|(_, h)| h.as_str() == v) {
        return Ok(id.clone());
    }
    let mut m = tc.node_names.keys().filter(|id| id.starts_with(v));
    match (m.next(), m.next()) {
        (Some(id), None) if !v.is_empty() => Ok(id.clone()),
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "node {v} is ambiguous (several node ids start with it)"
        ))),
        _ => Err(ApiError::not_found(format!("no such node: {v}"))),
    }
}

/// The task's name as swarm's `naming.Task`: `SERVICE.SLOT.ID`, or `SERVICE.NODE.ID` for a
/// global task.
pub fn task_name(t: &Task) -> String {
    if t.slot == 0 {
        format!("{}.{}.{}", t.service_name, t.node_id, t.id)
    } else {
        format!("{}.{}.{}", t.service_name, t.slot, t.id)
    }
}

/// The tasks `f` selects, as moby: `id`/`name` by prefix, `label` on the service's labels,
/// `service` and `node` resolved (a name or id prefix that matches nothing is a 404),
/// `desired-state` running|shutdown|accepted, `runtime` container, `_up-to-date` the task was
/// made from its service's current spec.
pub fn filter_tasks<'a>(
    tasks: &'a [Task],
    tc: &TaskContext,
    f: &Filters,
) -> ApiResult<Vec<&'a Task>> {
    let services: Vec<String> = f
        .values("service")
        .map(|v| resolve_service(tc, v).map(|s| s.id.clone()))
        .collect::<ApiResult<_>>()?;
    let nodes: Vec<String> = f
        .values("node")
        .map(|v| resolve_node(tc, v))
        .collect::<ApiResult<_>>()?;
    let desired: Vec<i32> = f
        .values("desired-state")
        .map(|v| match v {
            "running" => Ok(TaskState::TaskRunning as i32),
            "shutdown" => Ok(TaskState::TaskShutdown as i32),
            "accepted" => Ok(TaskState::TaskAccepted as i32),
            other => Err(ApiError::bad_request(format!(
                "invalid filter 'desired-state={other}': use running, shutdown or accepted"
            ))),
        })
        .collect::<ApiResult<_>>()?;
    let up_to_date = f.boolean("_up-to-date")?;
    let no_labels = HashMap::new();
    Ok(tasks
        .iter()
        .filter(|t| {
            let service = tc.services.get(&t.service_id);
            let labels = service
                .and_then(|s| s.spec.as_ref())
                .map_or(&no_labels, |s| &s.labels);
            let current = service.is_some_and(|s| s.spec_version == t.spec_version);
            f.matches_prefix("id", &t.id)
                && f.matches_prefix("name", &task_name(t))
                && f.matches_labels("label", labels)
                && (services.is_empty() || services.contains(&t.service_id))
                && (nodes.is_empty() || nodes.contains(&t.node_id))
                && (desired.is_empty() || desired.contains(&t.desired_state))
                && f.matches_exact("runtime", "container")
                && up_to_date.is_none_or(|want| want == current)
        })
        .collect())
}

/// docker's lowercase name of a task state.
pub fn state_name(state: i32) -> &'static str {
    match TaskState::try_from(state) {
        Ok(TaskState::TaskNew) => "new",
        Ok(TaskState::TaskPending) => "pending",
        Ok(TaskState::TaskAssigned) => "assigned",
        Ok(TaskState::TaskAccepted) => "accepted",
        Ok(TaskState::TaskPreparing) => "preparing",
        Ok(TaskState::TaskStarting) => "starting",
        Ok(TaskState::TaskRunning) => "running",
        Ok(TaskState::TaskComplete) => "complete",
        Ok(TaskState::TaskShutdown) => "shutdown",
        Ok(TaskState::TaskFailed) => "failed",
        Ok(TaskState::TaskRejected) => "rejected",
        Ok(TaskState::TaskRemove) => "remove",
        Ok(TaskState::TaskOrphaned) => "orphaned",
        Err(_) => "",
    }
}

/// A task as docker's JSON. `Spec.ContainerSpec` is always present; `Labels` is `{}` (Shoal's
/// tasks have none of their own).
pub fn task_json(t: &Task, tc: &TaskContext) -> Value {
    let meta = t.meta.unwrap_or_default();
    let status = t.status.clone().unwrap_or_default();
    let mut o = Map::new();
    o.insert("ID".into(), json!(t.id));
    o.insert("Version".into(), json!({ "Index": meta.version }));
    o.insert("CreatedAt".into(), json!(rfc3339(meta.created_at)));
    o.insert("UpdatedAt".into(), json!(rfc3339(meta.updated_at)));
    o.insert("Labels".into(), json!({}));
    o.insert(
        "Spec".into(),
        spec::task_spec_to_docker(t.spec.as_ref(), false),
    );
    o.insert("ServiceID".into(), json!(t.service_id));
    if t.slot != 0 {
        o.insert("Slot".into(), json!(t.slot));
    }
    if !t.node_id.is_empty() {
        o.insert("NodeID".into(), json!(t.node_id));
    }
    let mut so = Map::new();
    so.insert("Timestamp".into(), json!(rfc3339(status.timestamp)));
    so.insert("State".into(), json!(state_name(status.state)));
    so.insert("Message".into(), json!(status.message));
    if !status.err.is_empty() {
        so.insert("Err".into(), json!(status.err));
    }
    if !status.container_id.is_empty() {
        so.insert(
            "ContainerStatus".into(),
            json!({
                "ContainerID": status.container_id,
                "PID": status.pid,
                "ExitCode": status.exit_code,
            }),
        );
    }
    let host_ports: Vec<Value> = t
        .endpoint
        .as_ref()
        .map(|e| {
            e.ports
                .iter()
                .filter(|p| p.publish_mode == "host")
                .map(spec::port_to_docker)
                .collect()
        })
        .unwrap_or_default();
    let mut ps = Map::new();
    if !host_ports.is_empty() {
        ps.insert("Ports".into(), Value::Array(host_ports));
    }
    so.insert("PortStatus".into(), Value::Object(ps));
    o.insert("Status".into(), Value::Object(so));
    o.insert("DesiredState".into(), json!(state_name(t.desired_state)));
    if !t.networks.is_empty() {
        let atts = t
            .networks
            .iter()
            .map(|n| {
                let name = tc
                    .network_names
                    .get(&n.network_id)
                    .cloned()
                    .unwrap_or_default();
                json!({
                    "Network": { "ID": n.network_id, "Spec": { "Name": name } },
                    "Addresses": n.addresses,
                })
            })
            .collect();
        o.insert("NetworksAttachments".into(), Value::Array(atts));
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{
        ContainerSpec, Endpoint, Meta, NetworkAttachment, PortConfig, ServiceSpec, TaskSpec,
        TaskStatus,
    };

    fn service(id: &str, name: &str, spec_version: u64, labels: &[(&str, &str)]) -> Service {
        Service {
            id: id.into(),
            spec: Some(ServiceSpec {
                name: name.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                    .collect(),
                ..Default::default()
            }),
            spec_version,
            ..Default::default()
        }
    }

    fn task(
        id: &str,
        svc: &Service,
        slot: u64,
        node: &str,
        spec_version: u64,
        desired: TaskState,
    ) -> Task {
        Task {
            id: id.into(),
            meta: Some(Meta {
                version: 7,
                created_at: 1_700_000_000_000_000_000,
                updated_at: 1_700_000_000_000_000_000,
            }),
            service_id: svc.id.clone(),
            service_name: svc
                .spec
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            slot,
            node_id: node.into(),
            spec: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            spec_version,
            status: Some(TaskStatus {
                state: TaskState::TaskRunning as i32,
                timestamp: 1_700_000_000_000_000_000,
                message: "started".into(),
                container_id: "c0ffee".into(),
                pid: 42,
                ..Default::default()
            }),
            desired_state: desired as i32,
            ..Default::default()
        }
    }

    fn fixture() -> (Vec<Task>, TaskContext) {
        let web = service(
            "svcweb1",
            "demo_web",
            2,
            &[("com.docker.stack.namespace", "demo")],
        );
        let db = service("svcdb22", "db", 1, &[]);
        let tasks = vec![
            task("t1", &web, 1, "node1", 2, TaskState::TaskRunning),
            task("t2", &web, 1, "node1", 1, TaskState::TaskShutdown),
            task("t3", &web, 2, "node2", 2, TaskState::TaskRunning),
            task("t4", &db, 0, "node2", 1, TaskState::TaskRunning),
        ];
        let tc = TaskContext {
            services: [web, db].into_iter().map(|s| (s.id.clone(), s)).collect(),
            node_names: [("node1", "host-a"), ("node2", "host-b")]
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            network_names: [("net1".to_string(), "demo_front".to_string())].into(),
        };
        (tasks, tc)
    }

    fn ids(tasks: &[Task], tc: &TaskContext, pairs: &[(&str, &str)]) -> Vec<String> {
        filter_tasks(tasks, tc, &Filters::of(pairs))
            .expect("filters apply")
            .iter()
            .map(|t| t.id.clone())
            .collect()
    }

    #[test]
    fn tasks_are_filtered_as_moby_does() {
        let (tasks, tc) = fixture();
        assert_eq!(ids(&tasks, &tc, &[]).len(), 4);
        assert_eq!(
            ids(&tasks, &tc, &[("service", "demo_web")]),
            vec!["t1", "t2", "t3"]
        );
        assert_eq!(ids(&tasks, &tc, &[("service", "svcd")]), vec!["t4"]);
        assert_eq!(
            ids(
                &tasks,
                &tc,
                &[("service", "svcweb1"), ("_up-to-date", "true")]
            ),
            vec!["t1", "t3"]
        );
        assert_eq!(ids(&tasks, &tc, &[("node", "host-b")]), vec!["t3", "t4"]);
        assert_eq!(ids(&tasks, &tc, &[("node", "node1")]), vec!["t1", "t2"]);
        assert_eq!(
            ids(&tasks, &tc, &[("desired-state", "shutdown")]),
            vec!["t2"]
        );
        assert_eq!(
            ids(&tasks, &tc, &[("label", "com.docker.stack.namespace=demo")]),
            vec!["t1", "t2", "t3"]
        );
        assert_eq!(
            ids(&tasks, &tc, &[("name", "demo_web.1.")]),
            vec!["t1", "t2"]
        );
        assert_eq!(ids(&tasks, &tc, &[("name", "db.node2")]), vec!["t4"]);
        assert_eq!(ids(&tasks, &tc, &[("id", "t3")]), vec!["t3"]);
        assert_eq!(ids(&tasks, &tc, &[("runtime", "container")]).len(), 4);
        let e = filter_tasks(&tasks, &tc, &Filters::of(&[("service", "nope")])).expect_err("404");
        assert_eq!(e.message, "no such service: nope");
        assert!(filter_tasks(&tasks, &tc, &Filters::of(&[("desired-state", "bogus")])).is_err());
        assert!(Filters::of(&[("mode", "global")])
            .check(TASK_FILTERS)
            .is_err());
    }

    #[test]
    fn a_task_is_found_by_id_or_prefix() {
        let (mut tasks, _) = fixture();
        tasks[0].id = "abc123".into();
        tasks[1].id = "abd456".into();
        assert_eq!(
            find_task(&tasks, "abc").map(|t| t.id.as_str()).ok(),
            Some("abc123")
        );
        assert_eq!(
            find_task(&tasks, "abd456").map(|t| t.id.as_str()).ok(),
            Some("abd456")
        );
        assert_eq!(
            find_task(&tasks, "ab").map_err(|e| e.status).err(),
            Some(axum::http::StatusCode::BAD_REQUEST)
        );
        let e = find_task(&tasks, "zzz").expect_err("404");
        assert_eq!(e.status, axum::http::StatusCode::NOT_FOUND);
        assert_eq!(e.message, "no such task: zzz");
    }

    #[test]
    fn the_task_json_has_what_service_ps_reads() {
        let (mut tasks, tc) = fixture();
        let t = &mut tasks[0];
        t.networks = vec![NetworkAttachment {
            network_id: "net1".into(),
            addresses: vec!["10.0.1.5/24".into()],
            aliases: vec![],
        }];
        t.endpoint = Some(Endpoint {
            ports: vec![
                PortConfig {
                    protocol: "tcp".into(),
                    target_port: 80,
                    published_port: 8080,
                    publish_mode: "host".into(),
                    ..Default::default()
                },
                PortConfig {
                    protocol: "tcp".into(),
                    target_port: 81,
                    published_port: 30001,
                    publish_mode: "ingress".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let v = task_json(&tasks[0], &tc);
        assert_eq!(v["ID"], json!("t1"));
        assert_eq!(v["Version"], json!({"Index": 7}));
        assert_eq!(v["Labels"], json!({}));
        assert_eq!(v["Spec"]["ContainerSpec"]["Image"], json!("busybox"));
        assert_eq!(v["ServiceID"], json!("svcweb1"));
        assert_eq!(v["Slot"], json!(1));
        assert_eq!(v["NodeID"], json!("node1"));
        assert_eq!(v["Status"]["State"], json!("running"));
        assert_eq!(
            v["Status"]["Timestamp"],
            json!("2023-11-14T22:13:20.000000000Z")
        );
        assert_eq!(
            v["Status"]["ContainerStatus"],
            json!({"ContainerID": "c0ffee", "PID": 42, "ExitCode": 0})
        );
        assert_eq!(
            v["Status"]["PortStatus"]["Ports"].as_array().map(Vec::len),
            Some(1)
        );
        assert_eq!(v["DesiredState"], json!("running"));
        assert_eq!(
            v["NetworksAttachments"][0],
            json!({"Network": {"ID": "net1", "Spec": {"Name": "demo_front"}}, "Addresses": ["10.0.1.5/24"]})
        );
        // A task with no spec still has a ContainerSpec, and a new task shows "new".
        let bare = Task::default();
        let v = task_json(&bare, &tc);
        assert!(v["Spec"]["ContainerSpec"].is_object());
        assert_eq!(v["Status"]["State"], json!("new"));
        assert!(v.get("NodeID").is_none());
    }
}
