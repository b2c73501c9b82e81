//! Runtime tests that run real containers (need root, overlayfs and /bin/busybox).
//!
//! The test binary doubles as the shim: `Runtime` execs `/proc/self/exe shim ...`, and the
//! constructor below turns such an exec into `shim_main` before libtest's `main` starts any thread.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::*;

#[used]
#[link_section = ".init_array"]
static SHIM_CTOR: extern "C" fn(
    libc::c_int,
    *const *const libc::c_char,
    *const *const libc::c_char,
) = shim_ctor;

extern "C" fn shim_ctor(
    argc: libc::c_int,
    argv: *const *const libc::c_char,
    _envp: *const *const libc::c_char,
) {
    if argc < 2 || argv.is_null() {
        return;
    }
    // SAFETY: glibc calls init_array functions with the process's argc/argv: argc valid C strings.
    let args: Vec<String> = (0..argc as usize)
        .map(|i| {
            unsafe { CStr::from_ptr(*argv.add(i)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    if args[1] == "shim" {
        std::process::exit(shim_main(&args));
    }
}

const CGROUP_PARENT: &str = "shoal-test";

/// A busybox rootfs in a temporary directory, with a runtime root beside it and its own cgroup
/// parent (`shoal-test/<unique>`), removed on drop.
struct Fixture {
    _tmp: tempfile::TempDir,
    rootfs: PathBuf,
    root: PathBuf,
    runtime: Runtime,
    cgroup_parent: String,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Deepest first: container cgroups a failed test left, then this fixture's parent, then
        // `shoal-test` itself once no other fixture uses it.
        for controller in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .chain(std::iter::once(PathBuf::from("/sys/fs/cgroup")))
        {
            let mine = controller.join(&self.cgroup_parent);
            if let Ok(children) = std::fs::read_dir(&mine) {
                for child in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
            let _ = std::fs::remove_dir(&mine);
            let _ = std::fs::remove_dir(controller.join(CGROUP_PARENT));
        }
    }
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for name in String::from_utf8(list.stdout).unwrap().lines() {
        if name != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(name)).unwrap();
        }
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    let root = tmp.path().join("containers");
    let unique = tmp
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().replace('.', ""))
        .unwrap_or_default();
    let cgroup_parent = format!("{CGROUP_PARENT}/{unique}");
    let runtime = Runtime::new(&root, &cgroup_parent).unwrap();
    Fixture {
        _tmp: tmp,
        rootfs,
        root,
        runtime,
        cgroup_parent,
    }
}

fn config(fx: &Fixture, args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        id: format!("t{}", shoal_proto::new_id()),
        layers: vec![fx.rootfs.clone()],
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    }
}

fn log_lines(fx: &Fixture, id: &str) -> Vec<(String, String)> {
    logs::read_tail(&fx.runtime.log_path(id), -1)
        .unwrap()
        .into_iter()
        .map(|e| (e.stream, String::from_utf8(e.data).unwrap()))
        .collect()
}

/// Checks that nothing of container `id` is left: directory, cgroups, mounts, process.
fn assert_gone(fx: &Fixture, id: &str, pid: i32) {
    assert!(!fx.root.join(id).exists(), "container dir left");
    for path in fx.runtime.cgroup(id).unwrap().paths() {
        assert!(!path.exists(), "cgroup {} left", path.display());
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(id), "mount left: {mountinfo}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} left"
    );
    // Its files follow in the background: the trash holds nothing of it for long.
    assert_trash_empties(&fx.runtime, Some(id));
}

/// Waits (up to 10 s) until the runtime's trash holds no entry of `id` (of anything: `None`).
fn assert_trash_empties(runtime: &Runtime, id: Option<&str>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = std::fs::read_dir(runtime.trash())
            .map(|d| {
                d.flatten()
                    .any(|e| id.is_none_or(|id| e.file_name().to_string_lossy().starts_with(id)))
            })
            .unwrap_or(false);
        if !left {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "trash not emptied");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn reopening_the_runtime_empties_the_trash_left_by_a_restart() {
    let fx = fixture();
    let left = fx.runtime.trash().join("tgone-1");
    std::fs::create_dir_all(left.join("upper/some/dir")).unwrap();
    std::fs::write(left.join("upper/some/dir/file"), b"data").unwrap();
    let _reopened = Runtime::new(&fx.root, &fx.cgroup_parent).unwrap();
    assert_trash_empties(&fx.runtime, None);
    assert!(
        fx.runtime.list().unwrap().is_empty(),
        "the trash is no container"
    );
}

#[tokio::test]
async fn exit_code_and_both_streams_logged() {
    let fx = fixture();
    let cfg = config(
        &fx,
        &[
            "sh",
            "-c",
            "echo hello; echo err >&2; printf partial; exit 3",
        ],
    );
    let pid = fx.runtime.start(&cfg).unwrap();
    assert_eq!(fx.runtime.wait(&cfg.id).await.unwrap(), 3);
    assert_eq!(
        fx.runtime.status(&cfg.id).unwrap(),
        ContainerStatus::Exited { code: 3 }
    );
    let mut lines = log_lines(&fx, &cfg.id);
    lines.sort();
    assert_eq!(
        lines,
        vec![
            ("stderr".to_string(), "err".to_string()),
            ("stdout".to_string(), "hello".to_string()),
            ("stdout".to_string(), "partial".to_string()),
        ]
    );
    fx.runtime.delete(&cfg.id).unwrap();
    assert_gone(&fx, &cfg.id, pid);
    assert!(matches!(
        fx.runtime.status(&cfg.id),
        Err(RuntimeError::NotFound { .. })
    ));
}

/// The root is a volatile overlay (no filesystem sync when the container ends), and what the
/// container wrote to it is still there after it exited, until the container is deleted.
#[tokio::test]
async fn the_root_is_a_volatile_overlay_that_keeps_its_writes_until_deleted() {
    let fx = fixture();
    let cfg = config(
        &fx,
        &[
            "sh",
            "-c",
            "grep '^overlay / ' /proc/mounts; echo kept > /written; sync /written",
        ],
    );
    let pid = fx.runtime.start(&cfg).unwrap();
    assert_eq!(fx.runtime.wait(&cfg.id).await.unwrap(), 0);
    let lines: Vec<String> = log_lines(&fx, &cfg.id)
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let options: Vec<&str> = lines[0]
        .split_whitespace()
        .nth(3)
        .unwrap_or_default()
        .split(',')
        .collect();
    // Newer kernels show it as `fsync=volatile`.
    assert!(
        options.contains(&"volatile") || options.contains(&"fsync=volatile"),
        "{options:?}"
    );
    let upper = fx
        .runtime
        .root()
        .join(&cfg.id)
        .join("upper")
        .join("written");
    assert_eq!(std::fs::read_to_string(&upper).unwrap(), "kept\n");
    fx.runtime.delete(&cfg.id).unwrap();
    assert_gone(&fx, &cfg.id, pid);
}

#[tokio::test]
async fn namespaces_limits_stop_and_delete() {
    let fx = fixture();
    let mut cfg = config(&fx, &["sleep", "1000"]);
    cfg.memory_bytes = 64 << 20;
    cfg.pids_limit = 50;
    cfg.nano_cpus = 500_000_000;
    let pid = fx.runtime.start(&cfg).unwrap();
    assert_eq!(
        fx.runtime.status(&cfg.id).unwrap(),
        ContainerStatus::Running { pid }
    );

    for ns in ["pid", "mnt", "net", "uts", "ipc"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let container = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_ne!(host, container, "{ns} namespace shared with the host");
    }
    let cgroup = fx.runtime.cgroup(&cfg.id).unwrap();
    assert!(cgroup.pids().contains(&pid));
    let read = |controller: &str, file: &str| -> String {
        let dir = cgroup
            .paths()
            .into_iter()
            .find(|p| {
                p.to_string_lossy().contains(&format!("/{controller}/"))
                    || p.join(file).exists() && cgroup.is_v2()
            })
            .unwrap();
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .to_string()
    };
    if cgroup.is_v2() {
        assert_eq!(read("", "memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("", "pids.max"), "50");
        assert_eq!(read("", "cpu.max"), "50000 100000");
    } else {
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read("pids", "pids.max"), "50");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
    }

    // sleep as pid 1 has no SIGTERM handler, so the kernel would drop the stop signal and the
    // grace period could only end in SIGKILL: stop kills it at once instead of waiting 30 s.
    let started = std::time::Instant::now();
    fx.runtime
        .stop(&cfg.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        fx.runtime.status(&cfg.id).unwrap(),
        ContainerStatus::Exited { code: 137 }
    );
    fx.runtime.delete(&cfg.id).unwrap();
    assert_gone(&fx, &cfg.id, pid);
}

#[tokio::test]
async fn stop_delivers_sigterm_first() {
    let fx = fixture();
    let cfg = config(
        &fx,
        &[
            "sh",
            "-c",
            "trap 'echo bye; exit 0' TERM; while true; do sleep 0.05; done",
        ],
    );
    fx.runtime.start(&cfg).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    fx.runtime
        .stop(&cfg.id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(fx.runtime.wait(&cfg.id).await.unwrap(), 0);
    assert_eq!(
        log_lines(&fx, &cfg.id),
        vec![("stdout".to_string(), "bye".to_string())]
    );
    fx.runtime.delete(&cfg.id).unwrap();
}

#[tokio::test]
async fn hostname_user_and_cwd_are_applied() {
    let fx = fixture();
    let mut cfg = config(&fx, &["sh", "-c", "hostname; id -u; id -g; pwd"]);
    cfg.hostname = "web-1".into();
    cfg.user = "nobody".into();
    cfg.cwd = "/work/dir".into();
    fx.runtime.start(&cfg).unwrap();
    assert_eq!(fx.runtime.wait(&cfg.id).await.unwrap(), 0);
    let out: Vec<String> = log_lines(&fx, &cfg.id)
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    assert_eq!(out, vec!["web-1", "65534", "65534", "/work/dir"]);
    fx.runtime.delete(&cfg.id).unwrap();

    let cfg = config(&fx, &["hostname"]);
    fx.runtime.start(&cfg).unwrap();
    fx.runtime.wait(&cfg.id).await.unwrap();
    assert_eq!(log_lines(&fx, &cfg.id)[0].1, cfg.id[..12]);
    fx.runtime.delete(&cfg.id).unwrap();
}

#[tokio::test]
async fn only_default_capabilities_are_kept() {
    let fx = fixture();
    let cfg = config(&fx, &["grep", "-E", "^Cap(Eff|Bnd)", "/proc/self/status"]);
    fx.runtime.start(&cfg).unwrap();
    assert_eq!(fx.runtime.wait(&cfg.id).await.unwrap(), 0);
    let out: Vec<String> = log_lines(&fx, &cfg.id)
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    assert_eq!(
        out,
        vec!["CapEff:\t00000000a80425fb", "CapBnd:\t00000000a80425fb"]
    );
    fx.runtime.delete(&cfg.id).unwrap();
}

#[tokio::test]
async fn memory_limit_kills_with_137() {
    let fx = fixture();
    let mut cfg = config(
        &fx,
        &["dd", "if=/dev/zero", "bs=32M", "count=1", "of=/dev/null"],
    );
    cfg.memory_bytes = 8 << 20;
    fx.runtime.start(&cfg).unwrap();
    assert_eq!(fx.runtime.wait(&cfg.id).await.unwrap(), 137);
    assert!(fx.runtime.exit_state(&cfg.id).unwrap().unwrap().oom_killed);
    fx.runtime.delete(&cfg.id).unwrap();
}

#[tokio::test]
async fn pids_limit_is_enforced() {
    let fx = fixture();
    let mut cfg = config(
        &fx,
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done; wait",
        ],
    );
    cfg.pids_limit = 4;
    fx.runtime.start(&cfg).unwrap();
    let code = fx.runtime.wait(&cfg.id).await;
    let errors: Vec<String> = log_lines(&fx, &cfg.id)
        .into_iter()
        .filter(|(s, _)| s == "stderr")
        .map(|(_, l)| l)
        .collect();
    assert!(
        !errors.is_empty(),
        "forks beyond pids.max must fail (exit {code:?})"
    );
    fx.runtime.delete(&cfg.id).unwrap();
}

#[tokio::test]
async fn start_errors_are_reported_and_cleaned_up() {
    let fx = fixture();
    let cfg = config(&fx, &["no-such-command"]);
    let err = fx.runtime.start(&cfg).unwrap_err();
    let RuntimeError::Start { message, .. } = &err else {
        panic!("unexpected error {err:?}");
    };
    assert!(message.contains("executable file not found"), "{message}");
    assert!(!fx.root.join(&cfg.id).exists());
    for path in fx.runtime.cgroup(&cfg.id).unwrap().paths() {
        assert!(!path.exists(), "cgroup {} left", path.display());
    }

    let mut cfg = config(&fx, &["true"]);
    cfg.layers = vec![fx.rootfs.join("missing-layer")];
    let err = fx.runtime.start(&cfg).unwrap_err();
    assert!(err.to_string().contains("overlay"), "{err}");

    let cfg = config(&fx, &["true"]);
    fx.runtime.start(&cfg).unwrap();
    assert!(matches!(
        fx.runtime.start(&cfg),
        Err(RuntimeError::AlreadyExists { .. })
    ));
    fx.runtime.wait(&cfg.id).await.unwrap();
    fx.runtime.delete(&cfg.id).unwrap();
    fx.runtime.delete(&cfg.id).unwrap(); // idempotent
}

#[tokio::test]
async fn joins_given_network_namespace() {
    let fx = fixture();
    let mut cfg = config(&fx, &["sleep", "1000"]);
    cfg.netns = Some(PathBuf::from(format!(
        "/proc/{}/ns/net",
        std::process::id()
    )));
    let pid = fx.runtime.start(&cfg).unwrap();
    assert_eq!(
        std::fs::read_link("/proc/self/ns/net").unwrap(),
        std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap()
    );
    fx.runtime.delete(&cfg.id).unwrap();
    assert_gone(&fx, &cfg.id, pid);
}

#[tokio::test]
async fn second_runtime_readopts_running_container() {
    let fx = fixture();
    let cfg = config(&fx, &["sleep", "1000"]);
    let pid = fx.runtime.start(&cfg).unwrap();

    let again = Runtime::new(&fx.root, &fx.cgroup_parent).unwrap();
    assert_eq!(
        again.status(&cfg.id).unwrap(),
        ContainerStatus::Running { pid }
    );
    assert_eq!(
        again.list().unwrap(),
        vec![(cfg.id.clone(), ContainerStatus::Running { pid })]
    );
    let waiter = tokio::spawn({
        let again = again.clone();
        let id = cfg.id.clone();
        async move { again.wait(&id).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), 137);
    again.delete(&cfg.id).unwrap();
    assert_gone(&fx, &cfg.id, pid);
}

#[test]
fn ids_are_directory_names() {
    assert!(validate_id("abc-1_2.3").is_ok());
    for bad in ["", ".", "..", "a/b", "a b", ".hidden"] {
        assert!(validate_id(bad).is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn a_host_missing_a_protection_refuses_containers_unless_allowed() {
    let mut fx = fixture();
    // As a host without seccomp filters would report it.
    fx.runtime.missing = vec!["seccomp: this kernel cannot load seccomp filters".to_string()];
    let cfg = config(&fx, &["sh", "-c", "grep Seccomp: /proc/self/status"]);
    let err = fx.runtime.start(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("cannot confine containers")
            && err.contains("seccomp")
            && err.contains("--allow-unconfined"),
        "{err}"
    );
    assert!(
        !fx.root.join(&cfg.id).exists(),
        "a refused container left its directory"
    );

    // The operator's opt-out: the container runs, without the missing protection only.
    fx.runtime = fx.runtime.clone().with_allow_unconfined(true);
    fx.runtime.start(&cfg).unwrap();
    assert_eq!(fx.runtime.wait(&cfg.id).await.unwrap(), 0);
    let lines = log_lines(&fx, &cfg.id);
    assert_eq!(
        lines,
        vec![("stdout".to_string(), "Seccomp:\t0".to_string())]
    );
    fx.runtime.delete(&cfg.id).unwrap();
}

#[tokio::test]
async fn a_chatty_container_s_log_rotates() {
    let fx = fixture();
    // ~40 KiB of output into files of at most 8 KiB, three kept.
    let mut cfg = config(
        &fx,
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 1000 ]; do echo line-$i-padding-padding; i=$((i+1)); done",
        ],
    );
    cfg.log = LogConfig {
        max_size_bytes: 8 * 1024,
        max_files: 3,
    };
    fx.runtime.start(&cfg).unwrap();
    assert_eq!(fx.runtime.wait(&cfg.id).await.unwrap(), 0);
    let log = fx.runtime.log_path(&cfg.id);
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", log.display()));
    for path in [log.clone(), rotated(1), rotated(2)] {
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= 8 * 1024, "{}: {size} bytes", path.display());
    }
    assert!(!rotated(3).exists(), "more than max_files files kept");
    // The newest lines survive, in order, ending with the last one written.
    let lines = log_lines(&fx, &cfg.id);
    assert_eq!(
        lines.last().map(|l| l.1.as_str()),
        Some("line-999-padding-padding")
    );
    let tail = logs::read_tail(&log, 2).unwrap();
    let tail: Vec<String> = tail
        .into_iter()
        .map(|e| String::from_utf8(e.data).unwrap())
        .collect();
    assert_eq!(
        tail,
        ["line-998-padding-padding", "line-999-padding-padding"]
    );
    fx.runtime.delete(&cfg.id).unwrap();
}

#[path = "mounts_tests.rs"]
mod mounts;
