//! `/_ping` and `/version`: what clients call first (the CLI `HEAD /_ping` and reads its
//! `Api-Version` header; docker-py, Ansible and bollard read `/version`'s `ApiVersion`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{State, MAX_API_VERSION, MIN_API_VERSION};

/// This group's routes (unversioned paths).
pub fn routes() -> Router<State> {
    Router::new()
        .route("/_ping", get(ping).head(ping_head))
        .route("/version", get(version))
}

/// The version Shoal reports as the engine's.
const SHOAL_VERSION: &str = env!("CARGO_PKG_VERSION");

fn no_cache(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

async fn ping() -> Response {
    let mut resp = (StatusCode::OK, "OK").into_response();
    no_cache(&mut resp);
    resp
}

async fn ping_head() -> Response {
    let mut resp = StatusCode::OK.into_response();
    no_cache(&mut resp);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

/// Go's spelling of an architecture (`GOARCH`), as docker reports it.
fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The running kernel's release (`uname -r`), or "" when it cannot be read.
fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `GET /version`'s body.
fn version_body(kernel: &str) -> Value {
    let arch = go_arch(std::env::consts::ARCH);
    json!({
        "Platform": { "Name": "Shoal" },
        "Components": [{
            "Name": "Engine",
            "Version": SHOAL_VERSION,
            "Details": {
                "ApiVersion": MAX_API_VERSION.to_string(),
                "MinAPIVersion": MIN_API_VERSION.to_string(),
                "Os": "linux",
                "Arch": arch,
                "KernelVersion": kernel,
            }
        }],
        "Version": SHOAL_VERSION,
        "ApiVersion": MAX_API_VERSION.to_string(),
        "MinAPIVersion": MIN_API_VERSION.to_string(),
        // Not recorded at build time.
        "GitCommit": "",
        "GoVersion": "n/a (rust)",
        "Os": "linux",
        "Arch": arch,
        "KernelVersion": kernel,
        "BuildTime": "",
    })
}

async fn version() -> Json<Value> {
    Json(version_body(&kernel_version()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_use_gos_names() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
    }

    #[test]
    fn version_reports_the_api_window() {
        let v = version_body("6.1.0");
        assert_eq!(v["ApiVersion"], "1.45");
        assert_eq!(v["MinAPIVersion"], "1.24");
        assert_eq!(v["Components"][0]["Name"], "Engine");
        assert_eq!(v["Components"][0]["Details"]["KernelVersion"], "6.1.0");
        assert_eq!(v["Os"], "linux");
    }
}
