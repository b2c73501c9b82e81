//! Asking a registry what an image reference points at now: its digest (shoalctl's
//! `--resolve-image` pins services to it) and its descriptor and platforms (the Docker API's
//! `GET /distribution/{name}/json`, which `docker service create` and `stack deploy` call). One
//! implementation for shoalctl and the manager: the same reference parsing, the same choice of
//! plain HTTP (loopback and insecure registries, as docker) and the same credentials.

use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth as OciAuth;
use oci_client::{Client, Reference};

use crate::v1::RegistryAuth;

/// How long one question to a registry may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// The manifest media types asked for, most specific last (an index wins when there is one).
const ACCEPTED: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Why a registry could not say what an image is.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The image name is not a valid reference.
    #[error("invalid reference {image:?}: {source}")]
    Reference {
        /// The name as given.
        image: String,
        /// Why it does not parse.
        source: oci_client::ParseError,
    },
    /// The registry did not answer in time.
    #[error("the registry did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The registry refused the credentials (or wants some).
    #[error("{0}")]
    Unauthorized(String),
    /// The registry answered with an error, or could not be reached.
    #[error("{0}")]
    Registry(String),
    /// The registry's manifest is not what the distribution spec says.
    #[error("the registry's manifest for {image} is malformed: {why}")]
    Malformed {
        /// The image asked about.
        image: String,
        /// What is wrong with it.
        why: String,
    },
}

impl From<OciDistributionError> for ResolveError {
    fn from(e: OciDistributionError) -> ResolveError {
        match e {
            OciDistributionError::AuthenticationFailure(_)
            | OciDistributionError::UnauthorizedError { .. } => {
                ResolveError::Unauthorized(e.to_string())
            }
            OciDistributionError::ServerError { code: 401, .. } => {
                ResolveError::Unauthorized(e.to_string())
            }
            other => ResolveError::Registry(other.to_string()),
        }
    }
}

/// One platform an image is built for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Platform {
    /// GOARCH spelling: "amd64", "arm64".
    pub architecture: String,
    /// "linux".
    pub os: String,
    /// "v8"; empty when the registry gives none.
    pub variant: String,
}

/// What a registry serves for an image reference now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// "sha256:…" of the manifest (or index) the reference points at.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// The platforms it has images for.
    pub platforms: Vec<Platform>,
}

/// Whether `registry` is asked over plain HTTP: loopback registries (docker treats them as
/// insecure) and the ones listed as insecure.
pub fn plain_http(registry: &str, insecure: &[String]) -> bool {
    crate::registry::is_loopback(registry) || insecure.iter().any(|i| i == registry)
}

/// oci-client's credentials for a docker AuthConfig. Identity (OAuth refresh) tokens are not
/// exchanged: such credentials ask anonymously.
pub fn oci_auth(auth: Option<&RegistryAuth>) -> OciAuth {
    match auth {
        Some(a) if !a.registry_token.is_empty() => OciAuth::Bearer(a.registry_token.clone()),
        Some(a) if !a.username.is_empty() => OciAuth::Basic(a.username.clone(), a.password.clone()),
        _ => OciAuth::Anonymous,
    }
}

/// A client for `image`'s registry, and the parsed reference.
fn client_for(image: &str, insecure: &[String]) -> Result<(Client, Reference), ResolveError> {
    let reference: Reference = image.parse().map_err(|source| ResolveError::Reference {
        image: image.to_string(),
        source,
    })?;
    let protocol = if plain_http(reference.registry(), insecure) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    // Whichever of the process's TLS users comes first installs the provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::new(ClientConfig {
        protocol,
        ..ClientConfig::default()
    });
    Ok((client, reference))
}

async fn timed<T>(
    fut: impl std::future::Future<Output = Result<T, OciDistributionError>>,
) -> Result<T, ResolveError> {
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .map_err(|_| ResolveError::Timeout(TIMEOUT))?
        .map_err(ResolveError::from)
}

/// The digest `image`'s registry serves for it now.
pub async fn digest(
    image: &str,
    auth: Option<&RegistryAuth>,
    insecure: &[String],
) -> Result<String, ResolveError> {
    let (client, reference) = client_for(image, insecure)?;
    timed(client.fetch_manifest_digest(&reference, &oci_auth(auth))).await
}

/// The descriptor and platforms of what `image` points at now.
pub async fn resolve(
    image: &str,
    auth: Option<&RegistryAuth>,
    insecure: &[String],
) -> Result<Resolved, ResolveError> {
    let (client, reference) = client_for(image, insecure)?;
    let (raw, digest) =
        timed(client.pull_manifest_raw(&reference, &oci_auth(auth), ACCEPTED)).await?;
    let malformed = |why: String| ResolveError::Malformed {
        image: image.to_string(),
        why,
    };
    let manifest = parse_manifest(&raw).map_err(malformed)?;
    let platforms = match manifest.platforms {
        Some(p) => p,
        // A single image: its platform is in its config blob.
        None => {
            let mut config = Vec::new();
            timed(client.pull_blob(&reference, manifest.config_digest.as_str(), &mut config))
                .await?;
            vec![platform_of_config(&config).map_err(malformed)?]
        }
    };
    Ok(Resolved {
        digest,
        media_type: manifest.media_type,
        size: raw.len() as u64,
        platforms,
    })
}

/// What [`resolve`] reads of a manifest.
#[derive(Debug, PartialEq)]
struct ManifestParts {
    media_type: String,
    /// An index's platforms; None for an image manifest.
    platforms: Option<Vec<Platform>>,
    /// An image manifest's config blob.
    config_digest: String,
}

fn str_of(v: &serde_json::Value, key: &str) -> String {
    v.get(key)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn platform_of(v: &serde_json::Value) -> Platform {
    Platform {
        architecture: str_of(v, "architecture"),
        os: str_of(v, "os"),
        variant: str_of(v, "variant"),
    }
}

fn parse_manifest(raw: &[u8]) -> Result<ManifestParts, String> {
    let v: serde_json::Value = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
    let mut media_type = str_of(&v, "mediaType");
    if let Some(list) = v.get("manifests").and_then(serde_json::Value::as_array) {
        if media_type.is_empty() {
            // The OCI spec makes mediaType optional in an index.
            media_type = ACCEPTED[0].to_string();
        }
        let platforms = list
            .iter()
            .filter_map(|m| m.get("platform"))
            .map(platform_of)
            // Attestation manifests (buildx) carry "unknown/unknown": not a platform.
            .filter(|p| p.os != "unknown" && p.architecture != "unknown")
            .collect();
        return Ok(ManifestParts {
            media_type,
            platforms: Some(platforms),
            config_digest: String::new(),
        });
    }
    let config_digest = v
        .get("config")
        .map(|c| str_of(c, "digest"))
        .filter(|d| !d.is_empty())
        .ok_or("neither an index nor an image manifest with a config")?;
    if media_type.is_empty() {
        media_type = ACCEPTED[2].to_string();
    }
    Ok(ManifestParts {
        media_type,
        platforms: None,
        config_digest,
    })
}

fn platform_of_config(raw: &[u8]) -> Result<Platform, String> {
    let v: serde_json::Value = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
    Ok(platform_of(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_insecure_registries_are_asked_over_http() {
        assert!(plain_http("127.0.0.1:5000", &[]));
        assert!(plain_http("localhost:5000", &[]));
        assert!(plain_http("[::1]:5000", &[]));
        assert!(!plain_http("registry.example.com", &[]));
        assert!(plain_http("10.0.0.5:5000", &["10.0.0.5:5000".to_string()]));
    }

    #[test]
    fn credentials_map_to_oci_clients() {
        let a = RegistryAuth {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        };
        assert!(oci_auth(Some(&a)) == OciAuth::Basic("u".into(), "p".into()));
        let t = RegistryAuth {
            registry_token: "t".into(),
            ..Default::default()
        };
        assert!(oci_auth(Some(&t)) == OciAuth::Bearer("t".into()));
        assert!(oci_auth(None) == OciAuth::Anonymous);
    }

    #[test]
    fn an_index_gives_its_platforms_without_attestations() {
        let raw = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
            "manifests":[
              {"digest":"sha256:a","platform":{"architecture":"amd64","os":"linux"}},
              {"digest":"sha256:b","platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
              {"digest":"sha256:c","platform":{"architecture":"unknown","os":"unknown"}}]}"#;
        let m = parse_manifest(raw).expect("an index");
        assert_eq!(m.media_type, "application/vnd.oci.image.index.v1+json");
        let p = m.platforms.expect("platforms");
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].variant, "v8");
    }

    #[test]
    fn an_image_manifest_points_at_its_config() {
        let raw = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:cfg","size":1},
            "layers":[]}"#;
        let m = parse_manifest(raw).expect("a manifest");
        assert_eq!(m.platforms, None);
        assert_eq!(m.config_digest, "sha256:cfg");
        assert_eq!(
            platform_of_config(br#"{"architecture":"amd64","os":"linux","rootfs":{}}"#),
            Ok(Platform {
                architecture: "amd64".into(),
                os: "linux".into(),
                variant: String::new()
            })
        );
        assert!(parse_manifest(b"{}").is_err());
        assert!(parse_manifest(b"nope").is_err());
    }

    #[tokio::test]
    async fn a_registry_nobody_serves_is_an_error_not_a_hang() {
        // Nothing listens on port 1 of loopback: refused at once, over plain HTTP.
        let e = resolve("127.0.0.1:1/x:1", None, &[])
            .await
            .expect_err("nothing there");
        assert!(matches!(e, ResolveError::Registry(_)), "{e:?}");
        let e = digest("Not A Reference!", None, &[])
            .await
            .expect_err("bad reference");
        assert!(matches!(e, ResolveError::Reference { .. }), "{e:?}");
    }
}
