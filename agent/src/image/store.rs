//! The on-disk store: blobs, unpacked layers and image records.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::auth::RegistryMirror;
use super::manifest::{self, Descriptor};
use super::unpack::{open_layer, unpack_layer};
use super::{reference, Image, ImageConfig, ImageError};

/// Content-addressed blob store, unpacked layers and image records under one root directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    /// Docker Hub mirrors pulls try first, in order (shared: the store is cloned per blocking call).
    mirrors: Arc<[RegistryMirror]>,
}

/// What an image record file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    pub reference: String,
    /// Digest the reference resolved to (index or manifest).
    pub digest: String,
    /// Digest of the linux/amd64 image manifest (same as `digest` without an index).
    pub manifest_digest: String,
    pub config_digest: String,
    pub config: ImageConfig,
    /// Uncompressed layer digests, lowest first; name the directories under `layers/`.
    pub diff_ids: Vec<String>,
}

/// A path in `tmp/` that is removed on drop unless kept.
pub(crate) struct TmpPath(Option<PathBuf>);

impl TmpPath {
    pub fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    /// Stops the guard from removing the path (it was renamed into place).
    pub fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TmpPath {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
                Ok(_) => fs::remove_file(&p),
                Err(_) => Ok(()),
            };
        }
    }
}

impl ImageStore {
    /// The same store, pulling Docker Hub images through `mirrors` first (`--registry-mirror`).
    pub fn with_registry_mirrors(mut self, mirrors: Vec<RegistryMirror>) -> ImageStore {
        self.mirrors = Arc::from(mirrors);
        self
    }

    /// The Docker Hub mirrors, in the order they are tried.
    pub fn registry_mirrors(&self) -> &[RegistryMirror] {
        &self.mirrors
    }

    /// Opens (creating if needed) a store under `root` and clears leftovers of interrupted work.
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        let store = ImageStore {
            root: root.to_path_buf(),
            mirrors: Arc::from(Vec::new()),
        };
        let tmp = store.root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(ImageError::io("clear", &tmp))?;
        }
        for dir in [
            root.join("blobs/sha256"),
            root.join("layers"),
            root.join("images"),
            tmp,
        ] {
            fs::create_dir_all(&dir).map_err(ImageError::io("create", &dir))?;
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob named `digest` lives (whether or not it is present).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    /// Where the layer with uncompressed digest `diff_id` is unpacked (whether or not it is).
    pub fn layer_path(&self, diff_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("layers").join(digest_hex(diff_id)?))
    }

    /// True when the blob is already stored (and so was verified when it was written).
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    pub(crate) fn tmp_path(&self, what: &str) -> TmpPath {
        TmpPath(Some(
            self.root
                .join("tmp")
                .join(format!("{what}-{:016x}", rand::random::<u64>())),
        ))
    }

    /// Reads a stored blob.
    pub(crate) fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest)?;
        fs::read(&path).map_err(ImageError::io("read blob", path))
    }

    /// Verifies `bytes` against `digest` and stores them atomically.
    pub(crate) fn write_blob(
        &self,
        what: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(), ImageError> {
        manifest::verify(what, bytes, digest)?;
        let dest = self.blob_path(digest)?;
        if dest.is_file() {
            return Ok(());
        }
        let tmp = self.tmp_path("blob");
        fs::write(tmp.path(), bytes).map_err(ImageError::io("write blob", tmp.path()))?;
        fs::rename(tmp.path(), &dest).map_err(ImageError::io("store blob", &dest))?;
        tmp.keep();
        Ok(())
    }

    /// Verifies the file at `tmp` against `digest` and moves it into the blob store.
    pub(crate) fn commit_blob_file(
        &self,
        what: &str,
        digest: &str,
        tmp: TmpPath,
    ) -> Result<PathBuf, ImageError> {
        let actual = hash_file(tmp.path())?;
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: what.to_string(),
                expected: digest.to_string(),
                actual,
            });
        }
        let dest = self.blob_path(digest)?;
        fs::rename(tmp.path(), &dest).map_err(ImageError::io("store blob", &dest))?;
        tmp.keep();
        Ok(dest)
    }

    /// Unpacks the layer blob at `blob` unless `diff_id` is already unpacked; checks the diff id.
    pub(crate) fn ensure_layer(
        &self,
        diff_id: &str,
        blob: &Path,
        blob_digest: &str,
    ) -> Result<PathBuf, ImageError> {
        let dest = self.layer_path(diff_id)?;
        if dest.is_dir() {
            return Ok(dest);
        }
        let tmp = self.tmp_path("layer");
        fs::create_dir(tmp.path()).map_err(ImageError::io("create", tmp.path()))?;
        let reader = open_layer(blob, blob_digest)?;
        let actual = unpack_layer(reader, tmp.path())?;
        if actual != diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("uncompressed layer {blob_digest}"),
                expected: diff_id.to_string(),
                actual,
            });
        }
        match fs::rename(tmp.path(), &dest) {
            Ok(()) => tmp.keep(),
            // Another pull unpacked the same layer meanwhile: theirs is as good; ours is dropped.
            Err(_) if dest.is_dir() => {}
            Err(e) => return Err(ImageError::io("store layer", &dest)(e)),
        }
        Ok(dest)
    }

    /// Unpacks the layers of a manifest (blobs found by `blob_of`), checking them against the config.
    pub(crate) fn install_layers(
        &self,
        layers: &[Descriptor],
        diff_ids: &[String],
        blob_of: impl Fn(&Descriptor) -> Result<PathBuf, ImageError>,
    ) -> Result<(), ImageError> {
        check_layer_count(layers, diff_ids)?;
        for (desc, diff_id) in layers.iter().zip(diff_ids) {
            if self.layer_path(diff_id)?.is_dir() {
                continue;
            }
            let blob = blob_of(desc)?;
            self.ensure_layer(diff_id, &blob, &desc.digest)?;
        }
        Ok(())
    }

    /// Writes the record of an image atomically and returns the image.
    pub(crate) fn write_record(&self, record: &ImageRecord) -> Result<Image, ImageError> {
        let path = self.record_path(&record.reference);
        let json = serde_json::to_vec_pretty(record).map_err(|source| ImageError::Json {
            path: path.clone(),
            source,
        })?;
        let tmp = self.tmp_path("record");
        fs::write(tmp.path(), json).map_err(ImageError::io("write record", tmp.path()))?;
        fs::rename(tmp.path(), &path).map_err(ImageError::io("store record", &path))?;
        tmp.keep();
        self.image_of(record.clone())
    }

    /// The local image a reference names, if it was pulled or imported and all its layers are here.
    pub fn get(&self, reference: &str) -> Result<Option<Image>, ImageError> {
        let key = if reference::validate_digest(reference).is_ok() {
            reference.to_string()
        } else {
            reference::normalize(reference)?
        };
        let path = self.record_path(&key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ImageError::io("read record", path)(e)),
        };
        let record: ImageRecord =
            serde_json::from_slice(&bytes).map_err(|source| ImageError::Json {
                path: path.clone(),
                source,
            })?;
        let image = self.image_of(record)?;
        Ok(image.layers.iter().all(|l| l.is_dir()).then_some(image))
    }

    fn image_of(&self, record: ImageRecord) -> Result<Image, ImageError> {
        let layers = record
            .diff_ids
            .iter()
            .map(|d| self.layer_path(d))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Image {
            reference: record.reference,
            digest: record.digest,
            config: record.config,
            layers,
        })
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{}.json", escape(key)))
    }
}

pub(crate) fn check_layer_count(
    layers: &[Descriptor],
    diff_ids: &[String],
) -> Result<(), ImageError> {
    if layers.len() == diff_ids.len() {
        Ok(())
    } else {
        Err(ImageError::Malformed {
            what: "image".to_string(),
            reason: format!(
                "manifest has {} layers but config has {} diff ids",
                layers.len(),
                diff_ids.len()
            ),
        })
    }
}

/// The hex part of a `sha256:<hex>` digest, refusing anything else (it becomes a file name).
fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    reference::validate_digest(digest).map_err(|_| ImageError::UnsupportedDigest {
        digest: digest.to_string(),
    })?;
    Ok(&digest["sha256:".len()..])
}

/// `sha256:<hex>` of a file's content.
pub(crate) fn hash_file(path: &Path) -> Result<String, ImageError> {
    let mut file = fs::File::open(path).map_err(ImageError::io("open", path))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(ImageError::io("read", path))?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// Reversible file name for a reference: `[A-Za-z0-9.-]` kept, the rest `%XX`; hashed when too long.
fn escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > 200 {
        format!("long-{}", hex::encode(Sha256::digest(key.as_bytes())))
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_is_safe_and_distinct() {
        assert_eq!(
            escape("docker.io/library/busybox:latest"),
            "docker.io%2Flibrary%2Fbusybox%3Alatest"
        );
        assert_ne!(escape("a/b_c"), escape("a_b/c"));
        assert!(escape(&"x".repeat(400)).starts_with("long-"));
    }

    #[test]
    fn blobs_are_verified_before_storing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(tmp.path()).expect("open");
        let good = manifest::sha256_digest(b"config");
        assert!(matches!(
            store.write_blob("config", &good, b"other"),
            Err(ImageError::DigestMismatch { .. })
        ));
        assert!(!store.has_blob(&good));
        store.write_blob("config", &good, b"config").expect("write");
        assert!(store.has_blob(&good));
        assert!(matches!(
            store.blob_path("sha256:../../x"),
            Err(ImageError::UnsupportedDigest { .. })
        ));
        assert_eq!(
            fs::read_dir(tmp.path().join("tmp")).expect("tmp").count(),
            0
        );
    }

    #[test]
    fn layer_with_wrong_diff_id_is_not_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(tmp.path()).expect("open");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "f", &b"x"[..]).expect("append");
        let tar = b.into_inner().expect("tar");
        let digest = manifest::sha256_digest(&tar);
        store.write_blob("layer", &digest, &tar).expect("blob");
        let blob = store.blob_path(&digest).expect("path");
        let wrong = manifest::sha256_digest(b"nope");
        let res = store.ensure_layer(&wrong, &blob, &digest);
        assert!(
            matches!(res, Err(ImageError::DigestMismatch { .. })),
            "{res:?}"
        );
        assert!(!store.layer_path(&wrong).expect("path").exists());
        let dir = store.ensure_layer(&digest, &blob, &digest).expect("unpack");
        assert_eq!(fs::read(dir.join("f")).expect("f"), b"x");
        assert_eq!(
            fs::read_dir(tmp.path().join("tmp")).expect("tmp").count(),
            0
        );
    }
}
