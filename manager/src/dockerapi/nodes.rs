//! `/nodes`: list, inspect, update (availability, labels and role), delete.
//!
//! `docker node update/promote/demote` read the node, change its spec and send the whole spec
//! back with the version they read; the gateway turns the difference into `UpdateNode`
//! (availability, labels) and `PromoteNode`/`DemoteManager` (role).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use shoal_proto::v1::{
    DemoteManagerRequest, GetNodeRequest, ListNodesRequest, Node, NodeAvailability, NodeRole,
    NodeState, PromoteNodeRequest, RemoveNodeRequest, UpdateNodeRequest,
};

use super::error::ApiResult;
use super::filters::Filters;
use super::time::rfc3339;
use super::{ApiError, State};

/// This group's routes (unversioned paths).
pub fn routes() -> Router<State> {
    Router::new()
        .route("/nodes", get(list))
        .route("/nodes/{id}", get(inspect).delete(remove))
        .route("/nodes/{id}/update", post(update))
}

/// The query of a request, as docker's handlers read it.
pub(super) type QueryMap = Query<HashMap<String, String>>;

/// The IP of "IP:PORT" or "[IPv6]:PORT" (an address without a port as it is).
pub(super) fn ip_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    match addr.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => ip,
        _ => addr,
    }
}

/// A JSON request body into `T`; a malformed one is a 400, as moby's.
pub(super) fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("request body is empty"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

/// The `version` query parameter of an update (moby: `strconv.ParseUint`, else 400).
pub(super) fn parse_version(query: &HashMap<String, String>, kind: &str) -> ApiResult<u64> {
    query
        .get("version")
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| ApiError::bad_request(format!("invalid {kind} version")))
}

/// moby passes swarmkit's "update out of sequence" through as a 500; the CLI shows its text.
pub(super) fn out_of_sequence(kind: &str, name: &str, read: u64, now: u64) -> ApiError {
    ApiError::internal(format!(
        "update out of sequence: {kind} {name} is at version {now}, the update was based on \
         version {read}"
    ))
}

/// Refuses the unknown fields of a request body that carry a value (null, false, 0, "", [] and
/// {} are what a CLI sends for unset fields).
pub(super) fn refuse_extra(
    prefix: &str,
    extra: &serde_json::Map<String, Value>,
) -> Result<(), ApiError> {
    for (k, v) in extra {
        if !is_unset(v) {
            return Err(ApiError::field(
                &format!("{prefix}{k}"),
                "Shoal does not support this field",
            ));
        }
    }
    Ok(())
}

/// Whether a JSON value is a zero value (docker's "unset"): one rule for every route.
pub(super) use super::spec::is_zero as is_unset;

fn role_name(r: NodeRole) -> &'static str {
    match r {
        NodeRole::RoleWorker => "worker",
        NodeRole::RoleManager => "manager",
    }
}

fn availability_name(a: NodeAvailability) -> &'static str {
    match a {
        NodeAvailability::AvailabilityActive => "active",
        NodeAvailability::AvailabilityPause => "pause",
        NodeAvailability::AvailabilityDrain => "drain",
    }
}

fn state_name(s: NodeState) -> &'static str {
    match s {
        NodeState::NodeUnknown => "unknown",
        NodeState::NodeDown => "down",
        NodeState::NodeReady => "ready",
        NodeState::NodeDisconnected => "disconnected",
    }
}

fn role_of(n: &Node) -> NodeRole {
    n.spec.as_ref().map_or(NodeRole::RoleWorker, |s| s.role())
}

/// docker's `swarm.Node`.
pub(super) fn node_json(n: &Node) -> Value {
    let meta = n.meta.unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    let desc = n.description.clone().unwrap_or_default();
    let res = desc.resources.unwrap_or_default();
    let status = n.status.clone().unwrap_or_default();
    let mut out = json!({
        "ID": n.id,
        "Version": { "Index": meta.version },
        "CreatedAt": rfc3339(meta.created_at),
        "UpdatedAt": rfc3339(meta.updated_at),
        "Spec": {
            "Labels": spec.labels,
            "Role": role_name(spec.role()),
            "Availability": availability_name(spec.availability()),
        },
        "Description": {
            "Hostname": desc.hostname,
            "Platform": { "Architecture": desc.architecture, "OS": desc.os },
            "Resources": { "NanoCPUs": res.nano_cpus, "MemoryBytes": res.memory_bytes },
            "Engine": {
                "EngineVersion": desc.agent_version,
                "Labels": desc.engine_labels,
                "Plugins": [],
            },
            "TLSInfo": { "TrustRoot": "", "CertIssuerSubject": "", "CertIssuerPublicKey": "" },
        },
        "Status": {
            "State": state_name(status.state()),
            "Message": status.message,
            "Addr": ip_of(&status.addr),
        },
    });
    if let Some(m) = n.manager_status.as_ref() {
        out["ManagerStatus"] = json!({
            "Leader": m.leader,
            "Reachability": if m.reachability.is_empty() { "unknown" } else { m.reachability.as_str() },
            "Addr": m.addr,
        });
    }
    out
}

/// The `GET /nodes` filter keys.
const FILTERS: &[&str] = &["id", "name", "label", "node.label", "role", "membership"];

/// Whether `n` passes `f` (checked with [`FILTERS`]).
pub(super) fn node_matches(f: &Filters, n: &Node) -> ApiResult<bool> {
    for role in f.values("role") {
        if role != "manager" && role != "worker" {
            return Err(ApiError::bad_request(format!(
                "Invalid role filter value '{role}': use manager or worker"
            )));
        }
    }
    for m in f.values("membership") {
        if m != "accepted" && m != "pending" {
            return Err(ApiError::bad_request(format!(
                "Invalid membership filter value '{m}': use accepted or pending"
            )));
        }
    }
    let desc = n.description.clone().unwrap_or_default();
    let labels = n
        .spec
        .as_ref()
        .map(|s| s.labels.clone())
        .unwrap_or_default();
    Ok(f.matches_prefix("id", &n.id)
        && f.matches_prefix("name", &desc.hostname)
        && f.matches_labels("label", &desc.engine_labels)
        && f.matches_labels("node.label", &labels)
        && f.matches_exact("role", role_name(role_of(n)))
        // Every Shoal node that exists was accepted (its join token was checked).
        && f.matches_exact("membership", "accepted"))
}

/// `GET /nodes`.
async fn list(AxumState(ctx): AxumState<State>, Query(q): QueryMap) -> ApiResult<Json<Value>> {
    let f = Filters::parse(q.get("filters").map(String::as_str))?;
    f.check(FILTERS)?;
    let nodes = ctx
        .control()
        .list_nodes(ListNodesRequest {})
        .await?
        .into_inner()
        .nodes;
    let mut out = Vec::new();
    for n in &nodes {
        if node_matches(&f, n)? {
            out.push(node_json(n));
        }
    }
    Ok(Json(Value::Array(out)))
}

/// The node `id` names (id, hostname or unique id prefix).
async fn get_node(ctx: &State, id: &str) -> ApiResult<Node> {
    ctx.control()
        .get_node(GetNodeRequest {
            name_or_id: id.to_string(),
        })
        .await
        .map_err(|s| ApiError::from_status_for("node", id, s))?
        .into_inner()
        .node
        .ok_or_else(|| ApiError::not_found(format!("no such node: {id}")))
}

/// `GET /nodes/{id}`.
async fn inspect(
    AxumState(ctx): AxumState<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(node_json(&get_node(&ctx, &id).await?)))
}

/// `DELETE /nodes/{id}[?force=1]`.
async fn remove(
    AxumState(ctx): AxumState<State>,
    Path(id): Path<String>,
    Query(q): QueryMap,
) -> ApiResult<StatusCode> {
    let force = matches!(q.get("force").map(String::as_str), Some("1" | "true"));
    tracing::debug!(node = %id, force, "docker api: node remove");
    ctx.control()
        .remove_node(RemoveNodeRequest {
            name_or_id: id.clone(),
            force,
        })
        .await
        .map_err(|s| ApiError::from_status_for("node", &id, s))?;
    Ok(StatusCode::OK)
}

/// docker's `swarm.NodeSpec` as `node update` sends it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct NodeSpecBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    availability: Option<String>,
    #[serde(flatten)]
    extra: serde_json::Map<String, Value>,
}

/// What a node update comes to in Shoal's calls.
#[derive(Debug, Default, PartialEq)]
pub(super) struct NodePlan {
    /// Availability and label changes (None: nothing to change).
    pub update: Option<UpdateNodeRequest>,
    /// A new role (None: unchanged).
    pub role: Option<NodeRole>,
}

/// The calls that turn `n` into what `body` says. Pure.
pub(super) fn plan_update(n: &Node, body: &NodeSpecBody) -> ApiResult<NodePlan> {
    refuse_extra("", &body.extra)?;
    if body.name.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::field(
            "Name",
            "Shoal nodes have no names of their own (their hostname names them)",
        ));
    }
    let spec = n.spec.clone().unwrap_or_default();
    let mut req = UpdateNodeRequest {
        name_or_id: n.id.clone(),
        ..Default::default()
    };
    let mut changed = false;
    if let Some(a) = body.availability.as_deref().filter(|a| !a.is_empty()) {
        let want = match a.to_ascii_lowercase().as_str() {
            "active" => NodeAvailability::AvailabilityActive,
            "pause" => NodeAvailability::AvailabilityPause,
            "drain" => NodeAvailability::AvailabilityDrain,
            _ => {
                return Err(ApiError::field(
                    "Availability",
                    format!("invalid availability {a:?}: use active, pause or drain"),
                ))
            }
        };
        if want != spec.availability() {
            req.availability = Some(want as i32);
            changed = true;
        }
    }
    // The body carries the whole label set: labels it lacks are removed.
    let want = body.labels.clone().unwrap_or_default();
    for (k, v) in &want {
        if spec.labels.get(k) != Some(v) {
            req.labels_add.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    let mut rm: Vec<String> = spec
        .labels
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect();
    rm.sort();
    if !rm.is_empty() {
        req.labels_rm = rm;
        changed = true;
    }
    let role = match body.role.as_deref().filter(|r| !r.is_empty()) {
        None => None,
        Some(r) => {
            let want = match r.to_ascii_lowercase().as_str() {
                "worker" => NodeRole::RoleWorker,
                "manager" => NodeRole::RoleManager,
                _ => {
                    return Err(ApiError::field(
                        "Role",
                        format!("invalid role {r:?}: use worker or manager"),
                    ))
                }
            };
            (want != spec.role()).then_some(want)
        }
    };
    Ok(NodePlan {
        update: changed.then_some(req),
        role,
    })
}

/// `POST /nodes/{id}/update?version=N`.
async fn update(
    AxumState(ctx): AxumState<State>,
    Path(id): Path<String>,
    Query(q): QueryMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let version = parse_version(&q, "node")?;
    let body: NodeSpecBody = parse_body(&body)?;
    let node = get_node(&ctx, &id).await?;
    let now = node.meta.unwrap_or_default().version;
    if version != now {
        let host = node
            .description
            .as_ref()
            .map_or(node.id.as_str(), |d| d.hostname.as_str());
        return Err(out_of_sequence("node", host, version, now));
    }
    let plan = plan_update(&node, &body)?;
    tracing::debug!(node = %node.id, ?plan, "docker api: node update");
    if let Some(req) = plan.update {
        ctx.control()
            .update_node(req)
            .await
            .map_err(|s| ApiError::from_status_for("node", &id, s))?;
    }
    match plan.role {
        Some(NodeRole::RoleManager) => {
            ctx.cluster()
                .promote_node(PromoteNodeRequest {
                    node: node.id.clone(),
                })
                .await?;
        }
        Some(NodeRole::RoleWorker) => {
            ctx.cluster()
                .demote_manager(DemoteManagerRequest {
                    node: node.id.clone(),
                })
                .await?;
        }
        None => {}
    }
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{ManagerStatus, Meta, NodeDescription, NodeSpec, NodeStatus};

    fn node() -> Node {
        Node {
            id: "abc123".into(),
            meta: Some(Meta {
                version: 5,
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                role: NodeRole::RoleManager as i32,
                availability: NodeAvailability::AvailabilityActive as i32,
                labels: [("zone".to_string(), "a".to_string())].into(),
            }),
            description: Some(NodeDescription {
                hostname: "alpha".into(),
                engine_labels: [("disk".to_string(), "ssd".to_string())].into(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: NodeState::NodeReady as i32,
                addr: "10.0.0.1:5555".into(),
                ..Default::default()
            }),
            manager_status: Some(ManagerStatus {
                leader: true,
                reachability: "reachable".into(),
                addr: "10.0.0.1:4242".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn body(v: Value) -> NodeSpecBody {
        serde_json::from_value(v).expect("a node spec")
    }

    #[test]
    fn node_json_has_dockers_shape() {
        let v = node_json(&node());
        assert_eq!(v["ID"], "abc123");
        assert_eq!(v["Version"]["Index"], 5);
        assert_eq!(v["Spec"]["Role"], "manager");
        assert_eq!(v["Spec"]["Availability"], "active");
        assert_eq!(v["Spec"]["Labels"]["zone"], "a");
        assert_eq!(v["Description"]["Hostname"], "alpha");
        assert_eq!(v["Description"]["Engine"]["Labels"]["disk"], "ssd");
        assert_eq!(v["Description"]["Engine"]["Plugins"], json!([]));
        assert_eq!(v["Status"]["State"], "ready");
        assert_eq!(v["Status"]["Addr"], "10.0.0.1");
        assert_eq!(v["ManagerStatus"]["Leader"], true);
        assert_eq!(v["ManagerStatus"]["Reachability"], "reachable");
        let mut worker = node();
        worker.manager_status = None;
        assert!(node_json(&worker).get("ManagerStatus").is_none());
    }

    #[test]
    fn addresses_lose_their_port() {
        assert_eq!(ip_of("10.0.0.1:5555"), "10.0.0.1");
        assert_eq!(ip_of("10.0.0.1"), "10.0.0.1");
        assert_eq!(ip_of("[fd00::1]:5555"), "fd00::1");
        assert_eq!(ip_of("fd00::1"), "fd00::1");
        assert_eq!(ip_of(""), "");
    }

    #[test]
    fn filters_match_as_swarmkits() {
        let n = node();
        let ok = |pairs: &[(&str, &str)]| node_matches(&Filters::of(pairs), &n);
        assert_eq!(ok(&[("id", "abc")]).ok(), Some(true));
        assert_eq!(ok(&[("name", "al")]).ok(), Some(true));
        assert_eq!(ok(&[("name", "be")]).ok(), Some(false));
        assert_eq!(ok(&[("label", "disk=ssd")]).ok(), Some(true));
        assert_eq!(ok(&[("label", "zone")]).ok(), Some(false));
        assert_eq!(ok(&[("node.label", "zone=a")]).ok(), Some(true));
        assert_eq!(ok(&[("role", "manager")]).ok(), Some(true));
        assert_eq!(ok(&[("role", "worker")]).ok(), Some(false));
        assert_eq!(ok(&[("membership", "accepted")]).ok(), Some(true));
        assert_eq!(ok(&[("membership", "pending")]).ok(), Some(false));
        assert!(ok(&[("role", "boss")]).is_err());
        assert!(Filters::of(&[("hostname", "x")]).check(FILTERS).is_err());
    }

    #[test]
    fn an_unchanged_spec_is_no_call() {
        let plan = plan_update(
            &node(),
            &body(json!({"Labels":{"zone":"a"},"Role":"manager","Availability":"active"})),
        )
        .expect("plan");
        assert_eq!(plan, NodePlan::default());
    }

    #[test]
    fn updates_become_the_difference() {
        let plan = plan_update(
            &node(),
            &body(
                json!({"Name":"","Labels":{"disk":"nvme"},"Role":"worker","Availability":"drain"}),
            ),
        )
        .expect("plan");
        let req = plan.update.expect("an update");
        assert_eq!(req.name_or_id, "abc123");
        assert_eq!(
            req.availability,
            Some(NodeAvailability::AvailabilityDrain as i32)
        );
        assert_eq!(req.labels_add.get("disk").map(String::as_str), Some("nvme"));
        assert_eq!(req.labels_rm, vec!["zone".to_string()]);
        assert_eq!(plan.role, Some(NodeRole::RoleWorker));
    }

    #[test]
    fn bad_updates_are_refused_by_field() {
        let e = plan_update(&node(), &body(json!({"Role":"boss"}))).expect_err("bad role");
        assert!(e.message.starts_with("Role:"), "{}", e.message);
        let e = plan_update(&node(), &body(json!({"Name":"x"}))).expect_err("a name");
        assert!(e.message.starts_with("Name:"), "{}", e.message);
        let e = plan_update(&node(), &body(json!({"Membership":"pending"}))).expect_err("unknown");
        assert!(e.message.starts_with("Membership:"), "{}", e.message);
    }

    #[test]
    fn versions_are_parsed_as_moby() {
        let q: HashMap<String, String> = [("version".to_string(), "12".to_string())].into();
        assert_eq!(parse_version(&q, "node").ok(), Some(12));
        let q: HashMap<String, String> = [("version".to_string(), "x".to_string())].into();
        let e = parse_version(&q, "node").expect_err("bad version");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            out_of_sequence("node", "alpha", 1, 2).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
