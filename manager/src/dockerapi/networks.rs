//! `/networks`: list, inspect, create (swarm-scope overlay; local drivers refused), delete.
//!
//! Shoal's predefined `bridge`, `host` and `none` networks show with scope `local` (as on a docker
//! host); every network a user makes is a swarm-scope overlay.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use shoal_proto::v1::{
    CreateNetworkRequest, GetNetworkRequest, ListNetworksRequest, Network, NetworkSpec,
    RemoveNetworkRequest,
};

use super::error::ApiResult;
use super::filters::Filters;
use super::nodes::{is_unset, parse_body, refuse_extra, QueryMap};
use super::time::rfc3339;
use super::{ApiError, State};

/// This group's routes (unversioned paths).
pub fn routes() -> Router<State> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/{*id}", get(inspect).delete(remove))
}

/// Whether docker shows `n` as a host-local network (Shoal's predefined bridge, host and none).
fn is_local(n: &Network) -> bool {
    n.spec.as_ref().is_some_and(|s| s.driver != "overlay")
}

/// docker's `network.Inspect` (also what `GET /networks` lists).
pub(super) fn network_json(n: &Network) -> Value {
    let meta = n.meta.unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    let (subnet, gateway) = n.addressing();
    let ipam_config: Vec<Value> = if subnet.is_empty() {
        Vec::new()
    } else {
        vec![json!({ "Subnet": subnet, "Gateway": gateway })]
    };
    let options = n.docker_options();
    json!({
        "Name": spec.name,
        "Id": n.id,
        "Created": rfc3339(meta.created_at),
        "Scope": if is_local(n) { "local" } else { "swarm" },
        "Driver": spec.driver,
        "EnableIPv6": false,
        "IPAM": { "Driver": "default", "Options": null, "Config": ipam_config },
        "Internal": false,
        "Attachable": spec.attachable,
        "Ingress": spec.ingress,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Containers": {},
        "Options": options,
        "Labels": spec.labels,
    })
}

/// The `GET /networks` filter keys.
const FILTERS: &[&str] = &["driver", "id", "label", "name", "scope", "type", "dangling"];

/// Whether `n` passes `f` (checked with [`FILTERS`]; `dangling` is applied by the caller, which
/// knows the services).
pub(super) fn network_matches(f: &Filters, n: &Network) -> ApiResult<bool> {
    for t in f.values("type") {
        if t != "custom" && t != "builtin" {
            return Err(ApiError::bad_request(format!(
                "invalid filter: 'type'='{t}': use custom or builtin"
            )));
        }
    }
    let spec = n.spec.clone().unwrap_or_default();
    let scope = if is_local(n) { "local" } else { "swarm" };
    let kind = if n.predefined { "builtin" } else { "custom" };
    // moby's network list matches `name` as a pattern anywhere in the name (`network ls -f
    // name=front` finds `demo_front`), `id` by prefix.
    let name_ok = !f.has("name") || f.values("name").any(|v| spec.name.contains(v));
    Ok(f.matches_exact("driver", &spec.driver)
        && f.matches_prefix("id", &n.id)
        && name_ok
        && f.matches_labels("label", &spec.labels)
        && f.matches_exact("scope", scope)
        && f.matches_exact("type", kind))
}

/// `GET /networks`.
async fn list(AxumState(ctx): AxumState<State>, Query(q): QueryMap) -> ApiResult<Json<Value>> {
    let f = Filters::parse(q.get("filters").map(String::as_str))?;
    f.check(FILTERS)?;
    let dangling = f.boolean("dangling")?;
    let networks = ctx
        .control()
        .list_networks(ListNetworksRequest {})
        .await?
        .into_inner()
        .networks;
    let mut out = Vec::new();
    for n in &networks {
        if !network_matches(&f, n)? {
            continue;
        }
        if let Some(want) = dangling {
            // moby: predefined networks are never dangling; others are when nothing uses them.
            let unused = !n.predefined && services_of(&ctx, &n.id).await?.is_empty();
            if unused != want {
                continue;
            }
        }
        out.push(network_json(n));
    }
    Ok(Json(Value::Array(out)))
}

/// The names of the services attached to network `id`.
async fn services_of(ctx: &State, id: &str) -> ApiResult<Vec<String>> {
    Ok(ctx
        .control()
        .get_network(GetNetworkRequest {
            name_or_id: id.to_string(),
        })
        .await
        .map_err(|s| ApiError::from_status_for("network", id, s))?
        .into_inner()
        .services)
}

/// `GET /networks/{id}[?verbose=true][&scope=swarm]`.
async fn inspect(
    AxumState(ctx): AxumState<State>,
    Path(id): Path<String>,
    Query(q): QueryMap,
) -> ApiResult<Json<Value>> {
    let n = ctx
        .control()
        .get_network(GetNetworkRequest {
            name_or_id: id.clone(),
        })
        .await
        .map_err(|s| ApiError::from_status_for("network", &id, s))?
        .into_inner()
        .network
        .ok_or_else(|| ApiError::not_found(format!("no such network: {id}")))?;
    // moby answers 404 when the network exists in another scope than the one asked for.
    if let Some(scope) = q.get("scope").filter(|s| !s.is_empty()) {
        let have = if is_local(&n) { "local" } else { "swarm" };
        if scope != have {
            return Err(ApiError::not_found(format!("no such network: {id}")));
        }
    }
    Ok(Json(network_json(&n)))
}

/// docker's `network.CreateRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CreateBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    driver: String,
    #[serde(default)]
    scope: String,
    #[serde(default, rename = "EnableIPv6")]
    enable_ipv6: Option<bool>,
    #[serde(default, rename = "EnableIPv4")]
    enable_ipv4: Option<bool>,
    #[serde(default, rename = "IPAM")]
    ipam: Option<IpamBody>,
    #[serde(default)]
    internal: Option<bool>,
    #[serde(default)]
    attachable: Option<bool>,
    #[serde(default)]
    ingress: Option<bool>,
    #[serde(default)]
    config_only: Option<bool>,
    #[serde(default)]
    config_from: Option<Value>,
    #[serde(default)]
    options: Option<HashMap<String, String>>,
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
    /// Ignored: Shoal always refuses a duplicate name.
    #[serde(default)]
    #[allow(dead_code)]
    check_duplicate: Option<bool>,
    #[serde(flatten)]
    extra: serde_json::Map<String, Value>,
}

/// docker's `network.IPAM`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct IpamBody {
    #[serde(default)]
    driver: String,
    #[serde(default)]
    options: Option<HashMap<String, String>>,
    #[serde(default)]
    config: Option<Vec<IpamConfigBody>>,
    #[serde(flatten)]
    extra: serde_json::Map<String, Value>,
}

/// docker's `network.IPAMConfig`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct IpamConfigBody {
    #[serde(default)]
    subnet: String,
    #[serde(default)]
    gateway: String,
    #[serde(flatten)]
    extra: serde_json::Map<String, Value>,
}

/// Shoal's spec for a docker create request, or the field Shoal cannot honour. Pure.
pub(super) fn network_spec(b: &CreateBody) -> ApiResult<NetworkSpec> {
    refuse_extra("", &b.extra)?;
    match b.driver.as_str() {
        // An API client that names no driver gets the only kind a user makes in Shoal.
        "" | "overlay" => {}
        other => {
            return Err(ApiError::field(
                "Driver",
                format!(
                    "Shoal creates only swarm-scope overlay networks, not {other:?} ones: \
                     use `-d overlay`"
                ),
            ))
        }
    }
    if !matches!(b.scope.as_str(), "" | "swarm") {
        return Err(ApiError::field(
            "Scope",
            format!("Shoal networks are swarm-scope, not {:?}", b.scope),
        ));
    }
    if b.enable_ipv6 == Some(true) {
        return Err(ApiError::field(
            "EnableIPv6",
            "Shoal overlay networks are IPv4 only",
        ));
    }
    if b.enable_ipv4 == Some(false) {
        return Err(ApiError::field(
            "EnableIPv4",
            "Shoal overlay networks are IPv4 networks",
        ));
    }
    if b.internal == Some(true) {
        return Err(ApiError::field(
            "Internal",
            "Shoal does not make internal (no outside access) networks",
        ));
    }
    if b.config_only == Some(true) {
        return Err(ApiError::field(
            "ConfigOnly",
            "Shoal has no configuration-only networks",
        ));
    }
    if let Some(from) = b.config_from.as_ref().filter(|v| !is_unset(v)) {
        return Err(ApiError::field(
            "ConfigFrom",
            format!("Shoal has no configuration-only networks to copy from ({from})"),
        ));
    }
    let mut spec = NetworkSpec {
        name: b.name.clone(),
        driver: "overlay".into(),
        attachable: b.attachable.unwrap_or(false),
        ingress: b.ingress.unwrap_or(false),
        labels: b.labels.clone().unwrap_or_default(),
        options: b.options.clone().unwrap_or_default(),
        ..Default::default()
    };
    if let Some(ipam) = &b.ipam {
        refuse_extra("IPAM.", &ipam.extra)?;
        if !matches!(ipam.driver.as_str(), "" | "default") {
            return Err(ApiError::field(
                "IPAM.Driver",
                format!("Shoal has only its own IPAM, not {:?}", ipam.driver),
            ));
        }
        if ipam.options.as_ref().is_some_and(|o| !o.is_empty()) {
            return Err(ApiError::field(
                "IPAM.Options",
                "Shoal's IPAM takes no options",
            ));
        }
        let configs = ipam.config.as_deref().unwrap_or_default();
        if configs.len() > 1 {
            return Err(ApiError::field(
                "IPAM.Config",
                "a Shoal network has one subnet",
            ));
        }
        if let Some(c) = configs.first() {
            refuse_extra("IPAM.Config.", &c.extra)?;
            spec.subnet = c.subnet.clone();
            spec.gateway = c.gateway.clone();
        }
    }
    Ok(spec)
}

/// `POST /networks/create`.
async fn create(
    AxumState(ctx): AxumState<State>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body: CreateBody = parse_body(&body)?;
    let spec = network_spec(&body)?;
    tracing::debug!(network = %spec.name, "docker api: network create");
    let n = ctx
        .control()
        .create_network(CreateNetworkRequest { spec: Some(spec) })
        .await?
        .into_inner()
        .network
        .ok_or_else(|| ApiError::internal("the control API answered without the network"))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "Id": n.id, "Warning": "" })),
    ))
}

/// `DELETE /networks/{id}`.
async fn remove(AxumState(ctx): AxumState<State>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    tracing::debug!(network = %id, "docker api: network remove");
    ctx.control()
        .remove_network(RemoveNetworkRequest {
            name_or_id: id.clone(),
        })
        .await
        .map_err(|s| ApiError::from_status_for("network", &id, s))?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::Meta;

    fn overlay() -> Network {
        Network {
            id: "n1abc".into(),
            meta: Some(Meta::default()),
            spec: Some(NetworkSpec {
                name: "front".into(),
                driver: "overlay".into(),
                attachable: true,
                labels: [("com.docker.stack.namespace".to_string(), "demo".to_string())].into(),
                ..Default::default()
            }),
            subnet: "10.1.0.0/24".into(),
            gateway: "10.1.0.1".into(),
            vni: 4097,
            predefined: false,
        }
    }

    fn bridge() -> Network {
        Network {
            id: "b1".into(),
            spec: Some(NetworkSpec {
                name: "bridge".into(),
                driver: "bridge".into(),
                ..Default::default()
            }),
            predefined: true,
            ..Default::default()
        }
    }

    fn create_body(v: Value) -> CreateBody {
        serde_json::from_value(v).expect("a create request")
    }

    #[test]
    fn network_json_has_dockers_shape() {
        let v = network_json(&overlay());
        assert_eq!(v["Id"], "n1abc");
        assert_eq!(v["Name"], "front");
        assert_eq!(v["Scope"], "swarm");
        assert_eq!(v["Driver"], "overlay");
        assert_eq!(v["IPAM"]["Driver"], "default");
        assert_eq!(v["IPAM"]["Config"][0]["Subnet"], "10.1.0.0/24");
        assert_eq!(v["IPAM"]["Config"][0]["Gateway"], "10.1.0.1");
        assert_eq!(v["Attachable"], true);
        assert_eq!(v["ConfigFrom"]["Network"], "");
        assert_eq!(v["Containers"], json!({}));
        assert_eq!(
            v["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
            "4097"
        );
        assert_eq!(v["Labels"]["com.docker.stack.namespace"], "demo");
        let b = network_json(&bridge());
        assert_eq!(b["Scope"], "local");
        assert_eq!(b["IPAM"]["Config"], json!([]));
    }

    #[test]
    fn filters_match() {
        let ok = |pairs: &[(&str, &str)], n: &Network| {
            network_matches(&Filters::of(pairs), n).expect("valid filter")
        };
        assert!(ok(&[("driver", "overlay")], &overlay()));
        assert!(!ok(&[("driver", "overlay")], &bridge()));
        assert!(ok(&[("scope", "swarm")], &overlay()));
        assert!(ok(&[("scope", "local")], &bridge()));
        assert!(ok(&[("type", "builtin")], &bridge()));
        assert!(ok(&[("type", "custom")], &overlay()));
        assert!(ok(&[("name", "fr")], &overlay()));
        assert!(ok(&[("name", "ont")], &overlay()));
        assert!(!ok(&[("name", "back")], &overlay()));
        assert!(ok(&[("id", "n1")], &overlay()));
        assert!(ok(
            &[("label", "com.docker.stack.namespace=demo")],
            &overlay()
        ));
        assert!(!ok(&[("label", "x")], &overlay()));
        assert!(network_matches(&Filters::of(&[("type", "odd")]), &overlay()).is_err());
        assert!(Filters::of(&[("subnet", "x")]).check(FILTERS).is_err());
    }

    #[test]
    fn what_the_cli_sends_for_an_overlay_is_accepted() {
        // `docker network create -d overlay --attachable --opt encrypted --subnet ... front`
        let spec = network_spec(&create_body(json!({
            "Name": "front", "Driver": "overlay", "Scope": "", "EnableIPv6": false,
            "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1"}]},
            "Internal": false, "Attachable": true, "Ingress": false, "ConfigOnly": false,
            "ConfigFrom": null, "Options": {"encrypted": ""}, "Labels": {"a": "b"},
            "CheckDuplicate": true
        })))
        .expect("accepted");
        assert_eq!(spec.name, "front");
        assert_eq!(spec.driver, "overlay");
        assert!(spec.attachable);
        assert_eq!(spec.subnet, "10.9.0.0/24");
        assert_eq!(spec.gateway, "10.9.0.1");
        assert!(spec.options.contains_key("encrypted"));
        assert_eq!(spec.labels.get("a").map(String::as_str), Some("b"));
        // A stack's network: only a name, driver and labels.
        let spec = network_spec(&create_body(
            json!({"Name": "demo_default", "Driver": "overlay",
            "Labels": {"com.docker.stack.namespace": "demo"}}),
        ))
        .expect("accepted");
        assert_eq!(spec.name, "demo_default");
    }

    #[test]
    fn what_shoal_cannot_make_is_refused_by_field() {
        let refused = |v: Value, field: &str| {
            let e = network_spec(&create_body(v)).expect_err("refused");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.starts_with(field), "{}", e.message);
        };
        refused(json!({"Name": "n", "Driver": "bridge"}), "Driver:");
        refused(json!({"Name": "n", "Driver": "macvlan"}), "Driver:");
        refused(json!({"Name": "n", "Scope": "local"}), "Scope:");
        refused(json!({"Name": "n", "EnableIPv6": true}), "EnableIPv6:");
        refused(json!({"Name": "n", "Internal": true}), "Internal:");
        refused(json!({"Name": "n", "ConfigOnly": true}), "ConfigOnly:");
        refused(
            json!({"Name": "n", "ConfigFrom": {"Network": "x"}}),
            "ConfigFrom:",
        );
        refused(
            json!({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.9.0.0/24", "IPRange": "10.9.0.0/25"}]}}),
            "IPAM.Config.IPRange:",
        );
        refused(
            json!({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.9.0.0/24"}, {"Subnet": "10.8.0.0/24"}]}}),
            "IPAM.Config:",
        );
        refused(
            json!({"Name": "n", "IPAM": {"Driver": "dhcp"}}),
            "IPAM.Driver:",
        );
        refused(json!({"Name": "n", "Frobnicate": 1}), "Frobnicate:");
        assert!(network_spec(&create_body(json!({"Name": "n", "Driver": ""}))).is_ok());
    }
}
