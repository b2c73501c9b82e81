//! Pulls and imports against a real `docker-registry` on 127.0.0.1, with images from the fixture.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use shoal_agent::image::{ImageError, ImageStore};
use shoal_tests::image_fixture::{self, DEMO_CMD, PATH_ENV};
use shoal_tests::registry::{self, Registry};

fn registry_or_skip() -> Option<Registry> {
    if !registry::available() {
        eprintln!(
            "skipping: {} is not installed (apt-get install docker-registry)",
            registry::REGISTRY_BIN
        );
        return None;
    }
    Some(Registry::start().expect("start registry"))
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn pull_share_layers_resolve_index_and_import() {
    let Some(reg) = registry_or_skip() else {
        return;
    };
    let addr = reg.addr().to_string();
    let busybox_digest = image_fixture::push_busybox(&addr, "shoal/busybox:1")
        .await
        .expect("push busybox");
    let demo_digest = image_fixture::push_demo(&addr, "shoal/demo:1")
        .await
        .expect("push demo");
    let root = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(root.path()).expect("open store");

    // Plain pull over HTTP (loopback).
    let busybox = store
        .pull(&format!("{addr}/shoal/busybox:1"), &[])
        .await
        .expect("pull busybox");
    assert_eq!(busybox.reference, format!("{addr}/shoal/busybox:1"));
    assert_eq!(busybox.digest, busybox_digest);
    assert_eq!(busybox.config.cmd, vec!["sh"]);
    assert_eq!(busybox.config.env, vec![PATH_ENV]);
    assert_eq!(busybox.layers.len(), 1);
    let base = &busybox.layers[0];
    assert!(base.join("bin/busybox").is_file());
    assert_eq!(
        fs::read_link(base.join("bin/sh")).expect("sh symlink"),
        Path::new("busybox")
    );
    assert_eq!(
        fs::metadata(base.join("tmp")).expect("tmp").mode() & 0o7777,
        0o1777
    );
    assert!(fs::read_to_string(base.join("etc/passwd"))
        .expect("passwd")
        .contains("nobody"));

    // The demo shares the busybox layer: unpacked once.
    let demo = store
        .pull(&format!("{addr}/shoal/demo:1"), &[])
        .await
        .expect("pull demo");
    assert_eq!(demo.digest, demo_digest);
    assert_eq!(demo.config.cmd, DEMO_CMD);
    assert_eq!(demo.layers.len(), 2);
    assert_eq!(&demo.layers[0], base);
    let html = fs::read_to_string(demo.layers[1].join("www/index.html")).expect("index.html");
    assert!(html.contains("Hello from Shoal"));
    assert_eq!(count(&root.path().join("layers")), 2);
    assert_eq!(count(&root.path().join("tmp")), 0);

    // get() is local; unknown references are None.
    let got = store
        .get(&format!("{addr}/shoal/demo:1"))
        .expect("get")
        .expect("recorded");
    assert_eq!(got, demo);
    assert!(store.get("busybox").expect("get").is_none());

    // A second pull of the same image downloads nothing new and gives the same image.
    assert_eq!(
        store
            .pull(&format!("{addr}/shoal/busybox:1"), &[])
            .await
            .expect("re-pull"),
        busybox
    );

    // By digest.
    let pinned = store
        .pull(&format!("{addr}/shoal/busybox@{busybox_digest}"), &[])
        .await
        .expect("pull by digest");
    assert_eq!(pinned.layers, busybox.layers);

    // A manifest list resolves to linux/amd64 (the arm64 decoy has Cmd ["false"]).
    let index_digest = image_fixture::push_multiarch_busybox(&addr, "shoal/multi:1")
        .await
        .expect("push index");
    let multi = store
        .pull(&format!("{addr}/shoal/multi:1"), &[])
        .await
        .expect("pull index");
    assert_eq!(multi.digest, index_digest);
    assert_eq!(multi.config.cmd, vec!["sh"]);

    // docker save and OCI layout archives give the same layers, reused from the pulls.
    let built = image_fixture::busybox_image().expect("build");
    let save = root.path().join("busybox-save.tar");
    image_fixture::write_docker_save(&save, &built, &["busybox:latest"]).expect("save");
    let imported = store.import_archive(&save).expect("import docker save");
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].reference, "docker.io/library/busybox:latest");
    assert_eq!(imported[0].layers, busybox.layers);
    assert_eq!(imported[0].config.cmd, vec!["sh"]);
    assert_eq!(
        store.get("busybox").expect("get").as_ref(),
        Some(&imported[0])
    );

    let oci = root.path().join("demo-oci.tar");
    let demo_built = image_fixture::demo_image().expect("build demo");
    image_fixture::write_oci_layout(&oci, &demo_built, "example.com/shoal/demo:2").expect("layout");
    let imported = store.import_archive(&oci).expect("import OCI layout");
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].reference, "example.com/shoal/demo:2");
    assert_eq!(imported[0].digest, demo_digest);
    assert_eq!(imported[0].layers, demo.layers);
    assert_eq!(count(&root.path().join("layers")), 2);

    // Imports into a fresh store unpack from the archive itself.
    let fresh_root = tempfile::tempdir().expect("tempdir");
    let fresh = ImageStore::open(fresh_root.path()).expect("open");
    let imported = fresh
        .import_archive(&save)
        .expect("import into fresh store");
    assert!(imported[0].layers[0].join("bin/busybox").is_file());
}

#[tokio::test]
async fn tampered_layer_is_rejected_and_nothing_recorded() {
    let Some(reg) = registry_or_skip() else {
        return;
    };
    let addr = reg.addr().to_string();
    let built = image_fixture::build_image(
        vec![image_fixture::demo_layer().expect("layer")],
        &["cat"],
        "amd64",
    )
    .expect("build");
    image_fixture::push_image(&addr, "shoal/tampered:1", &built)
        .await
        .expect("push");

    // Flip one byte of the layer in the registry's storage: it serves the bytes as they are.
    let hex = built.layers[0].digest.trim_start_matches("sha256:");
    let data = reg.data_dir().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = fs::read(&data).expect("registry blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&data, &bytes).expect("tamper");

    let root = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(root.path()).expect("open store");
    let reference = format!("{addr}/shoal/tampered:1");
    match store.pull(&reference, &[]).await {
        Err(ImageError::DigestMismatch { expected, .. }) => {
            assert_eq!(expected, built.layers[0].digest)
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(store.get(&reference).expect("get").is_none());
    assert_eq!(count(&root.path().join("images")), 0);
    assert_eq!(count(&root.path().join("layers")), 0);
    assert!(!store.has_blob(&built.layers[0].digest));
    assert_eq!(count(&root.path().join("tmp")), 0);
}

#[tokio::test]
async fn unreachable_and_unknown_images_fail_cleanly() {
    let Some(reg) = registry_or_skip() else {
        return;
    };
    let root = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(root.path()).expect("open store");
    let missing = store
        .pull(&format!("{}/shoal/nope:1", reg.addr()), &[])
        .await;
    assert!(
        matches!(missing, Err(ImageError::Registry { .. })),
        "{missing:?}"
    );
    assert!(matches!(
        store.pull("Bad/Name", &[]).await,
        Err(ImageError::InvalidReference { .. })
    ));
}
