//! `/distribution/{name}/json`: the digest and platforms the registry serves for an image now.
//!
//! `docker service create/update` and `stack deploy` ask it to pin a service's image to a digest;
//! when it fails the CLI only warns and sends the image as given. The registry is asked as
//! shoalctl's `--resolve-image` asks it (`shoal_proto::resolve`): plain HTTP for loopback
//! registries, the credentials of the `X-Registry-Auth` header.

use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use shoal_proto::resolve::{self, ResolveError, Resolved};
use shoal_proto::v1::RegistryAuth;

use super::error::ApiResult;
use super::{ApiError, State};

/// This group's routes (unversioned paths).
pub fn routes() -> Router<State> {
    // Image names contain '/': the whole rest of the path is captured and must end in "/json".
    Router::new().route("/distribution/{*name}", get(inspect))
}

/// docker's `registry.AuthConfig`, as the `X-Registry-Auth` header carries it.
#[derive(Debug, Default, Deserialize)]
struct AuthConfig {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// base64 of "username:password" (what `~/.docker/config.json` stores).
    #[serde(default)]
    auth: String,
    #[serde(default)]
    serveraddress: String,
    #[serde(default)]
    identitytoken: String,
    #[serde(default)]
    registrytoken: String,
}

/// The credentials of an `X-Registry-Auth` header: base64url JSON (docker's encoding), standard
/// base64 accepted too (as moby); an absent or empty header, or `{}`, is anonymous.
pub(super) fn registry_auth_from_header(raw: Option<&str>) -> ApiResult<Option<RegistryAuth>> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    let raw = match raw.map(str::trim) {
        None | Some("") => return Ok(None),
        Some(r) => r,
    };
    let bad = |why: String| ApiError::bad_request(format!("invalid X-Registry-Auth header: {why}"));
    let json = URL_SAFE
        .decode(raw)
        .or_else(|_| URL_SAFE_NO_PAD.decode(raw))
        .or_else(|_| STANDARD.decode(raw))
        .map_err(|e| bad(e.to_string()))?;
    let a: AuthConfig = serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))?;
    let (mut username, mut password) = (a.username, a.password);
    if username.is_empty() && !a.auth.is_empty() {
        let pair = STANDARD
            .decode(a.auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| bad("its auth is not base64 of user:password".into()))?;
        let (u, p) = pair
            .split_once(':')
            .ok_or_else(|| bad("its auth is not base64 of user:password".into()))?;
        (username, password) = (u.to_string(), p.to_string());
    }
    if username.is_empty() && a.registrytoken.is_empty() && a.identitytoken.is_empty() {
        return Ok(None);
    }
    Ok(Some(RegistryAuth {
        server: a.serveraddress,
        username,
        password,
        identity_token: a.identitytoken,
        registry_token: a.registrytoken,
    }))
}

/// docker's `registry.DistributionInspect`.
pub(super) fn distribution_json(r: &Resolved) -> Value {
    let platforms: Vec<Value> = r
        .platforms
        .iter()
        .map(|p| {
            let mut v = json!({ "architecture": p.architecture, "os": p.os });
            if !p.variant.is_empty() {
                v["variant"] = json!(p.variant);
            }
            v
        })
        .collect();
    json!({
        "Descriptor": { "mediaType": r.media_type, "digest": r.digest, "size": r.size },
        "Platforms": platforms,
    })
}

/// A registry's refusal as the CLI expects it (it then only warns).
fn resolve_error(image: &str, e: ResolveError) -> ApiError {
    match e {
        ResolveError::Reference { .. } => ApiError::bad_request(e.to_string()),
        ResolveError::Unauthorized(msg) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("{image}: the registry refused the credentials: {msg}"),
        ),
        other => ApiError::not_found(format!("{image}: {other}")),
    }
}

/// `GET /distribution/{name}/json`.
async fn inspect(
    AxumState(_ctx): AxumState<State>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let Some(image) = name.strip_suffix("/json").filter(|i| !i.is_empty()) else {
        return Err(ApiError::not_found("page not found"));
    };
    let header = headers
        .get("X-Registry-Auth")
        .map(|v| v.to_str())
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid X-Registry-Auth header: not ASCII"))?;
    let auth = registry_auth_from_header(header)?;
    if auth.as_ref().is_some_and(|a| {
        a.username.is_empty() && a.registry_token.is_empty() && !a.identity_token.is_empty()
    }) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "X-Registry-Auth: Shoal cannot exchange identity tokens; log in with a user name \
             and password or a registry token",
        ));
    }
    tracing::debug!(%image, "docker api: distribution inspect");
    let resolved = resolve::resolve(image, auth.as_ref(), &[])
        .await
        .map_err(|e| resolve_error(image, e))?;
    Ok(Json(distribution_json(&resolved)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::resolve::Platform;

    fn b64url(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE.encode(s)
    }

    #[test]
    fn registry_auth_headers_decode_in_every_spelling() {
        let json = r#"{"username":"u","password":"p?>","serveraddress":"reg:5000"}"#;
        for raw in [
            b64url(json),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json),
            base64::engine::general_purpose::STANDARD.encode(json),
        ] {
            let a = registry_auth_from_header(Some(&raw))
                .expect("decodes")
                .expect("credentials");
            assert_eq!(a.username, "u");
            assert_eq!(a.password, "p?>");
            assert_eq!(a.server, "reg:5000");
        }
        // The config file's `auth` form.
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        let a = registry_auth_from_header(Some(&b64url(&format!(r#"{{"auth":"{auth}"}}"#))))
            .expect("decodes")
            .expect("credentials");
        assert_eq!(
            (a.username.as_str(), a.password.as_str()),
            ("alice", "s3cr:et")
        );
        let a = registry_auth_from_header(Some(&b64url(r#"{"registrytoken":"tok"}"#)))
            .expect("decodes")
            .expect("credentials");
        assert_eq!(a.registry_token, "tok");
        // Anonymous: no header, an empty one, `{}` (what the CLI sends without credentials).
        assert_eq!(registry_auth_from_header(None).ok(), Some(None));
        assert_eq!(registry_auth_from_header(Some("")).ok(), Some(None));
        assert_eq!(
            registry_auth_from_header(Some(&b64url("{}"))).ok(),
            Some(None)
        );
        let e = registry_auth_from_header(Some("!!!")).expect_err("not base64");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_answer_has_dockers_shape() {
        let v = distribution_json(&Resolved {
            digest: "sha256:abc".into(),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            size: 1234,
            platforms: vec![
                Platform {
                    architecture: "amd64".into(),
                    os: "linux".into(),
                    variant: String::new(),
                },
                Platform {
                    architecture: "arm64".into(),
                    os: "linux".into(),
                    variant: "v8".into(),
                },
            ],
        });
        assert_eq!(v["Descriptor"]["digest"], "sha256:abc");
        assert_eq!(v["Descriptor"]["size"], 1234);
        assert_eq!(
            v["Descriptor"]["mediaType"],
            "application/vnd.oci.image.index.v1+json"
        );
        assert_eq!(
            v["Platforms"][0],
            json!({"architecture": "amd64", "os": "linux"})
        );
        assert_eq!(v["Platforms"][1]["variant"], "v8");
    }

    #[test]
    fn registry_failures_map_to_what_the_cli_expects() {
        let e = resolve_error("x", ResolveError::Unauthorized("no".into()));
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let e = resolve_error("x", ResolveError::Registry("connection refused".into()));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert!(e.message.contains("connection refused"));
    }
}
