//! `/secrets` and `/configs`: list, inspect, create, update (labels only), delete.
//!
//! Both are named immutable data; a secret's `Data` never leaves in a reply (the control API
//! strips it already), a config's does, base64. `stack deploy` updates each existing one with
//! its full spec, `Data` included, and relies on a byte-identical `Data` being accepted.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use shoal_proto::v1::{
    Config, ConfigSpec, CreateConfigRequest, CreateSecretRequest, GetConfigRequest,
    GetSecretRequest, ListConfigsRequest, ListSecretsRequest, Meta, RemoveConfigRequest,
    RemoveSecretRequest, Secret, SecretSpec, UpdateConfigRequest, UpdateSecretRequest,
};

use super::error::ApiResult;
use super::filters::Filters;
use super::nodes::{is_unset, parse_body, parse_version, refuse_extra, QueryMap};
use super::time::rfc3339;
use super::{ApiError, State};

/// This group's routes (unversioned paths).
pub fn routes() -> Router<State> {
    Router::new()
        .route("/secrets", get(list_secrets))
        .route("/secrets/create", post(create_secret))
        .route("/secrets/{id}", get(inspect_secret).delete(remove_secret))
        .route("/secrets/{id}/update", post(update_secret))
        .route("/configs", get(list_configs))
        .route("/configs/create", post(create_config))
        .route("/configs/{id}", get(inspect_config).delete(remove_config))
        .route("/configs/{id}/update", post(update_config))
}

/// The filter keys of `GET /secrets` and `GET /configs`.
const SECRET_FILTERS: &[&str] = &["id", "name", "names", "label"];
const CONFIG_FILTERS: &[&str] = &["id", "name", "label"];

/// The parts of a secret or config that docker shows.
pub(super) struct Named<'a> {
    /// The object's id.
    pub id: &'a str,
    /// Its version and times.
    pub meta: Meta,
    /// Its name.
    pub name: &'a str,
    /// Its labels.
    pub labels: &'a HashMap<String, String>,
    /// Its data, for a config only.
    pub data: Option<&'a [u8]>,
}

impl<'a> Named<'a> {
    fn of_secret(s: &'a Secret, empty: &'a HashMap<String, String>) -> Named<'a> {
        let spec = s.spec.as_ref();
        Named {
            id: &s.id,
            meta: s.meta.unwrap_or_default(),
            name: spec.map_or("", |sp| sp.name.as_str()),
            labels: spec.map_or(empty, |sp| &sp.labels),
            // Never a secret's data, whatever the control API answered.
            data: None,
        }
    }

    fn of_config(c: &'a Config, empty: &'a HashMap<String, String>) -> Named<'a> {
        let spec = c.spec.as_ref();
        Named {
            id: &c.id,
            meta: c.meta.unwrap_or_default(),
            name: spec.map_or("", |sp| sp.name.as_str()),
            labels: spec.map_or(empty, |sp| &sp.labels),
            data: Some(spec.map_or(&[][..], |sp| sp.data.as_slice())),
        }
    }

    /// Whether it passes `f` (`names` is an exact match, `id` and `name` prefixes).
    fn matches(&self, f: &Filters) -> bool {
        f.matches_prefix("id", self.id)
            && f.matches_prefix("name", self.name)
            && f.matches_exact("names", self.name)
            && f.matches_labels("label", self.labels)
    }

    /// docker's `swarm.Secret` / `swarm.Config`.
    fn json(&self) -> Value {
        let mut spec = json!({ "Name": self.name, "Labels": self.labels });
        if let Some(data) = self.data {
            spec["Data"] = json!(base64::engine::general_purpose::STANDARD.encode(data));
        }
        json!({
            "ID": self.id,
            "Version": { "Index": self.meta.version },
            "CreatedAt": rfc3339(self.meta.created_at),
            "UpdatedAt": rfc3339(self.meta.updated_at),
            "Spec": spec,
        })
    }
}

/// docker's `swarm.SecretSpec` / `swarm.ConfigSpec` as `secret create` and `stack deploy` send it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SpecBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
    /// Standard base64; None when absent or null.
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    driver: Option<Value>,
    #[serde(default)]
    templating: Option<Value>,
    #[serde(flatten)]
    extra: serde_json::Map<String, Value>,
}

/// The parts of a spec body Shoal keeps.
#[derive(Debug)]
pub(super) struct SpecParts {
    /// The object's name.
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Its data, decoded; None when the body has none.
    pub data: Option<Vec<u8>>,
}

/// The parts of a body Shoal keeps, or the field it cannot honour. Pure.
pub(super) fn spec_parts(b: &SpecBody) -> ApiResult<SpecParts> {
    refuse_extra("", &b.extra)?;
    if let Some(d) = b.driver.as_ref().filter(|v| !is_unset(v)) {
        return Err(ApiError::field(
            "Driver",
            format!("Shoal stores the data itself and has no secret drivers ({d})"),
        ));
    }
    if let Some(t) = b.templating.as_ref().filter(|v| !is_unset(v)) {
        return Err(ApiError::field(
            "Templating",
            format!("Shoal does not template secrets or configs ({t})"),
        ));
    }
    let data = match b.data.as_deref() {
        None => None,
        Some(d) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(d)
                .map_err(|e| ApiError::field("Data", format!("not standard base64: {e}")))?,
        ),
    };
    Ok(SpecParts {
        name: b.name.clone(),
        labels: b.labels.clone().unwrap_or_default(),
        data,
    })
}

/// moby answers a stale version with swarmkit's "update out of sequence" as a 500.
fn update_error(kind: &str, id: &str, s: tonic::Status) -> ApiError {
    if s.message().starts_with("update out of sequence") {
        return ApiError::internal(s.message());
    }
    ApiError::from_status_for(kind, id, s)
}

fn filters(q: &HashMap<String, String>, allowed: &[&str]) -> ApiResult<Filters> {
    let f = Filters::parse(q.get("filters").map(String::as_str))?;
    f.check(allowed)?;
    Ok(f)
}

/// `GET /secrets`.
async fn list_secrets(
    AxumState(ctx): AxumState<State>,
    Query(q): QueryMap,
) -> ApiResult<Json<Value>> {
    let f = filters(&q, SECRET_FILTERS)?;
    let secrets = ctx
        .control()
        .list_secrets(ListSecretsRequest {})
        .await?
        .into_inner()
        .secrets;
    let empty = HashMap::new();
    Ok(Json(Value::Array(
        secrets
            .iter()
            .map(|s| Named::of_secret(s, &empty))
            .filter(|n| n.matches(&f))
            .map(|n| n.json())
            .collect(),
    )))
}

/// `GET /configs`.
async fn list_configs(
    AxumState(ctx): AxumState<State>,
    Query(q): QueryMap,
) -> ApiResult<Json<Value>> {
    let f = filters(&q, CONFIG_FILTERS)?;
    let configs = ctx
        .control()
        .list_configs(ListConfigsRequest {})
        .await?
        .into_inner()
        .configs;
    let empty = HashMap::new();
    Ok(Json(Value::Array(
        configs
            .iter()
            .map(|c| Named::of_config(c, &empty))
            .filter(|n| n.matches(&f))
            .map(|n| n.json())
            .collect(),
    )))
}

async fn get_secret(ctx: &State, id: &str) -> ApiResult<Secret> {
    ctx.control()
        .get_secret(GetSecretRequest {
            name_or_id: id.to_string(),
        })
        .await
        .map_err(|s| ApiError::from_status_for("secret", id, s))?
        .into_inner()
        .secret
        .ok_or_else(|| ApiError::not_found(format!("no such secret: {id}")))
}

async fn get_config(ctx: &State, id: &str) -> ApiResult<Config> {
    ctx.control()
        .get_config(GetConfigRequest {
            name_or_id: id.to_string(),
        })
        .await
        .map_err(|s| ApiError::from_status_for("config", id, s))?
        .into_inner()
        .config
        .ok_or_else(|| ApiError::not_found(format!("no such config: {id}")))
}

/// `GET /secrets/{id}`: never with its data.
async fn inspect_secret(
    AxumState(ctx): AxumState<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = get_secret(&ctx, &id).await?;
    Ok(Json(Named::of_secret(&s, &HashMap::new()).json()))
}

/// `GET /configs/{id}`: with its data.
async fn inspect_config(
    AxumState(ctx): AxumState<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = get_config(&ctx, &id).await?;
    Ok(Json(Named::of_config(&c, &HashMap::new()).json()))
}

/// `POST /secrets/create`.
async fn create_secret(
    AxumState(ctx): AxumState<State>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let SpecParts { name, labels, data } = spec_parts(&parse_body(&body)?)?;
    tracing::debug!(secret = %name, "docker api: secret create");
    let s = ctx
        .control()
        .create_secret(CreateSecretRequest {
            spec: Some(SecretSpec {
                name,
                labels,
                data: data.unwrap_or_default(),
            }),
        })
        .await?
        .into_inner()
        .secret
        .ok_or_else(|| ApiError::internal("the control API answered without the secret"))?;
    Ok((StatusCode::CREATED, Json(json!({ "ID": s.id }))))
}

/// `POST /configs/create`.
async fn create_config(
    AxumState(ctx): AxumState<State>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let SpecParts { name, labels, data } = spec_parts(&parse_body(&body)?)?;
    tracing::debug!(config = %name, "docker api: config create");
    let c = ctx
        .control()
        .create_config(CreateConfigRequest {
            spec: Some(ConfigSpec {
                name,
                labels,
                data: data.unwrap_or_default(),
            }),
        })
        .await?
        .into_inner()
        .config
        .ok_or_else(|| ApiError::internal("the control API answered without the config"))?;
    Ok((StatusCode::CREATED, Json(json!({ "ID": c.id }))))
}

/// `POST /secrets/{id}/update?version=N` with the full spec.
async fn update_secret(
    AxumState(ctx): AxumState<State>,
    Path(id): Path<String>,
    Query(q): QueryMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let version = parse_version(&q, "secret")?;
    let SpecParts { name, labels, data } = spec_parts(&parse_body(&body)?)?;
    // No data: the control API keeps the stored data (a labels-only update).
    let data = data.unwrap_or_default();
    tracing::debug!(secret = %id, version, "docker api: secret update");
    ctx.control()
        .update_secret(UpdateSecretRequest {
            name_or_id: id.clone(),
            spec: Some(SecretSpec { name, labels, data }),
            version,
        })
        .await
        .map_err(|s| update_error("secret", &id, s))?;
    Ok(StatusCode::OK)
}

/// `POST /configs/{id}/update?version=N` with the full spec (a missing `Data` keeps it).
async fn update_config(
    AxumState(ctx): AxumState<State>,
    Path(id): Path<String>,
    Query(q): QueryMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let version = parse_version(&q, "config")?;
    let SpecParts { name, labels, data } = spec_parts(&parse_body(&body)?)?;
    let data = match data {
        Some(d) => d,
        None => get_config(&ctx, &id)
            .await?
            .spec
            .map(|s| s.data)
            .unwrap_or_default(),
    };
    tracing::debug!(config = %id, version, "docker api: config update");
    ctx.control()
        .update_config(UpdateConfigRequest {
            name_or_id: id.clone(),
            spec: Some(ConfigSpec { name, labels, data }),
            version,
        })
        .await
        .map_err(|s| update_error("config", &id, s))?;
    Ok(StatusCode::OK)
}

/// `DELETE /secrets/{id}`.
async fn remove_secret(
    AxumState(ctx): AxumState<State>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    tracing::debug!(secret = %id, "docker api: secret remove");
    ctx.control()
        .remove_secret(RemoveSecretRequest {
            name_or_id: id.clone(),
        })
        .await
        .map_err(|s| ApiError::from_status_for("secret", &id, s))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /configs/{id}`.
async fn remove_config(
    AxumState(ctx): AxumState<State>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    tracing::debug!(config = %id, "docker api: config remove");
    ctx.control()
        .remove_config(RemoveConfigRequest {
            name_or_id: id.clone(),
        })
        .await
        .map_err(|s| ApiError::from_status_for("config", &id, s))?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret {
            id: "s1abc".into(),
            meta: Some(Meta {
                version: 3,
                ..Default::default()
            }),
            spec: Some(SecretSpec {
                name: "db_pass".into(),
                labels: [("com.docker.stack.namespace".to_string(), "demo".to_string())].into(),
                data: b"hunter2".to_vec(),
            }),
        }
    }

    fn config() -> Config {
        Config {
            id: "c1".into(),
            meta: Some(Meta::default()),
            spec: Some(ConfigSpec {
                name: "nginx.conf".into(),
                labels: HashMap::new(),
                data: b"server {}".to_vec(),
            }),
        }
    }

    fn body(v: Value) -> SpecBody {
        serde_json::from_value(v).expect("a spec")
    }

    #[test]
    fn a_secrets_data_is_never_returned_a_configs_is() {
        let empty = HashMap::new();
        // Even if a reply carried it.
        let s = secret();
        let v = Named::of_secret(&s, &empty).json();
        assert_eq!(v["ID"], "s1abc");
        assert_eq!(v["Version"]["Index"], 3);
        assert_eq!(v["Spec"]["Name"], "db_pass");
        assert_eq!(v["Spec"]["Labels"]["com.docker.stack.namespace"], "demo");
        assert!(v["Spec"].get("Data").is_none());
        assert!(!v.to_string().contains("aHVudGVyMg"));
        for key in ["CreatedAt", "UpdatedAt"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        let c = config();
        let v = Named::of_config(&c, &empty).json();
        assert_eq!(v["Spec"]["Data"], "c2VydmVyIHt9");
    }

    #[test]
    fn filters_match() {
        let empty = HashMap::new();
        let s = secret();
        let n = Named::of_secret(&s, &empty);
        assert!(n.matches(&Filters::of(&[("name", "db")])));
        assert!(!n.matches(&Filters::of(&[("names", "db")])));
        assert!(n.matches(&Filters::of(&[("names", "db_pass")])));
        assert!(n.matches(&Filters::of(&[("id", "s1")])));
        assert!(n.matches(&Filters::of(&[(
            "label",
            "com.docker.stack.namespace=demo"
        )])));
        assert!(!n.matches(&Filters::of(&[("label", "other")])));
        assert!(Filters::of(&[("names", "x")])
            .check(CONFIG_FILTERS)
            .is_err());
        assert!(Filters::of(&[("names", "x")]).check(SECRET_FILTERS).is_ok());
    }

    #[test]
    fn create_bodies_decode_and_refuse_drivers() {
        let SpecParts { name, labels, data } = spec_parts(&body(json!({
            "Name": "db_pass", "Labels": {"a": "b"}, "Data": "aHVudGVyMg==",
            "Driver": null, "Templating": null
        })))
        .expect("accepted");
        assert_eq!(name, "db_pass");
        assert_eq!(labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(data.as_deref(), Some(&b"hunter2"[..]));
        // Zero-valued drivers, as some clients send, are unset.
        assert!(spec_parts(&body(json!({"Name": "x", "Driver": {"Name": ""}}))).is_ok());
        let e = spec_parts(&body(json!({"Name": "x", "Driver": {"Name": "vault"}})))
            .expect_err("a driver");
        assert!(e.message.starts_with("Driver:"), "{}", e.message);
        let e = spec_parts(&body(
            json!({"Name": "x", "Templating": {"Name": "golang"}}),
        ))
        .expect_err("templating");
        assert!(e.message.starts_with("Templating:"), "{}", e.message);
        let e = spec_parts(&body(json!({"Name": "x", "Data": "%%%"}))).expect_err("bad base64");
        assert!(e.message.starts_with("Data:"), "{}", e.message);
        assert_eq!(
            spec_parts(&body(json!({"Name": "x"})))
                .expect("no data")
                .data,
            None
        );
    }

    #[test]
    fn stale_versions_are_a_500_as_in_moby() {
        let e = update_error(
            "secret",
            "x",
            tonic::Status::failed_precondition("update out of sequence: secret x is at version 4"),
        );
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        let e = update_error("secret", "x", tonic::Status::invalid_argument("immutable"));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = update_error("secret", "x", tonic::Status::not_found("nope"));
        assert_eq!(e.message, "no such secret: x");
    }
}
