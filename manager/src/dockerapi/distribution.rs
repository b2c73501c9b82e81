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

    /// A registry of two images behind HTTP basic authentication (alice:pw), on loopback.
    async fn fake_registry() -> String {
        use axum::http::{header, HeaderValue, Request};
        use axum::response::{IntoResponse, Response};
        use sha2::{Digest as _, Sha256};

        fn digest(b: &[u8]) -> String {
            format!("sha256:{}", hex::encode(Sha256::digest(b)))
        }
        let config =
            br#"{"architecture":"arm64","os":"linux","variant":"v8","rootfs":{}}"#.to_vec();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":{}}},"layers":[]}}"#,
            digest(&config),
            config.len()
        )
        .into_bytes();
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1,"platform":{"architecture":"amd64","os":"linux"}}]}"#.to_vec();
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:pw")
        );
        let serve = move |req: Request<axum::body::Body>| {
            let (config, manifest, index, want) = (
                config.clone(),
                manifest.clone(),
                index.clone(),
                want.clone(),
            );
            async move {
                let authorized = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .is_some_and(|v| v.as_bytes() == want.as_bytes());
                if !authorized {
                    let mut r = (StatusCode::UNAUTHORIZED, "{}").into_response();
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"test\""),
                    );
                    return r;
                }
                let path = req.uri().path().to_string();
                let body: Option<Vec<u8>> = match path.as_str() {
                    "/v2/" => Some(b"{}".to_vec()),
                    "/v2/x/manifests/1" => Some(manifest),
                    "/v2/x/manifests/2" => Some(index),
                    p if p == format!("/v2/x/blobs/{}", digest(&config)) => Some(config),
                    _ => None,
                };
                match body {
                    None => (StatusCode::NOT_FOUND, "{}").into_response(),
                    Some(b) => {
                        let mut r: Response = b.clone().into_response();
                        if let Ok(v) = HeaderValue::from_str(&digest(&b)) {
                            r.headers_mut().insert("Docker-Content-Digest", v);
                        }
                        r
                    }
                }
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, Router::new().fallback(serve)).await;
        });
        addr.to_string()
    }

    #[tokio::test]
    async fn a_registry_is_asked_with_the_headers_credentials() {
        use axum::body::Body;
        use axum::http::Request;
        use http_body_util::BodyExt as _;
        use shoal_proto::v1::cluster_admin_client::ClusterAdminClient;
        use shoal_proto::v1::control_client::ControlClient;
        use tower::ServiceExt as _;

        let reg = fake_registry().await;
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let app = routes().with_state(std::sync::Arc::new(super::super::Ctx {
            control: ControlClient::new(channel.clone()),
            cluster: ClusterAdminClient::new(channel),
            node_id: "m1".into(),
            advertise_addr: "127.0.0.1:4242".into(),
            leadership: tokio::sync::watch::channel(true).1,
        }));
        let auth = b64url(r#"{"username":"alice","password":"pw"}"#);
        let call = |tag: &str, auth: Option<&str>| {
            let mut req = Request::get(format!("/distribution/{reg}/x:{tag}/json"));
            if let Some(a) = auth {
                req = req.header("X-Registry-Auth", a);
            }
            let req = req.body(Body::empty()).expect("a request");
            let app = app.clone();
            async move {
                let resp = app.oneshot(req).await.expect("infallible");
                let status = resp.status();
                let body = resp.into_body().collect().await.expect("a body").to_bytes();
                (
                    status,
                    serde_json::from_slice::<Value>(&body).expect("JSON"),
                )
            }
        };
        let (status, v) = call("1", Some(&auth)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert!(v["Descriptor"]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")));
        assert_eq!(
            v["Descriptor"]["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(
            v["Platforms"],
            json!([{"architecture": "arm64", "os": "linux", "variant": "v8"}])
        );
        let (status, v) = call("2", Some(&auth)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(
            v["Platforms"],
            json!([{"architecture": "amd64", "os": "linux"}])
        );
        // Without credentials the registry refuses: a 401 the CLI turns into a warning.
        let (status, v) = call("1", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
        let (status, v) = call("3", Some(&auth)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    }
}
