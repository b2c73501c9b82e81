//! Unpacked layers mount as overlayfs lower dirs with whiteouts and opaque dirs doing their job.

use std::fs;
use std::io;
use std::path::Path;

use nix::mount::{mount, umount, MsFlags};
use shoal_agent::image::ImageStore;
use shoal_tests::image_fixture::{self, Layer};

fn layer(entries: &[(&str, Option<&[u8]>)]) -> Layer {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o755);
        h.set_mtime(0);
        match data {
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, path, io::empty()).expect("dir");
            }
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, path, *d).expect("file");
            }
        }
    }
    Layer::from_tar(b.into_inner().expect("tar")).expect("layer")
}

#[test]
fn whiteouts_hide_lower_files_through_overlayfs() {
    let lower = layer(&[
        ("etc", None),
        ("etc/motd", Some(b"old motd")),
        ("etc/keep", Some(b"kept")),
        ("var", None),
        ("var/cache", None),
        ("var/cache/old", Some(b"stale")),
    ]);
    let upper = layer(&[
        ("etc", None),
        ("etc/.wh.motd", Some(b"")),
        ("var", None),
        ("var/cache", None),
        ("var/cache/.wh..wh..opq", Some(b"")),
        ("var/cache/new", Some(b"fresh")),
    ]);
    let built = image_fixture::build_image(vec![lower, upper], &["sh"], "amd64").expect("image");
    let root = tempfile::tempdir().expect("tempdir");
    let archive = root.path().join("layers.tar");
    image_fixture::write_oci_layout(&archive, &built, "example.com/whiteouts:1").expect("layout");
    let store = ImageStore::open(&root.path().join("store")).expect("store");
    let image = store.import_archive(&archive).expect("import").remove(0);

    // overlayfs wants the highest layer first.
    let lowerdirs: Vec<String> = image
        .layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let target = root.path().join("rootfs");
    fs::create_dir(&target).expect("mkdir");
    let options = format!("lowerdir={}", lowerdirs.join(":"));
    if let Err(e) = mount(
        Some("overlay"),
        &target,
        Some("overlay"),
        MsFlags::MS_RDONLY,
        Some(options.as_str()),
    ) {
        eprintln!("skipping: cannot mount overlayfs here ({e})");
        return;
    }
    let seen = (|| -> io::Result<(bool, Vec<u8>, bool, Vec<u8>)> {
        Ok((
            target.join("etc/motd").exists(),
            fs::read(target.join("etc/keep"))?,
            target.join("var/cache/old").exists(),
            fs::read(target.join("var/cache/new"))?,
        ))
    })();
    umount(&target).expect("umount");
    let (motd, keep, old, new) = seen.expect("read rootfs");
    assert!(!motd, "whiteout should hide etc/motd");
    assert_eq!(keep, b"kept");
    assert!(!old, "opaque dir should hide var/cache/old");
    assert_eq!(new, b"fresh");
    assert!(Path::new(&image.layers[0]).join("var/cache/old").exists());
}
