//! Unit tests of `exec`, and one of a real probe in a real container (root only).

use super::*;

/// A busybox rootfs and a runtime beside it, when this host can run real containers.
fn real_runtime(tmp: &Path) -> Option<(Runtime, PathBuf)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/bin/busybox").is_file() {
        eprintln!("skipped: running a probe in a real container needs root and /bin/busybox");
        return None;
    }
    let rootfs = tmp.join("rootfs");
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for name in [
        "sh", "sleep", "id", "pwd", "hostname", "grep", "cat", "head", "tr", "echo",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(name)).unwrap();
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    )
    .unwrap();
    fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    let unique = tmp
        .file_name()
        .map(|n| n.to_string_lossy().replace('.', ""))
        .unwrap_or_default();
    match Runtime::new(&tmp.join("containers"), &format!("shoal-test/{unique}")) {
        Ok(rt) => Some((rt.with_allow_unconfined(true), rootfs)),
        Err(e) => {
            eprintln!("skipped: no container runtime on this host: {e}");
            None
        }
    }
}

/// Deletes the test's container (still running when an assertion failed) and removes its
/// cgroup parent, and `shoal-test` once no other test uses it, even when the test fails.
struct Cleanup<'a> {
    rt: &'a Runtime,
    id: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let paths = self.rt.cgroup(&self.id).map(|c| c.paths());
        let _ = self.rt.delete(&self.id);
        for path in paths.into_iter().flatten() {
            if let Some(parent) = path.parent() {
                let _ = fs::remove_dir(&path);
                let _ = fs::remove_dir(parent);
                let _ = parent.parent().map(fs::remove_dir);
            }
        }
    }
}

/// The whole mechanism against a real container (the test binary is the shim: see
/// `runtime::tests`).
#[test]
fn a_probe_runs_inside_the_container_as_its_processes_do() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((rt, rootfs)) = real_runtime(tmp.path()) else {
        return;
    };
    let cfg = ContainerConfig {
        id: format!("p{}", shoal_proto::new_id()),
        layers: vec![rootfs],
        args: vec!["sleep".into(), "1000".into()],
        env: vec!["PATH=/bin".into(), "X=42".into()],
        cwd: "/tmp".into(),
        user: "nobody".into(),
        hostname: "probe-host".into(),
        no_new_privileges: true,
        ..Default::default()
    };
    let pid = rt.start(&cfg).unwrap();
    let _cleanup = Cleanup {
        rt: &rt,
        id: cfg.id.clone(),
    };
    let sh = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let run = |args: Vec<String>, timeout: Duration| rt.exec(&cfg.id, &args, timeout, 4096);

    let out = run(
        sh("echo x=$X; id -u; pwd; hostname; echo pid=$$; grep -E '^(NoNewPrivs|Seccomp|CapEff):' /proc/self/status; cat /proc/self/cgroup"),
        Duration::from_secs(10),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.output).into_owned();
    assert_eq!((out.exit_code, out.timed_out), (0, false), "{text}");
    for want in [
        "x=42\n",
        "65534\n",
        "/tmp\n",
        "probe-host\n",
        "NoNewPrivs:\t1",
        &cfg.id,
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
    // Its own pid namespace: the container's init is 1, the probe's shell a small number.
    let probe_pid: i32 = text
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap();
    assert!(probe_pid > 1 && probe_pid < 100, "{text}");
    // A non-root user keeps no effective capability.
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
    if rt.missing_protections().is_empty() {
        assert!(text.contains("Seccomp:\t2"), "{text}");
    }

    let out = run(sh("echo bad >&2; exit 3"), Duration::from_secs(10)).unwrap();
    assert_eq!((out.exit_code, out.output.as_slice()), (3, &b"bad\n"[..]));

    let out = run(
        sh("head -c 10000 /dev/zero | tr '\\0' a"),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(
        out.output.len(),
        4097,
        "one byte past the limit says it was cut"
    );

    let began = Instant::now();
    let out = run(
        vec!["sleep".into(), "30".into()],
        Duration::from_millis(300),
    )
    .unwrap();
    assert!(out.timed_out);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );

    let err = run(vec!["no-such-check".into()], Duration::from_secs(10)).unwrap_err();
    assert!(
        err.to_string().contains("executable file not found"),
        "{err}"
    );

    // The probes left nothing behind in the container.
    let cgroup = rt.cgroup(&cfg.id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while cgroup.pids().len() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cgroup.pids(), [pid]);

    rt.delete(&cfg.id).unwrap();
    let err = run(sh("true"), Duration::from_secs(1)).unwrap_err();
    assert!(
        err.to_string().contains("no such container") || err.to_string().contains("not running"),
        "{err}"
    );
}

#[test]
fn candidates_follow_path_unless_the_command_has_a_slash() {
    assert_eq!(exec_candidates("/bin/sh", "/x"), ["/bin/sh"]);
    assert_eq!(exec_candidates("./check", "/x"), ["./check"]);
    assert_eq!(
        exec_candidates("curl", "/usr/bin:/bin/::/opt"),
        ["/usr/bin/curl", "/bin/curl", "./curl", "/opt/curl"]
    );
}

#[test]
fn steps_are_numbered_in_order() {
    let all = [
        STEP_CGROUP,
        STEP_SETNS,
        STEP_ROOT,
        STEP_CWD,
        STEP_STDIO,
        STEP_FORK,
        STEP_ULIMIT,
        STEP_SECCOMP,
        STEP_CAPS,
        STEP_CREDS,
        STEP_NNP,
        STEP_EXEC,
    ];
    assert_eq!(all.len(), STEPS.len());
    for (i, s) in all.iter().enumerate() {
        assert_eq!(*s as usize, i);
    }
}

#[test]
fn drain_keeps_one_byte_past_the_limit_and_reads_the_rest() {
    let (r, w) = nonblocking_pipe().expect("pipe");
    nix::unistd::write(&w, &[b'x'; 100]).expect("write");
    drop(w);
    let mut out = Vec::new();
    assert!(drain(&r, &mut out, 10));
    assert_eq!(out.len(), 11);
}
