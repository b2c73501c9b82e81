//! The few fields of manifests, indexes and image configs that the agent needs.
//!
//! Own minimal types rather than oci-spec's: docker's v2 schema 2 documents and OCI ones share these
//! fields, and ignoring the rest keeps parsing tolerant of what real registries serve.

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{ImageConfig, ImageError, ImageHealthcheck};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Media types accepted when fetching a manifest.
pub const ACCEPTED_MANIFESTS: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// A content descriptor (config or layer).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced blob.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:<hex>` of the blob.
    pub digest: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: i64,
}

/// Platform of an index entry.
#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    /// e.g. `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// e.g. `linux`.
    #[serde(default)]
    pub os: String,
}

/// An entry of an image index / manifest list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    /// Media type of the referenced manifest.
    #[serde(default)]
    pub media_type: String,
    /// Digest of the referenced manifest.
    pub digest: String,
    /// Platform it is built for.
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Annotations (OCI layouts name images with them).
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// Either an image manifest or an index, told apart by `mediaType` or by which fields are present.
#[derive(Debug, Clone)]
pub enum Document {
    /// A single-platform image manifest.
    Manifest(Manifest),
    /// A multi-platform index / manifest list.
    Index(Vec<IndexEntry>),
}

/// A single-platform image manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// The image config blob.
    pub config: Descriptor,
    /// Layer blobs, lowest first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// Parses a manifest or index document.
pub fn parse_document(bytes: &[u8], what: &str) -> Result<Document, ImageError> {
    let malformed = |reason: String| ImageError::Malformed {
        what: what.to_string(),
        reason,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    if let Some(v) = probe.schema_version {
        if v != 2 {
            return Err(malformed(format!("unsupported schemaVersion {v}")));
        }
    }
    let is_index =
        matches!(
            probe.media_type.as_deref(),
            Some(OCI_INDEX | DOCKER_MANIFEST_LIST)
        ) || (probe.media_type.is_none() && probe.manifests.is_some() && probe.config.is_none());
    if is_index {
        return probe
            .manifests
            .map(Document::Index)
            .ok_or_else(|| malformed("index without manifests".into()));
    }
    if let Some(mt) = probe.media_type.as_deref() {
        if mt != OCI_MANIFEST && mt != DOCKER_MANIFEST {
            return Err(malformed(format!("unsupported media type {mt}")));
        }
    }
    let config = probe
        .config
        .ok_or_else(|| malformed("manifest without config".into()))?;
    for d in std::iter::once(&config).chain(probe.layers.iter().flatten()) {
        super::reference::validate_digest(&d.digest).map_err(malformed)?;
    }
    Ok(Document::Manifest(Manifest {
        config,
        layers: probe.layers.unwrap_or_default(),
    }))
}

/// Picks the linux/amd64 entry of an index, as docker does on this platform.
pub fn pick_linux_amd64(entries: &[IndexEntry]) -> Option<&IndexEntry> {
    entries.iter().find(|e| {
        e.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    healthcheck: Option<Healthcheck>,
}

/// docker's `config.Healthcheck` (oci-spec's ImageConfiguration does not model it).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Healthcheck {
    #[serde(default)]
    test: Option<Vec<String>>,
    #[serde(default)]
    interval: Option<i64>,
    #[serde(default)]
    timeout: Option<i64>,
    #[serde(default)]
    start_period: Option<i64>,
    #[serde(default)]
    start_interval: Option<i64>,
    #[serde(default)]
    retries: Option<i32>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ContainerConfig>,
    rootfs: RootFs,
}

/// Parses an image config into the run settings and the layers' uncompressed digests (lowest first).
pub fn parse_config(bytes: &[u8]) -> Result<(ImageConfig, Vec<String>), ImageError> {
    let malformed = |reason: String| ImageError::Malformed {
        what: "image config".to_string(),
        reason,
    };
    let file: ConfigFile = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    for d in &file.rootfs.diff_ids {
        super::reference::validate_digest(d).map_err(malformed)?;
    }
    let c = file.config.unwrap_or_default();
    Ok((
        ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
            healthcheck: c.healthcheck.map(|h| ImageHealthcheck {
                test: h.test.unwrap_or_default(),
                interval_ns: h.interval.unwrap_or_default(),
                timeout_ns: h.timeout.unwrap_or_default(),
                start_period_ns: h.start_period.unwrap_or_default(),
                start_interval_ns: h.start_interval.unwrap_or_default(),
                retries: h.retries.unwrap_or_default(),
            }),
        },
        file.rootfs.diff_ids,
    ))
}

/// `sha256:<hex>` of a byte string.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Fails with `DigestMismatch` unless `bytes` hash to `expected`.
pub fn verify(what: &str, bytes: &[u8], expected: &str) -> Result<(), ImageError> {
    let actual = sha256_digest(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(ImageError::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_and_index_are_told_apart() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"digest":"{d}","size":1}},"layers":[{{"digest":"{d}"}}]}}"#
        );
        assert!(
            matches!(parse_document(m.as_bytes(), "m"), Ok(Document::Manifest(m)) if m.layers.len() == 1)
        );
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{d}","platform":{{"os":"linux","architecture":"arm64"}}}},{{"digest":"{d}","platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        match parse_document(i.as_bytes(), "i") {
            Ok(Document::Index(entries)) => {
                let picked = pick_linux_amd64(&entries).map(|e| e.platform.clone());
                assert!(matches!(picked, Some(Some(p)) if p.architecture == "amd64"));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_document(b"{\"schemaVersion\":1}", "x").is_err());
    }

    #[test]
    fn config_with_nulls_parses() {
        let c = br#"{"architecture":"amd64","config":{"Env":["A=1"],"Cmd":["sh"],"Entrypoint":null,"WorkingDir":""},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let (cfg, diff_ids) = parse_config(c).expect("config");
        assert_eq!(cfg.cmd, vec!["sh"]);
        assert!(cfg.entrypoint.is_empty());
        assert!(diff_ids.is_empty());
    }

    #[test]
    fn the_images_healthcheck_is_carried() {
        let c = br#"{"config":{"Cmd":["sh"],"Healthcheck":{"Test":["CMD-SHELL","wget -q localhost"],"Interval":2000000000,"Retries":4,"StartPeriod":null}},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let (cfg, _) = parse_config(c).expect("config");
        assert_eq!(
            cfg.healthcheck,
            Some(ImageHealthcheck {
                test: vec!["CMD-SHELL".into(), "wget -q localhost".into()],
                interval_ns: 2_000_000_000,
                retries: 4,
                ..Default::default()
            })
        );
        let (cfg, _) =
            parse_config(br#"{"config":{"Cmd":["sh"]},"rootfs":{"diff_ids":[]}}"#).expect("config");
        assert_eq!(cfg.healthcheck, None);
    }

    #[test]
    fn verify_rejects_wrong_bytes() {
        let good = sha256_digest(b"hello");
        assert!(verify("blob", b"hello", &good).is_ok());
        assert!(matches!(
            verify("blob", b"hellO", &good),
            Err(ImageError::DigestMismatch { .. })
        ));
    }
}
