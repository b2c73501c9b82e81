//! `/services`: list (with `status`), inspect (`insertDefaults`), create, update (`version=`,
//! `rollback=previous`), delete. Each is one or two calls to the control API; the JSON is built
//! by the pure functions below ([`service_json`], [`filter_services`]), which the tests check.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use shoal_proto::v1::{
    update_status, CreateServiceRequest, GetServiceRequest, ListServicesRequest,
    RemoveServiceRequest, Service, ServiceMode, ServiceSummary, UpdateServiceRequest,
};

use super::error::{ApiError, ApiResult};
use super::filters::Filters;
use super::spec;
use super::time::rfc3339;
use super::State;

/// This group's routes (unversioned paths).
pub fn routes() -> Router<State> {
    Router::new()
        .route("/services", get(list))
        .route("/services/create", post(create))
        .route("/services/{id}", get(inspect).delete(remove))
        .route("/services/{id}/update", post(update))
}

/// The filter keys `GET /services` knows (moby's).
const SERVICE_FILTERS: &[&str] = &["id", "name", "label", "mode", "runtime"];

/// A query flag as moby's `httputils.BoolValue` reads it: anything but "", "0", "no", "false"
/// and "none" is true.
fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| {
        let v = v.trim().to_ascii_lowercase();
        !matches!(v.as_str(), "" | "0" | "no" | "false" | "none")
    })
}

async fn list(
    AxState(ctx): AxState<State>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let filters = Filters::parse(q.get("filters").map(String::as_str))?;
    filters.check(SERVICE_FILTERS)?;
    let status = flag(&q, "status");
    let summaries = ctx
        .control()
        .list_services(ListServicesRequest {})
        .await?
        .into_inner()
        .services;
    let out: Vec<Value> = filter_services(&summaries, &filters)
        .into_iter()
        .filter_map(|s| {
            let svc = s.service.as_ref()?;
            Some(service_json(svc, status.then_some(s), false))
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

/// The services `filters` selects: `id` and `name` by prefix, `label` on the service's labels,
/// `mode` (replicated|global), `runtime` (only "container" exists).
pub fn filter_services<'a>(all: &'a [ServiceSummary], f: &Filters) -> Vec<&'a ServiceSummary> {
    all.iter()
        .filter(|s| {
            let Some(svc) = s.service.as_ref() else {
                return false;
            };
            let spec = svc.spec.clone().unwrap_or_default();
            let mode = if spec.mode == ServiceMode::ModeGlobal as i32 {
                "global"
            } else {
                "replicated"
            };
            f.matches_prefix("id", &svc.id)
                && f.matches_prefix("name", &spec.name)
                && f.matches_labels("label", &spec.labels)
                && f.matches_exact("mode", mode)
                && f.matches_exact("runtime", "container")
        })
        .collect()
}

/// docker's name of an update state.
fn update_state_name(state: i32) -> &'static str {
    match update_status::State::try_from(state) {
        Ok(update_status::State::Updating) => "updating",
        Ok(update_status::State::Paused) => "paused",
        Ok(update_status::State::Completed) => "completed",
        Ok(update_status::State::RollbackStarted) => "rollback_started",
        Ok(update_status::State::RollbackPaused) => "rollback_paused",
        Ok(update_status::State::RollbackCompleted) => "rollback_completed",
        _ => "",
    }
}

/// A service as docker's JSON: `ID, Version, CreatedAt, UpdatedAt, Spec, PreviousSpec,
/// Endpoint, UpdateStatus` and, with `summary` (`?status=true`), `ServiceStatus`.
/// `Spec.TaskTemplate.ContainerSpec` and `Spec.Mode` are always present.
pub fn service_json(
    svc: &Service,
    summary: Option<&ServiceSummary>,
    insert_defaults: bool,
) -> Value {
    let meta = svc.meta.unwrap_or_default();
    let spec = svc.spec.clone().unwrap_or_default();
    let mut o = Map::new();
    o.insert("ID".into(), json!(svc.id));
    o.insert("Version".into(), json!({ "Index": meta.version }));
    o.insert("CreatedAt".into(), json!(rfc3339(meta.created_at)));
    o.insert("UpdatedAt".into(), json!(rfc3339(meta.updated_at)));
    o.insert(
        "Spec".into(),
        spec::service_spec_to_docker(&spec, insert_defaults),
    );
    if let Some(prev) = &svc.previous_spec {
        o.insert(
            "PreviousSpec".into(),
            spec::service_spec_to_docker(prev, insert_defaults),
        );
    }
    let endpoint = svc.endpoint.clone().unwrap_or_default();
    let ep_spec = endpoint.spec.or(spec.endpoint).unwrap_or_default();
    let mut eo = Map::new();
    let mut es = Map::new();
    es.insert(
        "Mode".into(),
        json!(if ep_spec.mode.is_empty() {
            "vip"
        } else {
            ep_spec.mode.as_str()
        }),
    );
    if !ep_spec.ports.is_empty() {
        es.insert(
            "Ports".into(),
            Value::Array(ep_spec.ports.iter().map(spec::port_to_docker).collect()),
        );
    }
    eo.insert("Spec".into(), Value::Object(es));
    if !endpoint.ports.is_empty() {
        eo.insert(
            "Ports".into(),
            Value::Array(endpoint.ports.iter().map(spec::port_to_docker).collect()),
        );
    }
    if !endpoint.virtual_ips.is_empty() {
        let vips = endpoint
            .virtual_ips
            .iter()
            .map(|v| json!({ "NetworkID": v.network_id, "Addr": v.addr }))
            .collect();
        eo.insert("VirtualIPs".into(), Value::Array(vips));
    }
    o.insert("Endpoint".into(), Value::Object(eo));
    if let Some(us) = &svc.update_status {
        let mut uo = Map::new();
        uo.insert("State".into(), json!(update_state_name(us.state)));
        if us.started_at != 0 {
            uo.insert("StartedAt".into(), json!(rfc3339(us.started_at)));
        }
        if us.completed_at != 0 {
            uo.insert("CompletedAt".into(), json!(rfc3339(us.completed_at)));
        }
        uo.insert("Message".into(), json!(us.message));
        o.insert("UpdateStatus".into(), Value::Object(uo));
    }
    if let Some(s) = summary {
        o.insert(
            "ServiceStatus".into(),
            json!({
                "RunningTasks": s.running_tasks,
                "DesiredTasks": s.desired_tasks,
                "CompletedTasks": 0,
            }),
        );
    }
    Value::Object(o)
}

async fn inspect(
    AxState(ctx): AxState<State>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let svc = get_service(&ctx, &id).await?;
    Ok(Json(service_json(&svc, None, flag(&q, "insertDefaults"))))
}

async fn get_service(ctx: &State, id: &str) -> ApiResult<Service> {
    ctx.control()
        .get_service(GetServiceRequest {
            name_or_id: id.to_string(),
        })
        .await
        .map_err(|s| ApiError::from_status_for("service", id, s))?
        .into_inner()
        .service
        .ok_or_else(|| ApiError::internal("the control API returned no service"))
}

/// The body as JSON (400 when it is not).
fn json_body(body: &Bytes) -> ApiResult<Value> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// The `X-Registry-Auth` header as Shoal's credentials.
fn header_auth(headers: &HeaderMap) -> ApiResult<Option<shoal_proto::v1::RegistryAuth>> {
    match headers.get("X-Registry-Auth") {
        None => Ok(None),
        Some(v) => super::distribution::registry_auth_from_header(Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("X-Registry-Auth: not ASCII"))?,
        )),
    }
}

async fn create(
    AxState(ctx): AxState<State>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let mut spec = spec::service_spec_from_docker(&json_body(&body)?)?;
    if let Some(c) = spec.task.as_mut().and_then(|t| t.container.as_mut()) {
        c.registry_auth = header_auth(&headers)?;
    }
    let name = spec.name.clone();
    let svc = ctx
        .control()
        .create_service(CreateServiceRequest { spec: Some(spec) })
        .await?
        .into_inner()
        .service
        .ok_or_else(|| ApiError::internal("the control API returned no service"))?;
    tracing::debug!(service = %svc.id, %name, "docker API: service created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "ID": svc.id, "Warnings": [] })),
    ))
}

/// The parameters of `POST /services/{id}/update` that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateQuery {
    /// `version=N`: the `Version.Index` the client read.
    pub version: u64,
    /// `rollback=previous`.
    pub rollback: bool,
}

/// Parses the update query as moby: `version` must be an unsigned integer ("invalid service
/// version" otherwise), `rollback` is "" or "previous", `registryAuthFrom` "", "spec" or
/// "previous-spec".
pub fn parse_update_query(q: &HashMap<String, String>) -> ApiResult<UpdateQuery> {
    let version = q
        .get("version")
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| ApiError::bad_request("invalid service version"))?;
    let rollback = match q.get("rollback").map(String::as_str) {
        None | Some("") => false,
        Some("previous") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid rollback parameter {other:?}: use \"previous\""
            )))
        }
    };
    match q.get("registryAuthFrom").map(String::as_str) {
        None | Some("") | Some("spec") | Some("previous-spec") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid registryAuthFrom {other:?}: use spec or previous-spec"
            )))
        }
    }
    Ok(UpdateQuery { version, rollback })
}

async fn update(
    AxState(ctx): AxState<State>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let uq = parse_update_query(&q)?;
    let req = if uq.rollback {
        // The body is the current spec, as the CLI read it; the control API swaps in the
        // previous one.
        UpdateServiceRequest {
            name_or_id: id.clone(),
            spec: None,
            version: uq.version,
            rollback: "previous".into(),
        }
    } else {
        let mut sent = spec::service_spec_from_docker(&json_body(&body)?)?;
        let stored = get_service(&ctx, &id).await?;
        if let Some(stored_spec) = &stored.spec {
            spec::settle_update(stored_spec, &mut sent);
        }
        // Without credentials in the header the control API keeps the stored ones
        // (registryAuthFrom=spec and previous-spec alike: they are never shown to clients).
        if let Some(c) = sent.task.as_mut().and_then(|t| t.container.as_mut()) {
            c.registry_auth = header_auth(&headers)?;
        }
        UpdateServiceRequest {
            name_or_id: stored.id,
            spec: Some(sent),
            version: uq.version,
            rollback: String::new(),
        }
    };
    ctx.control()
        .update_service(req)
        .await
        .map_err(|s| ApiError::from_status_for("service", &id, s))?;
    tracing::debug!(service = %id, version = uq.version, rollback = uq.rollback, "docker API: service updated");
    Ok(Json(json!({ "Warnings": [] })))
}

async fn remove(AxState(ctx): AxState<State>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    ctx.control()
        .remove_service(RemoveServiceRequest {
            name_or_id: id.clone(),
        })
        .await
        .map_err(|s| ApiError::from_status_for("service", &id, s))?;
    tracing::debug!(service = %id, "docker API: service removed");
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{
        ContainerSpec, Endpoint, EndpointSpec, Meta, PortConfig, ServiceSpec, TaskSpec,
        UpdateStatus, VirtualIp,
    };

    fn svc(id: &str, name: &str, labels: &[(&str, &str)], global: bool) -> Service {
        Service {
            id: id.into(),
            meta: Some(Meta {
                version: 42,
                created_at: 1_700_000_000_000_000_000,
                updated_at: 1_700_000_001_000_000_000,
            }),
            spec: Some(ServiceSpec {
                name: name.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                    .collect(),
                task: Some(TaskSpec {
                    container: Some(ContainerSpec {
                        image: "busybox".into(),
                        registry_auth: Some(shoal_proto::v1::RegistryAuth {
                            password: "hunter2".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                mode: if global {
                    ServiceMode::ModeGlobal as i32
                } else {
                    ServiceMode::ModeReplicated as i32
                },
                replicas: if global { 0 } else { 2 },
                ..Default::default()
            }),
            spec_version: 3,
            ..Default::default()
        }
    }

    fn summary(s: Service) -> ServiceSummary {
        ServiceSummary {
            service: Some(s),
            running_tasks: 1,
            desired_tasks: 2,
        }
    }

    #[test]
    fn the_service_json_has_what_the_cli_dereferences() {
        let mut s = svc("abcdef", "web", &[], false);
        s.endpoint = Some(Endpoint {
            spec: Some(EndpointSpec {
                mode: String::new(),
                ports: vec![PortConfig {
                    protocol: "tcp".into(),
                    target_port: 80,
                    publish_mode: "ingress".into(),
                    ..Default::default()
                }],
            }),
            ports: vec![PortConfig {
                protocol: "tcp".into(),
                target_port: 80,
                published_port: 30000,
                publish_mode: "ingress".into(),
                ..Default::default()
            }],
            virtual_ips: vec![VirtualIp {
                network_id: "ing".into(),
                addr: "10.0.0.2/24".into(),
            }],
        });
        s.update_status = Some(UpdateStatus {
            state: update_status::State::RollbackPaused as i32,
            started_at: 1_700_000_002_000_000_000,
            completed_at: 0,
            message: "rollback paused".into(),
        });
        let v = service_json(&s, Some(&summary(s.clone())), false);
        assert_eq!(v["ID"], json!("abcdef"));
        assert_eq!(v["Version"], json!({"Index": 42}));
        assert_eq!(v["CreatedAt"], json!("2023-11-14T22:13:20.000000000Z"));
        assert!(v["Spec"]["TaskTemplate"]["ContainerSpec"].is_object());
        assert_eq!(v["Spec"]["Mode"], json!({"Replicated": {"Replicas": 2}}));
        assert_eq!(v["Endpoint"]["Spec"]["Mode"], json!("vip"));
        assert_eq!(v["Endpoint"]["Ports"][0]["PublishedPort"], json!(30000));
        assert_eq!(
            v["Endpoint"]["VirtualIPs"][0],
            json!({"NetworkID": "ing", "Addr": "10.0.0.2/24"})
        );
        assert_eq!(v["UpdateStatus"]["State"], json!("rollback_paused"));
        assert!(v["UpdateStatus"].get("CompletedAt").is_none());
        assert_eq!(
            v["ServiceStatus"],
            json!({"RunningTasks": 1, "DesiredTasks": 2, "CompletedTasks": 0})
        );
        assert!(v.get("PreviousSpec").is_none());
        assert!(
            !v.to_string().contains("hunter2"),
            "credentials leaked: {v}"
        );
        // Without status, no ServiceStatus; with a previous spec, PreviousSpec.
        s.previous_spec = s.spec.clone().map(Box::new);
        let v = service_json(&s, None, true);
        assert!(v.get("ServiceStatus").is_none());
        assert!(v["PreviousSpec"]["TaskTemplate"]["ContainerSpec"].is_object());
        assert_eq!(v["Spec"]["UpdateConfig"]["Parallelism"], json!(1));
    }

    #[test]
    fn services_are_filtered_as_moby_does() {
        let all = vec![
            summary(svc(
                "aaa111",
                "demo_web",
                &[("com.docker.stack.namespace", "demo")],
                false,
            )),
            summary(svc(
                "aab222",
                "demo_db",
                &[("com.docker.stack.namespace", "demo")],
                true,
            )),
            summary(svc("bbb333", "other", &[], false)),
        ];
        let ids = |f: Filters| -> Vec<String> {
            filter_services(&all, &f)
                .iter()
                .filter_map(|s| s.service.as_ref().map(|s| s.id.clone()))
                .collect()
        };
        assert_eq!(ids(Filters::default()).len(), 3);
        assert_eq!(ids(Filters::of(&[("id", "aa")])), vec!["aaa111", "aab222"]);
        assert_eq!(ids(Filters::of(&[("name", "demo_w")])), vec!["aaa111"]);
        assert_eq!(
            ids(Filters::of(&[("label", "com.docker.stack.namespace=demo")])),
            vec!["aaa111", "aab222"]
        );
        assert_eq!(
            ids(Filters::of(&[("label", "com.docker.stack.namespace")])).len(),
            2
        );
        assert_eq!(ids(Filters::of(&[("mode", "global")])), vec!["aab222"]);
        assert_eq!(ids(Filters::of(&[("runtime", "container")])).len(), 3);
        assert!(ids(Filters::of(&[("runtime", "plugin")])).is_empty());
        assert!(Filters::of(&[("desired-state", "running")])
            .check(SERVICE_FILTERS)
            .is_err());
    }

    #[test]
    fn the_update_query_is_checked() {
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect()
        };
        assert_eq!(
            parse_update_query(&q(&[("version", "21"), ("rollback", "previous")])).ok(),
            Some(UpdateQuery {
                version: 21,
                rollback: true
            })
        );
        assert_eq!(
            parse_update_query(&q(&[("version", "21"), ("registryAuthFrom", "spec")]))
                .map(|u| u.rollback)
                .ok(),
            Some(false)
        );
        for bad in [vec![], vec![("version", "x")], vec![("version", "-1")]] {
            let e = parse_update_query(&q(&bad)).expect_err("bad version");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.message, "invalid service version");
        }
        assert!(parse_update_query(&q(&[("version", "1"), ("rollback", "next")])).is_err());
    }

    /// The routes over a control API nobody listens on: what is refused before any call shows
    /// docker's 400s, the rest reaches the (unreachable) control API.
    fn router() -> axum::Router {
        let ch = tonic::transport::Channel::from_static("http://127.0.0.1:9").connect_lazy();
        let ctx = super::super::Ctx {
            control: shoal_proto::v1::control_client::ControlClient::new(ch.clone()),
            cluster: shoal_proto::v1::cluster_admin_client::ClusterAdminClient::new(ch),
            node_id: "node".into(),
            advertise_addr: "127.0.0.1:4242".into(),
            leadership: tokio::sync::watch::channel(true).1,
        };
        super::super::router(std::sync::Arc::new(ctx))
    }

    async fn call(method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
        use http_body_util::BodyExt as _;
        use tower::ServiceExt as _;
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("Content-Type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .expect("request");
        let resp = router().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn bad_requests_get_dockers_400_before_any_call() {
        let (s, v) = call(
            "POST",
            "/services/create",
            r#"{"Name":"x","TaskTemplate":{"ContainerSpec":{"Image":"busybox","TTY":true}}}"#,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("TaskTemplate.ContainerSpec.TTY: ")),
            "{v}"
        );
        let (s, v) = call("POST", "/services/web/update?version=x", "{}").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(v["message"], json!("invalid service version"));
        let (s, v) = call(
            "GET",
            "/services?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D",
            "",
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(v["message"], json!("invalid filter 'bogus'"));
        let (s, _) = call(
            "GET",
            "/tasks?filters=%7B%22mode%22%3A%5B%22global%22%5D%7D",
            "",
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _) = call("POST", "/services/create", "not json").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        // A good request goes to the control API (unreachable here: 503).
        let (s, _) = call("GET", "/services?status=true", "").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    }
}
