//! Importing `docker save` archives and OCI image-layout tars.

use std::fs;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::manifest::{self, Descriptor, Document, Manifest};
use super::store::{hash_file, ImageRecord};
use super::{normalize, Image, ImageError, ImageStore};

/// Annotation containerd and docker put on OCI layout index entries: the full image name.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation naming an index entry (a full reference or just a tag).
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One image of a `docker save` `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl ImageStore {
    /// Imports every image of a `docker save` tar or an OCI image-layout tar and records them.
    ///
    /// Tagged images are recorded under their normalized names; untagged ones under their
    /// config digest (`docker save` archives) or manifest digest (OCI layouts).
    pub fn import_archive(&self, path: &Path) -> Result<Vec<Image>, ImageError> {
        let work = self.tmp_path("import");
        fs::create_dir(work.path()).map_err(ImageError::io("create", work.path()))?;
        let file = fs::File::open(path).map_err(ImageError::io("open archive", path))?;
        // The tar crate's unpack keeps every entry inside `work`.
        tar::Archive::new(file)
            .unpack(work.path())
            .map_err(ImageError::io("extract archive", path))?;
        let dir = work.path();
        if dir.join("manifest.json").is_file() {
            self.import_docker_save(path, dir)
        } else if dir.join("index.json").is_file() {
            self.import_oci_layout(path, dir)
        } else {
            Err(ImageError::Archive {
                path: path.to_path_buf(),
                reason: "neither manifest.json (docker save) nor index.json (OCI layout) found"
                    .to_string(),
            })
        }
    }

    fn import_docker_save(&self, archive: &Path, dir: &Path) -> Result<Vec<Image>, ImageError> {
        let manifest_path = dir.join("manifest.json");
        let bytes = fs::read(&manifest_path).map_err(ImageError::io("read", &manifest_path))?;
        let entries: Vec<SaveEntry> =
            serde_json::from_slice(&bytes).map_err(|source| ImageError::Json {
                path: manifest_path.clone(),
                source,
            })?;
        let mut images = Vec::new();
        for entry in entries {
            let config_path = inside(archive, dir, &entry.config)?;
            let config_bytes =
                fs::read(&config_path).map_err(ImageError::io("read", &config_path))?;
            let config_digest = manifest::sha256_digest(&config_bytes);
            // Files named after their digest (`<hex>.json`, `blobs/sha256/<hex>`) must match it.
            if let Some(named) = digest_from_name(&entry.config) {
                manifest::verify("config", &config_bytes, &named)?;
            }
            let (config, diff_ids) = manifest::parse_config(&config_bytes)?;
            let mut layers = Vec::new();
            for layer in &entry.layers {
                let file = inside(archive, dir, layer)?;
                let digest = hash_file(&file)?;
                if let Some(named) = digest_from_name(layer) {
                    if named != digest {
                        return Err(ImageError::DigestMismatch {
                            what: format!("layer {layer}"),
                            expected: named,
                            actual: digest,
                        });
                    }
                }
                let size = fs::metadata(&file)
                    .map_err(ImageError::io("stat", &file))?
                    .len();
                layers.push((file, digest, size));
            }
            let descs: Vec<Descriptor> = layers
                .iter()
                .map(|(file, digest, size)| Descriptor {
                    media_type: layer_media_type(file),
                    digest: digest.clone(),
                    size: i64::try_from(*size).unwrap_or(i64::MAX),
                })
                .collect();
            self.install_layers(&descs, &diff_ids, |d| {
                layers
                    .iter()
                    .find(|(_, digest, _)| *digest == d.digest)
                    .map(|(file, _, _)| file.clone())
                    .ok_or_else(|| ImageError::Archive {
                        path: archive.to_path_buf(),
                        reason: format!("layer {} vanished", d.digest),
                    })
            })?;
            self.write_blob("config", &config_digest, &config_bytes)?;
            // `docker save` has no manifest: build the OCI one a registry would hold, so the image
            // gets a manifest digest like a pulled one.
            let manifest_bytes = synthesize_manifest(&config_digest, config_bytes.len(), &descs);
            let manifest_digest = manifest::sha256_digest(&manifest_bytes);
            self.write_blob("manifest", &manifest_digest, &manifest_bytes)?;
            let references = match entry.repo_tags {
                Some(tags) if !tags.is_empty() => tags
                    .iter()
                    .map(|t| normalize(t))
                    .collect::<Result<Vec<_>, _>>()?,
                _ => vec![config_digest.clone()],
            };
            for reference in references {
                images.push(self.write_record(&ImageRecord {
                    reference,
                    digest: manifest_digest.clone(),
                    manifest_digest: manifest_digest.clone(),
                    config_digest: config_digest.clone(),
                    config: config.clone(),
                    diff_ids: diff_ids.clone(),
                })?);
            }
        }
        Ok(images)
    }

    fn import_oci_layout(&self, archive: &Path, dir: &Path) -> Result<Vec<Image>, ImageError> {
        let index_path = dir.join("index.json");
        let bytes = fs::read(&index_path).map_err(ImageError::io("read", &index_path))?;
        let Document::Index(entries) = manifest::parse_document(&bytes, "index.json")? else {
            return Err(ImageError::Archive {
                path: archive.to_path_buf(),
                reason: "index.json is not an image index".to_string(),
            });
        };
        let layout_blob = |digest: &str| -> Result<PathBuf, ImageError> {
            let hex =
                digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| ImageError::UnsupportedDigest {
                        digest: digest.to_string(),
                    })?;
            inside(archive, dir, &format!("blobs/sha256/{hex}"))
        };
        let read_verified = |what: &str, digest: &str| -> Result<Vec<u8>, ImageError> {
            let path = layout_blob(digest)?;
            let bytes = fs::read(&path).map_err(ImageError::io("read", &path))?;
            manifest::verify(what, &bytes, digest)?;
            Ok(bytes)
        };
        let mut images = Vec::new();
        for entry in &entries {
            let top = read_verified("manifest", &entry.digest)?;
            let (manifest_digest, manifest_bytes) =
                match manifest::parse_document(&top, "manifest")? {
                    Document::Manifest(_) => (entry.digest.clone(), top.clone()),
                    Document::Index(platforms) => {
                        let chosen = manifest::pick_linux_amd64(&platforms).ok_or_else(|| {
                            ImageError::NoMatchingPlatform {
                                reference: entry.digest.clone(),
                            }
                        })?;
                        self.write_blob("index", &entry.digest, &top)?;
                        (
                            chosen.digest.clone(),
                            read_verified("platform manifest", &chosen.digest)?,
                        )
                    }
                };
            let Document::Manifest(Manifest {
                config: config_desc,
                layers,
            }) = manifest::parse_document(&manifest_bytes, "platform manifest")?
            else {
                return Err(ImageError::Malformed {
                    what: "platform manifest".to_string(),
                    reason: "an index nested in an index".to_string(),
                });
            };
            let config_bytes = read_verified("config", &config_desc.digest)?;
            let (config, diff_ids) = manifest::parse_config(&config_bytes)?;
            self.install_layers(&layers, &diff_ids, |d| {
                let path = layout_blob(&d.digest)?;
                let actual = hash_file(&path)?;
                if actual != d.digest {
                    return Err(ImageError::DigestMismatch {
                        what: format!("layer {}", d.digest),
                        expected: d.digest.clone(),
                        actual,
                    });
                }
                Ok(path)
            })?;
            self.write_blob("config", &config_desc.digest, &config_bytes)?;
            self.write_blob("manifest", &manifest_digest, &manifest_bytes)?;
            self.write_blob("manifest", &entry.digest, &top)?;
            let reference = match oci_layout_name(entry) {
                Some(name) => normalize(&name)?,
                None => entry.digest.clone(),
            };
            images.push(self.write_record(&ImageRecord {
                reference,
                digest: entry.digest.clone(),
                manifest_digest,
                config_digest: config_desc.digest.clone(),
                config,
                diff_ids,
            })?);
        }
        Ok(images)
    }
}

/// The name of an OCI layout entry: containerd's full name, else `ref.name` when it is a full
/// reference (a bare tag like `latest` names no repository).
fn oci_layout_name(entry: &manifest::IndexEntry) -> Option<String> {
    if let Some(name) = entry.annotations.get(CONTAINERD_NAME) {
        return Some(name.clone());
    }
    entry
        .annotations
        .get(OCI_REF_NAME)
        .filter(|n| n.contains('/') || n.contains(':'))
        .cloned()
}

/// Joins an archive-relative path to `dir`, refusing absolute paths and `..`.
fn inside(archive: &Path, dir: &Path, rel: &str) -> Result<PathBuf, ImageError> {
    let p = Path::new(rel);
    if p.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        Ok(dir.join(p))
    } else {
        Err(ImageError::Archive {
            path: archive.to_path_buf(),
            reason: format!("path {rel:?} leaves the archive"),
        })
    }
}

/// `sha256:<hex>` when the file name is a digest (`<hex>.json`, `blobs/sha256/<hex>`, `<hex>.tar`).
fn digest_from_name(rel: &str) -> Option<String> {
    let name = Path::new(rel).file_name()?.to_str()?;
    let stem = name.split('.').next()?;
    let digest = format!("sha256:{stem}");
    super::reference::validate_digest(&digest)
        .ok()
        .map(|()| digest)
}

fn layer_media_type(file: &Path) -> String {
    let mut magic = [0u8; 2];
    let gz = fs::File::open(file)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && magic == [0x1f, 0x8b];
    if gz {
        "application/vnd.oci.image.layer.v1.tar+gzip".to_string()
    } else {
        "application/vnd.oci.image.layer.v1.tar".to_string()
    }
}

fn synthesize_manifest(config_digest: &str, config_size: usize, layers: &[Descriptor]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|d| serde_json::json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size}))
        .collect();
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": layers,
    });
    // serde_json's maps are sorted, so the bytes (and the digest) are stable.
    doc.to_string().into_bytes()
}
