//! `/info` (with a real `Swarm` section) and `/swarm`: inspect with the join tokens; update
//! (certificate expiry, autolock, CA rotation, join token and unlock key rotation; any other
//! setting is refused by name); the unlock key. Init, join, leave and unlock answer a clear 503:
//! a Shoal cluster is made with `shoal-manager init/join`.
//!
//! `docker info`, `stack deploy` (which stops unless `Swarm.ControlAvailable`), Portainer (which
//! detects a swarm by `Swarm.NodeID` and needs `/swarm`'s `ID` to deploy a stack) and Ansible
//! (whose swarm modules first require `GET /swarm` to succeed) read these.

use axum::body::Bytes;
use axum::extract::{Query, State as AxumState};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use shoal_proto::v1::{
    GetClusterRequest, GetClusterResponse, JoinTokenRequest, ListNodesRequest, Node, NodeRole,
    RotateCaRequest, UnlockKeyRequest, UpdateClusterRequest,
};

use super::error::ApiResult;
use super::nodes::{ip_of, is_unset, out_of_sequence, parse_body, parse_version, QueryMap};
use super::time::rfc3339;
use super::{ApiError, State};

/// This group's routes (unversioned paths).
pub fn routes() -> Router<State> {
    Router::new()
        .route("/info", get(info))
        .route("/swarm", get(inspect))
        .route("/swarm/init", post(init_or_join))
        .route("/swarm/join", post(init_or_join))
        .route("/swarm/leave", post(leave))
        .route("/swarm/update", post(update))
        .route("/swarm/unlock", post(unlock))
        .route("/swarm/unlockkey", get(unlock_key))
}

/// The Raft settings Shoal runs with (`raft::RaftNode`'s config); not settable per cluster.
const ELECTION_TICK: u64 = 10;
const HEARTBEAT_TICK: u64 = 1;
/// Where overlay subnets come from, and their size (the allocator's pool).
const DEFAULT_ADDR_POOL: &str = "10.0.0.0/8";
const SUBNET_SIZE: u32 = 24;
/// The UDP port of the overlays' VXLAN traffic (the agent's `network::overlay::VXLAN_PORT`).
const DATA_PATH_PORT: u32 = 4789;

/// docker's `swarm.ClusterInfo` (`/info`'s `Swarm.Cluster`, and `/swarm` without the tokens).
pub(super) fn cluster_json(c: &GetClusterResponse) -> Value {
    let meta = c.meta.unwrap_or_default();
    json!({
        "ID": c.cluster_id,
        "Version": { "Index": meta.version },
        "CreatedAt": rfc3339(meta.created_at),
        "UpdatedAt": rfc3339(meta.updated_at),
        "Spec": {
            "Name": "default",
            "Labels": {},
            "Orchestration": {
                "TaskHistoryRetentionLimit": crate::orchestrator::TASK_HISTORY_LIMIT,
            },
            "Raft": {
                "SnapshotInterval": crate::raft::DEFAULT_SNAPSHOT_INTERVAL,
                "KeepOldSnapshots": 0,
                "LogEntriesForSlowFollowers": 0,
                "ElectionTick": ELECTION_TICK,
                "HeartbeatTick": HEARTBEAT_TICK,
            },
            "Dispatcher": { "HeartbeatPeriod": c.heartbeat_period_ns },
            "CAConfig": { "NodeCertExpiry": c.cert_expiry_ns },
            "TaskDefaults": {},
            "EncryptionConfig": { "AutoLockManagers": c.autolock },
        },
        "TLSInfo": {
            "TrustRoot": c.ca_cert_pem,
            // Shoal does not record these (docker uses them to check a CA bundle's identity).
            "CertIssuerSubject": "",
            "CertIssuerPublicKey": "",
        },
        "RootRotationInProgress": c.rotation.is_some(),
        "DataPathPort": DATA_PATH_PORT,
        "DefaultAddrPool": [DEFAULT_ADDR_POOL],
        "SubnetSize": SUBNET_SIZE,
    })
}

/// What `/info` is made of, gathered from the control and cluster-admin APIs.
pub(super) struct InfoParts<'a> {
    /// This manager's node id.
    pub node_id: &'a str,
    /// This manager's advertised address ("IP:PORT").
    pub advertise_addr: &'a str,
    /// Every node (the managers among them carry their manager address).
    pub nodes: &'a [Node],
    /// The cluster's settings.
    pub cluster: &'a GetClusterResponse,
    /// This host's kernel release (`uname -r`).
    pub kernel: String,
    /// This host's OS name (`/etc/os-release` PRETTY_NAME).
    pub os_name: String,
}

/// docker's `system.Info` for this manager.
pub(super) fn info_json(p: &InfoParts<'_>) -> Value {
    let own = p.nodes.iter().find(|n| n.id == p.node_id);
    let desc = own.and_then(|n| n.description.clone()).unwrap_or_default();
    let res = desc.resources.unwrap_or_default();
    let hostname = if desc.hostname.is_empty() {
        p.node_id.to_string()
    } else {
        desc.hostname.clone()
    };
    let managers = p
        .nodes
        .iter()
        .filter(|n| n.spec.as_ref().map(|s| s.role()) == Some(NodeRole::RoleManager))
        .count();
    // The store's view of the managers: asking each one (`cluster status`) would make every
    // `docker node ls` wait for the unreachable ones.
    let remote: Vec<Value> = p
        .nodes
        .iter()
        .filter_map(|n| {
            n.manager_status
                .as_ref()
                .map(|m| json!({ "NodeID": n.id, "Addr": m.addr }))
        })
        .collect();
    let ncpu = (res.nano_cpus + 999_999_999) / 1_000_000_000;
    json!({
        "ID": p.node_id,
        "Name": hostname,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "OperatingSystem": p.os_name,
        "OSType": if desc.os.is_empty() { "linux" } else { desc.os.as_str() },
        "OSVersion": "",
        "Architecture": desc.architecture,
        "KernelVersion": p.kernel,
        "NCPU": ncpu,
        "MemTotal": res.memory_bytes,
        "Containers": 0,
        "ContainersRunning": 0,
        "ContainersPaused": 0,
        "ContainersStopped": 0,
        "Images": 0,
        "Driver": "shoal",
        "DriverStatus": [],
        "Plugins": { "Volume": ["local"], "Network": ["overlay"], "Authorization": null, "Log": [] },
        "Labels": desc.engine_labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "ExperimentalBuild": false,
        "Runtimes": {},
        "DefaultRuntime": "shoal",
        "LiveRestoreEnabled": false,
        "Isolation": "",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": "2",
        "Swarm": {
            "NodeID": p.node_id,
            "NodeAddr": ip_of(p.advertise_addr),
            "LocalNodeState": "active",
            "ControlAvailable": true,
            "Error": "",
            "RemoteManagers": remote,
            "Nodes": p.nodes.len(),
            "Managers": managers,
            "Cluster": cluster_json(p.cluster),
        },
        "Warnings": [],
    })
}

/// `uname -r` of this host ("" if it cannot be read).
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// PRETTY_NAME of `/etc/os-release` ("Linux" if absent).
fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| pretty_name(&s))
        .unwrap_or_else(|| "Linux".to_string())
}

fn pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        l.strip_prefix("PRETTY_NAME=")
            .map(|v| v.trim_matches('"').to_string())
    })
}

/// `GET /info`.
async fn info(AxumState(ctx): AxumState<State>) -> ApiResult<Json<Value>> {
    let nodes = ctx
        .control()
        .list_nodes(ListNodesRequest {})
        .await?
        .into_inner()
        .nodes;
    let cluster = ctx
        .cluster()
        .get_cluster(GetClusterRequest {})
        .await?
        .into_inner();
    Ok(Json(info_json(&InfoParts {
        node_id: &ctx.node_id,
        advertise_addr: &ctx.advertise_addr,
        nodes: &nodes,
        cluster: &cluster,
        kernel: kernel_release(),
        os_name: os_name(),
    })))
}

/// `GET /swarm`: the cluster with its join tokens.
async fn inspect(AxumState(ctx): AxumState<State>) -> ApiResult<Json<Value>> {
    let cluster = ctx
        .cluster()
        .get_cluster(GetClusterRequest {})
        .await?
        .into_inner();
    let token = |role: NodeRole| {
        let mut control = ctx.control();
        async move {
            control
                .join_token(JoinTokenRequest {
                    role: role as i32,
                    rotate: false,
                })
                .await
                .map(|r| r.into_inner().token)
        }
    };
    let worker = token(NodeRole::RoleWorker).await?;
    let manager = token(NodeRole::RoleManager).await?;
    let mut out = cluster_json(&cluster);
    out["JoinTokens"] = json!({ "Worker": worker, "Manager": manager });
    Ok(Json(out))
}

/// `POST /swarm/init` and `/swarm/join`.
async fn init_or_join() -> ApiError {
    ApiError::unavailable(
        "this node is already part of a swarm: Shoal clusters are made with \
         `shoal-manager init` and `shoal-manager join`",
    )
}

/// `POST /swarm/leave`.
async fn leave() -> ApiError {
    ApiError::unavailable(
        "a Shoal manager does not leave through the Docker API: demote it with \
         `shoalctl node demote`, or remove a node with `shoalctl node rm`",
    )
}

/// The fields of docker's `swarm.Spec` Shoal lets `swarm update` change.
const SETTABLE: &[&str] = &[
    "CAConfig.NodeCertExpiry",
    "EncryptionConfig.AutoLockManagers",
    // `docker swarm ca --rotate` bumps it: a CA rotation.
    "CAConfig.ForceRotate",
];

/// The paths of `theirs` whose values differ from `ours` (a field absent on one side counts as
/// its zero value). Pure.
fn changed_paths(ours: &Value, theirs: &Value, prefix: &str, out: &mut Vec<String>) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) if !prefix.ends_with("Labels") => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                changed_paths(
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    &path,
                    out,
                );
            }
        }
        (a, b) if is_unset(a) && is_unset(b) => {}
        (a, b) if a == b => {}
        _ => out.push(prefix.to_string()),
    }
}

/// What a `swarm update` comes to in Shoal's calls.
#[derive(Debug, Default, PartialEq)]
struct ClusterPlan {
    update: Option<UpdateClusterRequest>,
    rotate_ca: bool,
}

/// The calls that make the cluster what `spec` (docker's `swarm.Spec`) says, or the first field
/// Shoal cannot change. Pure.
fn plan_cluster_update(c: &GetClusterResponse, spec: &Value) -> ApiResult<ClusterPlan> {
    let ours = cluster_json(c);
    let mut changed = Vec::new();
    changed_paths(&ours["Spec"], spec, "", &mut changed);
    if let Some(p) = changed.iter().find(|p| !SETTABLE.contains(&p.as_str())) {
        return Err(ApiError::field(
            p,
            "Shoal cannot change this cluster setting (`shoalctl cluster update` lists what it can)",
        ));
    }
    let mut req = UpdateClusterRequest::default();
    if changed.iter().any(|p| p == "CAConfig.NodeCertExpiry") {
        let ns = spec["CAConfig"]["NodeCertExpiry"]
            .as_i64()
            .ok_or_else(|| ApiError::field("CAConfig.NodeCertExpiry", "not a number of ns"))?;
        req.cert_expiry_ns = Some(ns);
    }
    if changed
        .iter()
        .any(|p| p == "EncryptionConfig.AutoLockManagers")
    {
        req.autolock = Some(spec["EncryptionConfig"]["AutoLockManagers"].as_bool() == Some(true));
    }
    let any = req.cert_expiry_ns.is_some() || req.autolock.is_some();
    Ok(ClusterPlan {
        update: any.then_some(req),
        rotate_ca: changed.iter().any(|p| p == "CAConfig.ForceRotate"),
    })
}

/// `POST /swarm/update?version=N[&rotateWorkerToken=true][&rotateManagerToken=true]
/// [&rotateManagerUnlockKey=true]` with the whole `swarm.Spec`.
async fn update(
    AxumState(ctx): AxumState<State>,
    Query(q): QueryMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let version = parse_version(&q, "swarm")?;
    let spec: Value = parse_body(&body)?;
    let flag = |k: &str| matches!(q.get(k).map(String::as_str), Some("1" | "true"));
    let cluster = ctx
        .cluster()
        .get_cluster(GetClusterRequest {})
        .await?
        .into_inner();
    let now = cluster.meta.unwrap_or_default().version;
    if version != now {
        return Err(out_of_sequence("cluster", "default", version, now));
    }
    let plan = plan_cluster_update(&cluster, &spec)?;
    tracing::debug!(?plan, "docker api: swarm update");
    if let Some(req) = plan.update {
        ctx.cluster().update_cluster(req).await?;
    }
    if plan.rotate_ca {
        ctx.cluster().rotate_ca(RotateCaRequest {}).await?;
    }
    for (key, role) in [
        ("rotateWorkerToken", NodeRole::RoleWorker),
        ("rotateManagerToken", NodeRole::RoleManager),
    ] {
        if flag(key) {
            ctx.control()
                .join_token(JoinTokenRequest {
                    role: role as i32,
                    rotate: true,
                })
                .await?;
        }
    }
    if flag("rotateManagerUnlockKey") {
        ctx.cluster()
            .unlock_key(UnlockKeyRequest { rotate: true })
            .await?;
    }
    Ok(StatusCode::OK)
}

/// `POST /swarm/unlock`.
async fn unlock() -> ApiError {
    ApiError::unavailable(
        "a locked Shoal manager is unlocked with `shoalctl cluster unlock` (or `shoal-manager unlock`)",
    )
}

/// `GET /swarm/unlockkey`: the current unlock key.
async fn unlock_key(AxumState(ctx): AxumState<State>) -> ApiResult<Json<Value>> {
    let key = ctx
        .cluster()
        .unlock_key(UnlockKeyRequest { rotate: false })
        .await?
        .into_inner()
        .unlock_key;
    if key.is_empty() {
        return Err(ApiError::not_found("no unlock key is set"));
    }
    Ok(Json(json!({ "UnlockKey": key })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{ManagerStatus, Meta, NodeDescription, NodeSpec, Resources};

    fn node(id: &str, role: NodeRole, host: &str) -> Node {
        Node {
            id: id.into(),
            spec: Some(NodeSpec {
                role: role as i32,
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: host.into(),
                resources: Some(Resources {
                    nano_cpus: 2_000_000_000,
                    memory_bytes: 4 << 30,
                }),
                os: "linux".into(),
                architecture: "x86_64".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn cluster() -> GetClusterResponse {
        GetClusterResponse {
            cluster_id: "c1".into(),
            cert_expiry_ns: 90 * 24 * 3600 * 1_000_000_000,
            heartbeat_period_ns: 5_000_000_000,
            ca_cert_pem: "-----BEGIN CERTIFICATE-----".into(),
            meta: Some(Meta {
                version: 7,
                created_at: 1_700_000_000_000_000_000,
                updated_at: 1_700_000_000_000_000_000,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn info_has_a_swarm_section_the_cli_and_portainer_accept() {
        let mut m1 = node("m1", NodeRole::RoleManager, "alpha");
        m1.manager_status = Some(ManagerStatus {
            addr: "10.0.0.1:4242".into(),
            leader: true,
            ..Default::default()
        });
        let nodes = vec![m1, node("w1", NodeRole::RoleWorker, "beta")];
        let c = cluster();
        let v = info_json(&InfoParts {
            node_id: "m1",
            advertise_addr: "10.0.0.1:4242",
            nodes: &nodes,
            cluster: &c,
            kernel: "6.1.0".into(),
            os_name: "Debian".into(),
        });
        assert_eq!(v["ID"], "m1");
        assert_eq!(v["Name"], "alpha");
        assert_eq!(v["NCPU"], 2);
        assert_eq!(v["MemTotal"], 4_i64 << 30);
        assert_eq!(v["OSType"], "linux");
        assert_eq!(v["KernelVersion"], "6.1.0");
        let s = &v["Swarm"];
        assert_eq!(s["NodeID"], "m1");
        assert_eq!(s["NodeAddr"], "10.0.0.1");
        assert_eq!(s["LocalNodeState"], "active");
        assert_eq!(s["ControlAvailable"], true);
        assert_eq!(s["Nodes"], 2);
        assert_eq!(s["Managers"], 1);
        assert_eq!(
            s["RemoteManagers"],
            json!([{"NodeID": "m1", "Addr": "10.0.0.1:4242"}])
        );
        assert_eq!(s["Cluster"]["ID"], "c1");
        assert_eq!(s["Cluster"]["Version"]["Index"], 7);
        assert_eq!(
            s["Cluster"]["Spec"]["Dispatcher"]["HeartbeatPeriod"],
            5_000_000_000_i64
        );
        assert_eq!(v["Warnings"], json!([]));
    }

    #[test]
    fn the_cluster_object_has_dockers_fields() {
        let v = cluster_json(&cluster());
        for key in [
            "ID",
            "Version",
            "CreatedAt",
            "UpdatedAt",
            "Spec",
            "TLSInfo",
            "RootRotationInProgress",
            "DataPathPort",
            "DefaultAddrPool",
            "SubnetSize",
        ] {
            assert!(v.get(key).is_some(), "{key} missing");
        }
        assert!(v["CreatedAt"]
            .as_str()
            .is_some_and(|t| t.starts_with("2023-11-14T22:13:20")));
        assert_eq!(v["Spec"]["Name"], "default");
        assert_eq!(v["Spec"]["EncryptionConfig"]["AutoLockManagers"], false);
        assert_eq!(v["TLSInfo"]["TrustRoot"], "-----BEGIN CERTIFICATE-----");
        assert_eq!(v["RootRotationInProgress"], false);
    }

    #[test]
    fn swarm_update_changes_only_what_shoal_can() {
        let c = cluster();
        let mut spec = cluster_json(&c)["Spec"].clone();
        // What the CLI sends back unchanged (Go adds its zero values).
        spec["CAConfig"]["ExternalCAs"] = json!(null);
        spec["TaskDefaults"]["LogDriver"] = json!(null);
        assert_eq!(
            plan_cluster_update(&c, &spec).expect("nothing"),
            ClusterPlan::default()
        );
        spec["EncryptionConfig"]["AutoLockManagers"] = json!(true);
        spec["CAConfig"]["NodeCertExpiry"] = json!(3_600_000_000_000_i64);
        spec["CAConfig"]["ForceRotate"] = json!(1);
        let plan = plan_cluster_update(&c, &spec).expect("a plan");
        let req = plan.update.expect("an update");
        assert_eq!(req.autolock, Some(true));
        assert_eq!(req.cert_expiry_ns, Some(3_600_000_000_000));
        assert!(plan.rotate_ca);
        let mut spec = cluster_json(&c)["Spec"].clone();
        spec["Dispatcher"]["HeartbeatPeriod"] = json!(1);
        let e = plan_cluster_update(&c, &spec).expect_err("not settable");
        assert!(
            e.message.starts_with("Dispatcher.HeartbeatPeriod:"),
            "{}",
            e.message
        );
        let mut spec = cluster_json(&c)["Spec"].clone();
        spec["Labels"] = json!({"a": "b"});
        let e = plan_cluster_update(&c, &spec).expect_err("labels");
        assert!(e.message.starts_with("Labels:"), "{}", e.message);
    }

    #[test]
    fn os_release_pretty_name() {
        assert_eq!(
            pretty_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12\"\n").as_deref(),
            Some("Debian GNU/Linux 12")
        );
        assert_eq!(pretty_name("NAME=x"), None);
    }

    /// The routes of this helper's modules over a Ctx whose gRPC peers are unreachable: what is
    /// answered before any call, and that the greedy routes capture what they must.
    mod routes {
        use std::sync::Arc;

        use axum::body::Body;
        use axum::http::{Request, StatusCode};
        use http_body_util::BodyExt as _;
        use shoal_proto::v1::cluster_admin_client::ClusterAdminClient;
        use shoal_proto::v1::control_client::ControlClient;
        use tonic::transport::Endpoint;
        use tower::ServiceExt as _;

        use crate::dockerapi::{distribution, networks, nodes, secrets, swarm, Ctx};

        fn app() -> axum::Router {
            // Port 1 of loopback: nothing listens, every call fails at once.
            let channel = Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
            let ctx = Ctx {
                control: ControlClient::new(channel.clone()),
                cluster: ClusterAdminClient::new(channel),
                node_id: "m1".into(),
                advertise_addr: "127.0.0.1:4242".into(),
                leadership: tokio::sync::watch::channel(true).1,
            };
            swarm::routes()
                .merge(nodes::routes())
                .merge(networks::routes())
                .merge(secrets::routes())
                .merge(distribution::routes())
                .with_state(Arc::new(ctx))
        }

        async fn call(method: &str, uri: &str, body: &str) -> (StatusCode, String) {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::from(body.to_string()))
                .expect("a request");
            let resp = app().oneshot(req).await.expect("infallible");
            let status = resp.status();
            let bytes = resp.into_body().collect().await.expect("a body").to_bytes();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }

        #[tokio::test]
        async fn refusals_come_before_any_call() {
            let (s, b) = call("POST", "/swarm/init", "{}").await;
            assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
            assert!(b.contains("shoal-manager init"), "{b}");
            let (s, b) = call(
                "GET",
                "/nodes?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D",
                "",
            )
            .await;
            assert_eq!(s, StatusCode::BAD_REQUEST);
            assert!(b.contains("invalid filter 'bogus'"), "{b}");
            let (s, _) = call("POST", "/nodes/n1/update?version=abc", "{}").await;
            assert_eq!(s, StatusCode::BAD_REQUEST);
            let (s, b) = call(
                "POST",
                "/networks/create",
                r#"{"Name":"n","Driver":"bridge"}"#,
            )
            .await;
            assert_eq!(s, StatusCode::BAD_REQUEST);
            assert!(b.contains("-d overlay"), "{b}");
            let (s, b) = call(
                "POST",
                "/secrets/create",
                r#"{"Name":"s","Data":"eA==","Driver":{"Name":"vault"}}"#,
            )
            .await;
            assert_eq!(s, StatusCode::BAD_REQUEST);
            assert!(b.contains("Driver:"), "{b}");
            let (s, _) = call("POST", "/swarm/update", "{}").await;
            assert_eq!(s, StatusCode::BAD_REQUEST);
            let (s, _) = call("POST", "/configs/c1/update", "{}").await;
            assert_eq!(s, StatusCode::BAD_REQUEST);
        }

        #[tokio::test]
        async fn greedy_routes_capture_whole_names() {
            // Reaches the registry (nobody there): the name was "127.0.0.1:1/x:1".
            let (s, b) = call("GET", "/distribution/127.0.0.1:1/x:1/json", "").await;
            assert_eq!(s, StatusCode::NOT_FOUND);
            assert!(b.contains("127.0.0.1:1/x:1"), "{b}");
            let (s, b) = call("GET", "/distribution/nginx", "").await;
            assert_eq!(s, StatusCode::NOT_FOUND);
            assert!(b.contains("page not found"), "{b}");
            // A network route, not the fallback: the control API is asked (and unreachable).
            let (s, _) = call("GET", "/networks/a/b", "").await;
            assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}
