//! Test images built from the host's busybox-static, pushed to a registry or saved as archives.
//!
//! Everything is deterministic (fixed mtimes, owners and order), so the same image always has the
//! same digests.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// The busybox-static binary the images are made of.
pub const BUSYBOX: &str = "/bin/busybox";
/// `PATH` of the images' config.
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Content of the demo image's `/www/index.html`.
pub const DEMO_INDEX_HTML: &str = "<html><body><h1>Hello from Shoal</h1></body></html>\n";
/// The demo image's command.
pub const DEMO_CMD: [&str; 7] = ["httpd", "-f", "-v", "-p", "80", "-h", "/www"];

/// OCI media types used by the fixture.
pub mod media {
    /// Image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// Image index.
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Image config.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// gzip layer.
    pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
}

/// One layer in both forms.
#[derive(Clone)]
pub struct Layer {
    /// The uncompressed tar.
    pub tar: Vec<u8>,
    /// The gzip blob as pushed.
    pub gz: Vec<u8>,
    /// `sha256` of `tar` (the config's diff id).
    pub diff_id: String,
    /// `sha256` of `gz` (the manifest's layer digest).
    pub digest: String,
}

impl Layer {
    /// Wraps an uncompressed layer tar (e.g. one with whiteouts made by a test) and gzips it.
    pub fn from_tar(tar: Vec<u8>) -> Result<Layer> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).context("gzip layer")?;
        let gz = gz.finish().context("gzip layer")?;
        Ok(Layer {
            diff_id: sha256(&tar),
            digest: sha256(&gz),
            tar,
            gz,
        })
    }
}

/// A complete single-platform image: layers, config and manifest bytes with their digests.
#[derive(Clone)]
pub struct BuiltImage {
    /// Layers, lowest first.
    pub layers: Vec<Layer>,
    /// Config JSON.
    pub config: Vec<u8>,
    /// `sha256` of `config`.
    pub config_digest: String,
    /// OCI manifest JSON.
    pub manifest: Vec<u8>,
    /// `sha256` of `manifest`.
    pub manifest_digest: String,
}

/// `sha256:<hex>` of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// A deterministic tar being built.
struct TarBuilder(tar::Builder<Vec<u8>>);

impl TarBuilder {
    fn new() -> Self {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Deterministic);
        TarBuilder(b)
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h
    }

    fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.0
            .append_data(&mut h, path, std::io::empty())
            .with_context(|| format!("tar dir {path}"))
    }

    fn file(&mut self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.0
            .append_data(&mut h, path, data)
            .with_context(|| format!("tar file {path}"))
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.0
            .append_link(&mut h, path, target)
            .with_context(|| format!("tar symlink {path}"))
    }

    fn block_device(&mut self, path: &str, major: u32, minor: u32) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Block, 0o666, 0);
        h.set_device_major(major).context("tar device major")?;
        h.set_device_minor(minor).context("tar device minor")?;
        self.0
            .append_data(&mut h, path, std::io::empty())
            .with_context(|| format!("tar device {path}"))
    }

    fn finish(self) -> Result<Layer> {
        Layer::from_tar(self.0.into_inner().context("finish tar")?)
    }
}

/// A layer that ships a block device node `shipped/disk` (mode 0666) with the given numbers:
/// an image trying to hand its containers a host disk.
pub fn shipped_device_layer(major: u32, minor: u32) -> Result<Layer> {
    let mut t = TarBuilder::new();
    t.dir("shipped", 0o755)?;
    t.block_device("shipped/disk", major, minor)?;
    t.finish()
}

/// Busybox plus `shipped/disk`, a block device node with the given numbers (Cmd `sh`).
pub fn shipped_device_image(major: u32, minor: u32) -> Result<BuiltImage> {
    build_image(
        vec![busybox_layer()?, shipped_device_layer(major, minor)?],
        &["sh"],
        "amd64",
    )
}

/// The applets `busybox --list` prints (without `busybox` itself).
pub fn busybox_applets() -> Result<Vec<String>> {
    let out = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .with_context(|| format!("run {BUSYBOX} --list (apt-get install busybox-static)"))?;
    if !out.status.success() {
        bail!("{BUSYBOX} --list failed: {}", out.status);
    }
    let mut applets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect();
    applets.sort();
    applets.dedup();
    Ok(applets)
}

/// The busybox base layer: bin/busybox, a symlink per applet, etc/passwd, etc/group, root/, tmp/.
pub fn busybox_layer() -> Result<Layer> {
    let busybox = std::fs::read(BUSYBOX)
        .with_context(|| format!("read {BUSYBOX} (apt-get install busybox-static)"))?;
    let mut t = TarBuilder::new();
    t.dir("bin", 0o755)?;
    t.file("bin/busybox", &busybox, 0o755)?;
    for applet in busybox_applets()? {
        t.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    t.dir("etc", 0o755)?;
    t.file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        0o644,
    )?;
    t.file("etc/group", b"root:x:0:\nnobody:x:65534:\n", 0o644)?;
    t.dir("root", 0o700)?;
    t.dir("tmp", 0o1777)?;
    t.finish()
}

/// The demo's second layer: www/index.html saying "Hello from Shoal".
pub fn demo_layer() -> Result<Layer> {
    let mut t = TarBuilder::new();
    t.dir("www", 0o755)?;
    t.file("www/index.html", DEMO_INDEX_HTML.as_bytes(), 0o644)?;
    t.finish()
}

/// Assembles config and manifest for `layers` with the given command and architecture.
pub fn build_image(layers: Vec<Layer>, cmd: &[&str], architecture: &str) -> Result<BuiltImage> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": architecture,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": { "Env": [PATH_ENV], "Cmd": cmd },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": layers.iter().map(|_| json!({"created_by": "shoal-fixture"})).collect::<Vec<_>>(),
    }))
    .context("encode config")?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::MANIFEST,
        "config": { "mediaType": media::CONFIG, "digest": config_digest, "size": config.len() },
        "layers": layers.iter().map(|l| json!({
            "mediaType": media::LAYER_GZIP, "digest": l.digest, "size": l.gz.len()
        })).collect::<Vec<_>>(),
    }))
    .context("encode manifest")?;
    Ok(BuiltImage {
        manifest_digest: sha256(&manifest),
        layers,
        config,
        config_digest,
        manifest,
    })
}

/// The busybox image: one layer, `Cmd ["sh"]`.
pub fn busybox_image() -> Result<BuiltImage> {
    build_image(vec![busybox_layer()?], &["sh"], "amd64")
}

/// The demo web server: busybox plus www/, `Cmd httpd -f -v -p 80 -h /www`.
pub fn demo_image() -> Result<BuiltImage> {
    build_image(vec![busybox_layer()?, demo_layer()?], &DEMO_CMD, "amd64")
}

/// A plain-HTTP client and the reference `registry/image` (the fixture only talks to test registries).
fn client(registry: &str, image: &str) -> Result<(Client, Reference)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reference: Reference = format!("{registry}/{image}")
        .parse()
        .with_context(|| format!("bad image reference {registry}/{image}"))?;
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![
            registry.to_string(),
            reference.resolve_registry().to_string(),
        ]),
        ..Default::default()
    });
    Ok((client, reference))
}

async fn push_blobs(client: &Client, reference: &Reference, image: &BuiltImage) -> Result<()> {
    client
        .store_auth_if_needed(reference.resolve_registry(), &RegistryAuth::Anonymous)
        .await;
    for layer in &image.layers {
        client
            .push_blob(reference, layer.gz.clone(), &layer.digest)
            .await
            .with_context(|| format!("push layer {}", layer.digest))?;
    }
    client
        .push_blob(reference, image.config.clone(), &image.config_digest)
        .await
        .context("push config")?;
    Ok(())
}

async fn push_manifest_bytes(
    client: &Client,
    reference: &Reference,
    bytes: &[u8],
    media_type: &'static str,
) -> Result<()> {
    client
        .push_manifest_raw(
            reference,
            bytes.to_vec(),
            http::HeaderValue::from_static(media_type),
        )
        .await
        .with_context(|| format!("push manifest {reference}"))?;
    Ok(())
}

/// Pushes `built` as `registry/image` (`image` = `repo:tag`) over plain HTTP; returns the manifest digest.
pub async fn push_image(registry: &str, image: &str, built: &BuiltImage) -> Result<String> {
    let (client, reference) = client(registry, image)?;
    push_blobs(&client, &reference, built).await?;
    push_manifest_bytes(&client, &reference, &built.manifest, media::MANIFEST).await?;
    Ok(built.manifest_digest.clone())
}

/// Pushes the busybox image (`Cmd ["sh"]`) and returns its manifest digest.
pub async fn push_busybox(registry: &str, image: &str) -> Result<String> {
    push_image(registry, image, &busybox_image()?).await
}

/// Pushes the demo web server image and returns its manifest digest.
pub async fn push_demo(registry: &str, image: &str) -> Result<String> {
    push_image(registry, image, &demo_image()?).await
}

/// Pushes an index with the busybox image for linux/amd64 and a decoy for linux/arm64 whose
/// `Cmd` is `["false"]`; returns the index digest. Tests that platform resolution picks amd64.
pub async fn push_multiarch_busybox(registry: &str, image: &str) -> Result<String> {
    let amd64 = busybox_image()?;
    let arm64 = build_image(amd64.layers.clone(), &["false"], "arm64")?;
    let (client, reference) = client(registry, image)?;
    for built in [&arm64, &amd64] {
        push_blobs(&client, &reference, built).await?;
        let by_digest = Reference::with_digest(
            reference.registry().to_string(),
            reference.repository().to_string(),
            built.manifest_digest.clone(),
        );
        push_manifest_bytes(&client, &by_digest, &built.manifest, media::MANIFEST).await?;
    }
    let entry = |b: &BuiltImage, arch: &str| {
        json!({"mediaType": media::MANIFEST, "digest": b.manifest_digest, "size": b.manifest.len(),
               "platform": {"architecture": arch, "os": "linux"}})
    };
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::INDEX,
        "manifests": [entry(&arm64, "arm64"), entry(&amd64, "amd64")],
    }))
    .context("encode index")?;
    push_manifest_bytes(&client, &reference, &index, media::INDEX).await?;
    Ok(sha256(&index))
}

fn append_file(b: &mut tar::Builder<std::fs::File>, path: &str, data: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, path, data)
        .with_context(|| format!("archive {path}"))
}

/// Writes `built` as a classic `docker save` tar (manifest.json, `<config hex>.json`,
/// `<diff id hex>/layer.tar` uncompressed) tagged with `repo_tags` (e.g. `busybox:latest`).
pub fn write_docker_save(path: &Path, built: &BuiltImage, repo_tags: &[&str]) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut b = tar::Builder::new(file);
    let config_name = format!("{}.json", hex_of(&built.config_digest));
    append_file(&mut b, &config_name, &built.config)?;
    let mut layer_names = Vec::new();
    for layer in &built.layers {
        let name = format!("{}/layer.tar", hex_of(&layer.diff_id));
        append_file(&mut b, &name, &layer.tar)?;
        layer_names.push(name);
    }
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name, "RepoTags": repo_tags, "Layers": layer_names,
    }]))
    .context("encode manifest.json")?;
    append_file(&mut b, "manifest.json", &manifest)?;
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for tag in repo_tags {
        if let Some((repo, t)) = tag.rsplit_once(':') {
            repositories
                .entry(repo.to_string())
                .or_default()
                .insert(t.to_string(), hex_of(&built.config_digest).to_string());
        }
    }
    append_file(
        &mut b,
        "repositories",
        &serde_json::to_vec(&repositories).context("encode repositories")?,
    )?;
    b.into_inner().context("finish archive")?;
    Ok(())
}

/// Writes `built` as an OCI image-layout tar whose index names it `name` (a full reference).
pub fn write_oci_layout(path: &Path, built: &BuiltImage, name: &str) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut b = tar::Builder::new(file);
    append_file(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let blob = |d: &str| format!("blobs/sha256/{}", hex_of(d));
    append_file(&mut b, &blob(&built.manifest_digest), &built.manifest)?;
    append_file(&mut b, &blob(&built.config_digest), &built.config)?;
    for layer in &built.layers {
        append_file(&mut b, &blob(&layer.digest), &layer.gz)?;
    }
    let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::INDEX,
        "manifests": [{
            "mediaType": media::MANIFEST, "digest": built.manifest_digest, "size": built.manifest.len(),
            "annotations": { "io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag },
        }],
    }))
    .context("encode index.json")?;
    append_file(&mut b, "index.json", &index)?;
    b.into_inner().context("finish archive")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_image_is_deterministic_and_complete() {
        if !Path::new(BUSYBOX).is_file() {
            eprintln!("skipping: {BUSYBOX} is not installed");
            return;
        }
        let a = busybox_image().expect("build");
        let b = busybox_image().expect("build");
        assert_eq!(a.manifest_digest, b.manifest_digest);
        let mut archive = tar::Archive::new(&a.layers[0].tar[..]);
        let mut names = Vec::new();
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            names.push(entry.path().expect("path").display().to_string());
        }
        for want in [
            "bin/busybox",
            "bin/sh",
            "bin/httpd",
            "etc/passwd",
            "etc/group",
            "tmp",
        ] {
            assert!(
                names.iter().any(|n| n.trim_end_matches('/') == want),
                "missing {want}"
            );
        }
        let config: serde_json::Value = serde_json::from_slice(&a.config).expect("config");
        assert_eq!(config["config"]["Cmd"], json!(["sh"]));
        assert_eq!(config["config"]["Env"], json!([PATH_ENV]));
    }
}
