//! Pulling an image from an OCI distribution registry, with the task's credentials, through the
//! node's Docker Hub mirrors first.

use oci_client::client::{ClientConfig, ClientProtocol, LayerDescriptor};
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::secrets::RegistryAuth as OciAuth;
use oci_client::{Client, Reference};
use shoal_proto::v1::RegistryAuth;
use tracing::{debug, info, warn};

use super::auth::{credentials_for, exchange_identity_token, oci_auth, Redacted, RegistryMirror};
use super::manifest::{self, Document, Manifest, ACCEPTED_MANIFESTS};
use super::store::{check_layer_count, ImageRecord};
use super::{Image, ImageError, ImageRef, ImageStore};

/// Where one attempt pulls from: the image's own registry or a mirror, and how to speak to it.
struct Source {
    /// The reference on that registry (the mirror's host for a mirror).
    oci_ref: Reference,
    /// Registries spoken to over plain HTTP.
    plain_http: Vec<String>,
    /// What is sent.
    auth: OciAuth,
    /// Whether `auth` holds credentials (for the error when the registry refuses them).
    credentials_sent: bool,
}

impl Source {
    /// The image's own registry: plain HTTP to loopback and `insecure` ones, the task's
    /// credentials when they are for this registry (an identity token exchanged for an access
    /// token first).
    async fn direct(
        image_ref: &ImageRef,
        insecure: &[String],
        auth: Option<&RegistryAuth>,
    ) -> Result<Source, ImageError> {
        let oci_ref = oci_reference(image_ref)?;
        let mut plain_http: Vec<String> = insecure.to_vec();
        if image_ref.is_loopback_registry() {
            plain_http.push(image_ref.registry.clone());
            plain_http.push(oci_ref.resolve_registry().to_string());
        }
        let creds = credentials_for(&image_ref.registry, auth);
        let auth = match creds {
            Some(c) if c.registry_token.is_empty() && !c.identity_token.is_empty() => {
                let registry = oci_ref.resolve_registry();
                let scheme = if plain_http.iter().any(|h| h == registry) {
                    "http"
                } else {
                    "https"
                };
                let token = exchange_identity_token(
                    scheme,
                    registry,
                    oci_ref.repository(),
                    &c.identity_token,
                )
                .await?;
                OciAuth::Bearer(token)
            }
            creds => oci_auth(creds),
        };
        Ok(Source {
            oci_ref,
            plain_http,
            auth,
            credentials_sent: creds.is_some(),
        })
    }

    /// A mirror of Docker Hub. Hub credentials are not sent to it: a mirror is another party,
    /// and a private image it cannot serve still comes from Hub with them.
    fn mirror(image_ref: &ImageRef, mirror: &RegistryMirror) -> Result<Option<Source>, ImageError> {
        let Some(mirrored) = mirror.rewrite(image_ref) else {
            return Ok(None);
        };
        let oci_ref = oci_reference(&mirrored)?;
        let plain_http = if mirror.plain_http {
            vec![mirror.host.clone(), oci_ref.resolve_registry().to_string()]
        } else {
            Vec::new()
        };
        Ok(Some(Source {
            oci_ref,
            plain_http,
            auth: OciAuth::Anonymous,
            credentials_sent: false,
        }))
    }

    fn client(&self) -> Client {
        // Several users may race to install it; a second install fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.plain_http.clone()),
            platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
            ..Default::default()
        })
    }

    /// Maps the client's errors: its digest check failures and refusals into ours.
    fn error(&self, reference: &str, what: &str, e: OciDistributionError) -> ImageError {
        match e {
            OciDistributionError::DigestError(DigestError::VerificationError {
                expected,
                actual,
            }) => ImageError::DigestMismatch {
                what: what.to_string(),
                expected,
                actual,
            },
            // A 401 from the registry, or its token service refusing the credentials.
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => ImageError::Unauthorized {
                reference: reference.to_string(),
                registry: self.oci_ref.registry().to_string(),
                credentials_sent: self.credentials_sent,
            },
            other => ImageError::Registry {
                reference: reference.to_string(),
                what: what.to_string(),
                source: Box::new(other),
            },
        }
    }
}

/// The client's form of a reference.
fn oci_reference(image_ref: &ImageRef) -> Result<Reference, ImageError> {
    let text = image_ref.to_string();
    text.parse().map_err(|e| ImageError::InvalidReference {
        reference: text.clone(),
        reason: format!("{e}"),
    })
}

impl ImageStore {
    /// Pulls `reference` anonymously; see [`ImageStore::pull_with_auth`].
    pub async fn pull(&self, reference: &str, insecure: &[String]) -> Result<Image, ImageError> {
        self.pull_with_auth(reference, insecure, None).await
    }

    /// Pulls `reference` unless its layers are already here, verifying every digest; `auth` is
    /// sent only when its server is the image's registry.
    ///
    /// Docker Hub images go through the store's registry mirrors in order first, then Hub
    /// itself when every mirror failed; the image is recorded under its own reference either
    /// way. Registries on loopback and those listed in `insecure` (`host:port`) are spoken to
    /// over plain HTTP; all others over HTTPS. Nothing is recorded unless every blob checked out.
    pub async fn pull_with_auth(
        &self,
        reference: &str,
        insecure: &[String],
        auth: Option<&RegistryAuth>,
    ) -> Result<Image, ImageError> {
        let image_ref = ImageRef::parse(reference)?;
        for mirror in self.registry_mirrors() {
            let Some(source) = Source::mirror(&image_ref, mirror)? else {
                break;
            };
            match self.pull_from(&image_ref, &source).await {
                Ok(image) => {
                    info!(image = %image_ref, %mirror, "pulled through a registry mirror");
                    return Ok(image);
                }
                Err(error) => {
                    warn!(image = %image_ref, %mirror, %error, "registry mirror failed; trying the next source");
                }
            }
        }
        let source = Source::direct(&image_ref, insecure, auth).await?;
        debug!(
            image = %image_ref,
            credentials = %Redacted(credentials_for(&image_ref.registry, auth)),
            "pulling"
        );
        self.pull_from(&image_ref, &source).await
    }

    /// One attempt from one source; the record is named after `image_ref`.
    async fn pull_from(&self, image_ref: &ImageRef, source: &Source) -> Result<Image, ImageError> {
        let normalized = image_ref.to_string();
        let oci_ref = &source.oci_ref;
        let client = source.client();
        let fail = |what: &str| {
            let what = what.to_string();
            let reference = normalized.clone();
            move |e: OciDistributionError| source.error(&reference, &what, e)
        };

        // The top-level document: an image manifest or an index.
        let (bytes, reported) = client
            .pull_manifest_raw(oci_ref, &source.auth, ACCEPTED_MANIFESTS)
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
                    .fetch_manifest(&client, source, &entry.digest, &normalized)
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
                .pull_blob(oci_ref, &descriptor(&config_digest), &mut buf)
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
                    .pull_blob(oci_ref, &descriptor(&desc.digest), &mut file)
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
        source: &Source,
        digest: &str,
        normalized: &str,
    ) -> Result<Manifest, ImageError> {
        let oci_ref = &source.oci_ref;
        let by_digest = Reference::with_digest(
            oci_ref.registry().to_string(),
            oci_ref.repository().to_string(),
            digest.to_string(),
        );
        let (bytes, _) = client
            .pull_manifest_raw(&by_digest, &source.auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| source.error(normalized, "platform manifest", e))?;
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

fn descriptor(digest: &str) -> LayerDescriptor<'_> {
    LayerDescriptor {
        digest,
        urls: &None,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ImageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_tests::image_fixture;
    use shoal_tests::registry::{self, Registry, RegistryOptions};

    fn registry_missing() -> bool {
        if registry::available() {
            return false;
        }
        eprintln!(
            "skipping: {} is not installed (apt-get install docker-registry)",
            registry::REGISTRY_BIN
        );
        true
    }

    fn credentials(server: &str, password: &str) -> RegistryAuth {
        RegistryAuth {
            server: server.to_string(),
            username: "alice".to_string(),
            password: password.to_string(),
            ..Default::default()
        }
    }

    /// A loopback address nothing listens on.
    fn dead_addr() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    }

    #[tokio::test]
    async fn private_registry_wants_the_right_credentials() {
        if registry_missing() {
            return;
        }
        // Pushes are anonymous: fill the storage with an open registry, then serve it with auth.
        let data = tempfile::tempdir().expect("tempdir");
        let open = Registry::start_with(RegistryOptions {
            data_dir: Some(data.path().to_path_buf()),
            ..RegistryOptions::default()
        })
        .expect("start registry");
        image_fixture::push_busybox(open.addr(), "shoal/private:1")
            .await
            .expect("push");
        drop(open);
        let reg = Registry::start_with_basic_auth("alice", "s3cret", Some(data.path().into()))
            .expect("start registry with auth");
        let addr = reg.addr().to_string();
        let reference = format!("{addr}/shoal/private:1");
        let root = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(root.path()).expect("open store");

        // No credentials, and credentials for another registry (never sent here).
        let hub = credentials("https://index.docker.io/v1/", "s3cret");
        for auth in [None, Some(&hub)] {
            let err = store
                .pull_with_auth(&reference, &[], auth)
                .await
                .expect_err("pull without credentials");
            assert!(
                matches!(
                    err,
                    ImageError::Unauthorized {
                        credentials_sent: false,
                        ..
                    }
                ),
                "{err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!("unauthorized: authentication required (no credentials were sent for {addr}; use shoalctl login and --with-registry-auth)")
            );
        }

        let wrong = credentials(&addr, "wrong");
        let err = store
            .pull_with_auth(&reference, &[], Some(&wrong))
            .await
            .expect_err("pull with a wrong password");
        assert_eq!(
            err.to_string(),
            format!("unauthorized: incorrect username or password for {addr}")
        );
        assert!(!err.to_string().contains("wrong"));
        assert!(store.get(&reference).expect("get").is_none());

        // The server as `docker login` may write it.
        let right = credentials(&format!("http://{addr}/"), "s3cret");
        let image = store
            .pull_with_auth(&reference, &[], Some(&right))
            .await
            .unwrap_or_else(|e| panic!("pull with credentials: {e}\n{}", reg.log()));
        assert_eq!(image.reference, reference);
        assert_eq!(image.config.cmd, vec!["sh".to_string()]);
        assert!(store.get(&reference).expect("get").is_some());
    }

    #[tokio::test]
    async fn docker_hub_images_come_through_the_mirrors_in_order() {
        if registry_missing() {
            return;
        }
        let mirror = Registry::start().expect("start mirror");
        image_fixture::push_busybox(mirror.addr(), "library/busybox:mirrored")
            .await
            .expect("push");
        let index_digest = image_fixture::push_multiarch_busybox(mirror.addr(), "user/multi:1")
            .await
            .expect("push index");
        let root = tempfile::tempdir().expect("tempdir");
        let mirrors = [
            format!("http://{}", dead_addr()),
            format!("http://{}/", mirror.addr()),
        ]
        .iter()
        .map(|m| RegistryMirror::parse(m).expect("mirror"))
        .collect();
        let store = ImageStore::open(root.path())
            .expect("open store")
            .with_registry_mirrors(mirrors);

        // The dead mirror fails, the second serves; the image is Docker Hub's by name.
        let image = store
            .pull("busybox:mirrored", &[])
            .await
            .unwrap_or_else(|e| panic!("pull through the mirror: {e}\n{}", mirror.log()));
        assert_eq!(image.reference, "docker.io/library/busybox:mirrored");
        let local = store
            .get("busybox:mirrored")
            .expect("get")
            .expect("recorded");
        assert_eq!(local.digest, image.digest);

        // An index through a mirror still resolves to linux/amd64 (the arm64 decoy runs `false`).
        let multi = store.pull("user/multi:1", &[]).await.expect("pull index");
        assert_eq!(multi.reference, "docker.io/user/multi:1");
        assert_eq!(multi.digest, index_digest);
        assert_eq!(multi.config.cmd, vec!["sh".to_string()]);

        // Another registry's image never goes through a mirror, though the mirror has it.
        let other = format!("{}/library/busybox:mirrored", dead_addr());
        let err = store.pull(&other, &[]).await.expect_err("not mirrored");
        assert!(matches!(err, ImageError::Registry { .. }), "{err:?}");
        assert!(store.get(&other).expect("get").is_none());
    }

    /// A registry with docker's token auth, in memory: `/v2/` and the image want a bearer token
    /// that its `/token` endpoint gives for alice's password (GET, basic auth) or her identity
    /// token (POST, OAuth2 refresh grant). Counts the tokens it issued.
    struct TokenRegistry {
        addr: String,
        issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    const TOKEN: &str = "access-T1";
    const IDENTITY_TOKEN: &str = "refresh-R1";
    const ALICE_BASIC: &str = "Basic YWxpY2U6czNjcmV0"; // alice:s3cret

    impl TokenRegistry {
        async fn start(image: image_fixture::BuiltImage) -> TokenRegistry {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr").to_string();
            let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let image = std::sync::Arc::new(image);
            let (a, n) = (addr.clone(), issued.clone());
            tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    tokio::spawn(serve(conn, a.clone(), image.clone(), n.clone()));
                }
            });
            TokenRegistry { addr, issued }
        }
    }

    /// One request per connection (answered with `Connection: close`).
    async fn serve(
        mut conn: tokio::net::TcpStream,
        addr: String,
        image: std::sync::Arc<image_fixture::BuiltImage>,
        issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = Vec::new();
        let head_end = loop {
            let mut chunk = [0u8; 4096];
            let n = match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let length: usize = header("content-length").parse().unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
        let mut parts = request_line.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        let bearer_ok = header("authorization") == format!("Bearer {TOKEN}");
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"fake-registry\"\r\n"
        );
        let token_json = format!("{{\"token\":\"{TOKEN}\",\"access_token\":\"{TOKEN}\"}}");
        let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let has = |k: &str, v: &str| form.iter().any(|(fk, fv)| fk == k && fv == v);
        let blob = |digest: &str| -> Option<Vec<u8>> {
            if digest == image.config_digest {
                return Some(image.config.clone());
            }
            image
                .layers
                .iter()
                .find(|l| l.digest == digest)
                .map(|l| l.gz.clone())
        };
        let (status, extra, content): (&str, String, Vec<u8>) = match (method, path) {
            ("GET", "/token") if header("authorization") == ALICE_BASIC => {
                issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                ("200 OK", String::new(), token_json.into_bytes())
            }
            ("POST", "/token")
                if has("grant_type", "refresh_token")
                    && has("refresh_token", IDENTITY_TOKEN)
                    && has("service", "fake-registry")
                    && has("scope", "repository:shoal/tok:pull") =>
            {
                issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                ("200 OK", String::new(), token_json.into_bytes())
            }
            (_, "/token") => ("401 Unauthorized", String::new(), Vec::new()),
            _ if !bearer_ok => ("401 Unauthorized", challenge, Vec::new()),
            ("GET", "/v2/") => ("200 OK", String::new(), b"{}".to_vec()),
            ("GET", "/v2/shoal/tok/manifests/1") => (
                "200 OK",
                format!(
                    "Content-Type: {}\r\nDocker-Content-Digest: {}\r\n",
                    image_fixture::media::MANIFEST,
                    image.manifest_digest
                ),
                image.manifest.clone(),
            ),
            ("GET", p) => match p.strip_prefix("/v2/shoal/tok/blobs/").and_then(blob) {
                Some(b) => ("200 OK", String::new(), b),
                None => ("404 Not Found", String::new(), Vec::new()),
            },
            _ => ("404 Not Found", String::new(), Vec::new()),
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
            content.len()
        );
        let _ = conn.write_all(reply.as_bytes()).await;
        let _ = conn.write_all(&content).await;
        let _ = conn.shutdown().await;
    }

    #[tokio::test]
    async fn token_auth_registries_get_a_token_for_a_password_or_an_identity_token() {
        let reg = TokenRegistry::start(image_fixture::busybox_image().expect("image")).await;
        let addr = reg.addr.clone();
        let reference = format!("{addr}/shoal/tok:1");

        for (auth, sent) in [
            (None, false),
            (Some(credentials(&addr, "wrong")), true),
            (
                Some(RegistryAuth {
                    server: addr.clone(),
                    identity_token: "stale".into(),
                    ..Default::default()
                }),
                true,
            ),
        ] {
            let root = tempfile::tempdir().expect("tempdir");
            let store = ImageStore::open(root.path()).expect("open store");
            let err = store
                .pull_with_auth(&reference, &[], auth.as_ref())
                .await
                .expect_err("refused");
            assert!(
                matches!(&err, ImageError::Unauthorized { credentials_sent, .. } if *credentials_sent == sent),
                "{err:?}"
            );
            assert!(err.to_string().starts_with("unauthorized: "), "{err}");
        }
        assert_eq!(reg.issued.load(std::sync::atomic::Ordering::SeqCst), 0);

        let right = credentials(&addr, "s3cret");
        let identity = RegistryAuth {
            server: addr.clone(),
            identity_token: IDENTITY_TOKEN.into(),
            ..Default::default()
        };
        let bearer = RegistryAuth {
            server: addr.clone(),
            registry_token: TOKEN.into(),
            ..Default::default()
        };
        for (n, auth) in [right, identity, bearer].iter().enumerate() {
            let root = tempfile::tempdir().expect("tempdir");
            let store = ImageStore::open(root.path()).expect("open store");
            let image = store
                .pull_with_auth(&reference, &[], Some(auth))
                .await
                .unwrap_or_else(|e| panic!("pull {n}: {e}"));
            assert_eq!(image.config.cmd, vec!["sh".to_string()]);
        }
        // The password and the identity token were each traded for a token; the registry token
        // went as is.
        assert_eq!(reg.issued.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
