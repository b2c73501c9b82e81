//! Real containers with mounts: binds, volumes with copy-up, tmpfs and file binds (need root,
//! overlayfs and /bin/busybox, like the rest of `runtime::tests`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

fn bind(source: &Path, target: &str, read_only: bool, copy_up: bool) -> MountSpec {
    MountSpec {
        target: target.into(),
        kind: MountKind::Bind {
            source: source.to_path_buf(),
            propagation: String::new(),
            copy_up,
        },
        read_only,
    }
}

async fn run_lines(fx: &Fixture, cfg: &ContainerConfig) -> Vec<String> {
    fx.runtime.start(cfg).unwrap();
    assert_eq!(
        fx.runtime.wait(&cfg.id).await.unwrap(),
        0,
        "{:?}",
        log_lines(fx, &cfg.id)
    );
    let out = log_lines(fx, &cfg.id).into_iter().map(|(_, l)| l).collect();
    fx.runtime.delete(&cfg.id).unwrap();
    out
}

#[tokio::test]
async fn binds_volumes_with_copy_up_and_tmpfs_are_mounted() {
    let fx = fixture();
    let host = tempfile::tempdir().unwrap();
    let shared = host.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("hello"), "from host").unwrap();
    let volume = host.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    // The image's data directory, owned by its user (as postgres' or redis').
    let data = fx.rootfs.join("var/lib/db");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("seed"), "seeded").unwrap();
    std::os::unix::fs::chown(&data, Some(999), Some(999)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    // A symlink in the image must not lead a mount out of the root.
    std::os::unix::fs::symlink("/etc", fx.rootfs.join("escape")).unwrap();

    let mut cfg = config(
        &fx,
        &[
            "sh",
            "-c",
            "cat /ro/hello; echo; (echo x > /ro/new) 2>/dev/null && echo writable || echo read-only; \
             stat -c '%u %a' /var/lib/db; cat /var/lib/db/seed; echo; echo more > /var/lib/db/added; \
             stat -c '%a' /scratch; grep ' /scratch ' /proc/mounts | cut -d' ' -f3,4; \
             cat /escape/inside/hello",
        ],
    );
    cfg.mounts = vec![
        bind(&shared, "/ro", true, false),
        bind(&volume, "/var/lib/db", false, true),
        MountSpec {
            target: "/scratch".into(),
            kind: MountKind::Tmpfs {
                size_bytes: 1 << 20,
                mode: 0o750,
            },
            read_only: false,
        },
        bind(&shared, "/escape/inside", true, false),
    ];
    let out = run_lines(&fx, &cfg).await;
    assert_eq!(out[0], "from host");
    assert_eq!(out[1], "read-only");
    assert_eq!(out[2], "999 700");
    assert_eq!(out[3], "seeded");
    assert_eq!(out[4], "750");
    assert!(out[5].starts_with("tmpfs rw,nosuid,nodev"), "{}", out[5]);
    assert_eq!(out[6], "from host");
    // The volume kept what the image had and what the container wrote; the host's /etc was not
    // touched by the symlinked target.
    assert_eq!(
        std::fs::read_to_string(volume.join("seed")).unwrap(),
        "seeded"
    );
    assert_eq!(
        std::fs::read_to_string(volume.join("added")).unwrap(),
        "more\n"
    );
    let meta = std::fs::metadata(&volume).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (999, 0o700));
    assert!(!Path::new("/etc/inside").exists());

    // A volume that is not empty any more is not filled again.
    std::fs::remove_file(volume.join("seed")).unwrap();
    let mut cfg = config(&fx, &["ls", "/var/lib/db"]);
    cfg.mounts = vec![bind(&volume, "/var/lib/db", false, true)];
    assert_eq!(run_lines(&fx, &cfg).await, vec!["added"]);
}

#[tokio::test]
async fn files_are_bound_at_their_targets_read_only() {
    let fx = fixture();
    let host = tempfile::tempdir().unwrap();
    let secret = host.path().join("secret-0-s1");
    std::fs::write(&secret, "hunter2").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o400)).unwrap();
    let mut cfg = config(
        &fx,
        &[
            "sh",
            "-c",
            "cat /run/secrets/db_pass; echo; stat -c %a /run/secrets/db_pass; \
             (echo x > /run/secrets/db_pass) 2>/dev/null && echo writable || echo read-only",
        ],
    );
    cfg.mounts = vec![bind(&secret, "/run/secrets/db_pass", true, false)];
    cfg.read_only = true;
    assert_eq!(
        run_lines(&fx, &cfg).await,
        vec!["hunter2", "400", "read-only"]
    );
}

#[tokio::test]
async fn a_missing_bind_source_fails_the_start_naming_it() {
    let fx = fixture();
    let mut cfg = config(&fx, &["true"]);
    cfg.mounts = vec![bind(
        Path::new("/srv/shoal-no-such-dir"),
        "/x",
        false,
        false,
    )];
    let err = fx.runtime.start(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("bind source path does not exist: /srv/shoal-no-such-dir"),
        "{err}"
    );
    fx.runtime.delete(&cfg.id).unwrap();
}

#[tokio::test]
async fn a_local_volume_with_type_and_device_options_mounts_that_filesystem() {
    let fx = fixture();
    let mut cfg = config(
        &fx,
        &["sh", "-c", "grep ' /cache ' /proc/mounts | cut -d' ' -f1,3"],
    );
    cfg.mounts = vec![MountSpec {
        target: "/cache".into(),
        kind: MountKind::Filesystem {
            fstype: "tmpfs".into(),
            device: "tmpfs".into(),
            data: "size=64m,nosuid".into(),
        },
        read_only: false,
    }];
    assert_eq!(run_lines(&fx, &cfg).await, vec!["tmpfs tmpfs"]);
}

/// Unmounts what a test mounted on the host, whatever the test's outcome.
struct HostMounts(Vec<PathBuf>);

impl Drop for HostMounts {
    fn drop(&mut self) {
        for path in self.0.iter().rev() {
            let _ = rootfs::unmount_if_mounted(path);
        }
    }
}

/// `host/src` (with `sub` in it) made its own shared mount, as a host path is under systemd;
/// unmounted when `guard` drops.
fn shared_source(host: &Path, guard: &mut HostMounts) -> PathBuf {
    use nix::mount::{mount, MsFlags};
    let src = host.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    mount(
        Some(&src),
        &src,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    guard.0.push(src.clone());
    mount(
        None::<&str>,
        &src,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .unwrap();
    src
}

#[tokio::test]
async fn an_rslave_bind_sees_mounts_made_on_the_host_later() {
    use nix::mount::{mount, MsFlags};
    let fx = fixture();
    let host = tempfile::tempdir().unwrap();
    let mut guard = HostMounts(vec![]);
    let src = shared_source(host.path(), &mut guard);

    let mut cfg = config(
        &fx,
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 200 ]; do [ -e /mnt/sub/marker ] && echo seen && exit 0; \
             i=$((i+1)); sleep 0.05; done; echo unseen",
        ],
    );
    let mut m = bind(&src, "/mnt", false, false);
    m.kind = MountKind::Bind {
        source: src.clone(),
        propagation: "rslave".into(),
        copy_up: false,
    };
    cfg.mounts = vec![m];
    fx.runtime.start(&cfg).unwrap();
    let sub = src.join("sub");
    mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    guard.0.push(sub.clone());
    std::fs::write(sub.join("marker"), "x").unwrap();
    assert_eq!(fx.runtime.wait(&cfg.id).await.unwrap(), 0);
    let out: Vec<String> = log_lines(&fx, &cfg.id)
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    fx.runtime.delete(&cfg.id).unwrap();
    assert_eq!(out, vec!["seen"]);
    drop(guard);
    assert!(!rootfs::is_mounted(&sub));
}

#[tokio::test]
async fn a_private_bind_does_not_see_later_host_mounts() {
    use nix::mount::{mount, MsFlags};
    let fx = fixture();
    let host = tempfile::tempdir().unwrap();
    let mut guard = HostMounts(vec![]);
    let src = shared_source(host.path(), &mut guard);
    // The container reports once it has seen the file the host writes after its mount: by then
    // the host's tmpfs, mounted before that file was written, had had every chance to arrive.
    let mut cfg = config(
        &fx,
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 200 ]; do [ -e /mnt/ready ] && break; i=$((i+1)); sleep 0.05; done; \
             [ -e /mnt/sub/marker ] && echo seen || echo unseen",
        ],
    );
    cfg.mounts = vec![bind(&src, "/mnt", false, false)];
    fx.runtime.start(&cfg).unwrap();
    let sub = src.join("sub");
    mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    guard.0.push(sub.clone());
    std::fs::write(sub.join("marker"), "x").unwrap();
    std::fs::write(src.join("ready"), "x").unwrap();
    assert_eq!(fx.runtime.wait(&cfg.id).await.unwrap(), 0);
    let out: Vec<String> = log_lines(&fx, &cfg.id)
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    fx.runtime.delete(&cfg.id).unwrap();
    assert_eq!(out, vec!["unseen"]);
}
