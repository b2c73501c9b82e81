//! Pulling an image from an OCI distribution registry.

use oci_client::client::{ClientConfig, ClientProtocol, LayerDescriptor};
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::manifest::{self, Document, Manifest, ACCEPTED_MANIFESTS};
use super::store::{check_layer_count, ImageRecord};
use super::{Image, ImageError, ImageRef, ImageStore};

impl ImageStore {
    /// Pulls `reference` (anonymously) unless its layers are already here, verifying every digest.
    ///
    /// Registries on loopback and those listed in `insecure` (`host:port`) are spoken to over
    /// plain HTTP; all others over HTTPS. Nothing is recorded unless every blob checked out.
    pub async fn pull(&self, reference: &str, insecure: &[String]) -> Result<Image, ImageError> {
        let image_ref = ImageRef::parse(reference)?;
        let normalized = image_ref.to_string();
        let oci_ref: Reference = normalized
            .parse()
            .map_err(|e| ImageError::InvalidReference {
                reference: reference.to_string(),
                reason: format!("{e}"),
            })?;
        let client = client_for(&image_ref, &oci_ref, insecure);
        let fail = |what: &str| {
            let what = what.to_string();
            let reference = normalized.clone();
            move |e: OciDistributionError| registry_error(&reference, &what, e)
        };

        // The top-level document: an image manifest or an index.
        let (bytes, reported) = client
            .pull_manifest_raw(&oci_ref, &RegistryAuth::Anonymous, ACCEPTED_MANIFESTS)
            .await
            .map_err(fail("manifest"))?;
        let digest = manifest::sha256_digest(&bytes);
        for expected in image_ref.digest.iter().chain(std::iter::once(&reported)) {
            if *expected != digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("manifest of {normalized}"),
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        let (manifest_digest, manifest) = match manifest::parse_document(&bytes, "manifest")? {
            Document::Manifest(m) => {
                self.write_blob("manifest", &digest, &bytes)?;
                (digest.clone(), m)
            }
            Document::Index(entries) => {
                let entry = manifest::pick_linux_amd64(&entries).ok_or_else(|| {
                    ImageError::NoMatchingPlatform {
                        reference: normalized.clone(),
                    }
                })?;
                let sub = self
                    .fetch_manifest(&client, &oci_ref, &entry.digest, &normalized)
                    .await?;
                self.write_blob("index", &digest, &bytes)?;
                (entry.digest.clone(), sub)
            }
        };

        // The config: the run settings and the layers' uncompressed digests.
        let config_digest = manifest.config.digest.clone();
        let config_bytes = if self.has_blob(&config_digest) {
            self.read_blob(&config_digest)?
        } else {
            let mut buf = Vec::new();
            client
                .pull_blob(&oci_ref, &descriptor(&config_digest), &mut buf)
                .await
                .map_err(fail("config"))?;
            self.write_blob("config", &config_digest, &buf)?;
            buf
        };
        let (config, diff_ids) = manifest::parse_config(&config_bytes)?;
        check_layer_count(&manifest.layers, &diff_ids)?;

        // Layers: download what is neither unpacked nor stored, then unpack once.
        for (desc, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            if self.layer_path(diff_id)?.is_dir() {
                continue;
            }
            if !self.has_blob(&desc.digest) {
                let tmp = self.tmp_path("download");
                let mut file = tokio::fs::File::create(tmp.path())
                    .await
                    .map_err(ImageError::io("create", tmp.path()))?;
                client
                    .pull_blob(&oci_ref, &descriptor(&desc.digest), &mut file)
                    .await
                    .map_err(fail(&format!("layer {}", desc.digest)))?;
                drop(file);
                let store = self.clone();
                let digest = desc.digest.clone();
                blocking(move || store.commit_blob_file(&format!("layer {digest}"), &digest, tmp))
                    .await?;
            }
            let store = self.clone();
            let (diff_id, digest) = (diff_id.clone(), desc.digest.clone());
            blocking(move || {
                let blob = store.blob_path(&digest)?;
                store.ensure_layer(&diff_id, &blob, &digest)
            })
            .await?;
        }

        self.write_record(&ImageRecord {
            reference: normalized,
            digest,
            manifest_digest,
            config_digest,
            config,
            diff_ids,
        })
    }

    /// Fetches a platform manifest by digest, verifies and stores it.
    async fn fetch_manifest(
        &self,
        client: &Client,
        oci_ref: &Reference,
        digest: &str,
        normalized: &str,
    ) -> Result<Manifest, ImageError> {
        let by_digest = Reference::with_digest(
            oci_ref.registry().to_string(),
            oci_ref.repository().to_string(),
            digest.to_string(),
        );
        let (bytes, _) = client
            .pull_manifest_raw(&by_digest, &RegistryAuth::Anonymous, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| registry_error(normalized, "platform manifest", e))?;
        self.write_blob("platform manifest", digest, &bytes)?;
        match manifest::parse_document(&bytes, "platform manifest")? {
            Document::Manifest(m) => Ok(m),
            Document::Index(_) => Err(ImageError::Malformed {
                what: "platform manifest".to_string(),
                reason: "an index nested in an index".to_string(),
            }),
        }
    }
}

/// An anonymous client speaking plain HTTP to loopback and `insecure` registries only.
fn client_for(image_ref: &ImageRef, oci_ref: &Reference, insecure: &[String]) -> Client {
    // Several users may race to install it; a second install fails harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut plain_http: Vec<String> = insecure.to_vec();
    if image_ref.is_loopback_registry() {
        plain_http.push(image_ref.registry.clone());
        plain_http.push(oci_ref.resolve_registry().to_string());
    }
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain_http),
        platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
        ..Default::default()
    })
}

fn descriptor(digest: &str) -> LayerDescriptor<'_> {
    LayerDescriptor {
        digest,
        urls: &None,
    }
}

/// Maps the client's errors, turning its digest check failures into ours.
fn registry_error(reference: &str, what: &str, e: OciDistributionError) -> ImageError {
    match e {
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            ImageError::DigestMismatch {
                what: what.to_string(),
                expected,
                actual,
            }
        }
        other => ImageError::Registry {
            reference: reference.to_string(),
            what: what.to_string(),
            source: Box::new(other),
        },
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ImageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::Task(e.to_string()))?
}
