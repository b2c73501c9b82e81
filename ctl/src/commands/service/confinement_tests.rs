//! Tests of the confinement flags (capabilities, devices, ulimits, seccomp, ...) on create,
//! update and `inspect --pretty`.

use clap::Parser;
use shoal_proto::v1::{ContainerSpec, Driver, Ulimit};

use super::spec::update_capabilities;
use super::*;

fn create_args(args: &[&str]) -> CreateArgs {
    let cli = crate::cli::Cli::try_parse_from(
        ["shoalctl", "service", "create", "--name", "web"]
            .iter()
            .chain(args.iter())
            .chain(["busybox"].iter()),
    )
    .expect("parses");
    match cli.command {
        crate::cli::Command::Service(crate::cli::ServiceCommand::Create(a)) => *a,
        _ => panic!("not create"),
    }
}

fn update_args(args: &[&str]) -> UpdateArgs {
    let cli = crate::cli::Cli::try_parse_from(
        ["shoalctl", "service", "update"]
            .iter()
            .chain(args.iter())
            .chain(["web"].iter()),
    )
    .expect("parses");
    match cli.command {
        crate::cli::Command::Service(crate::cli::ServiceCommand::Update(a)) => *a,
        _ => panic!("not update"),
    }
}

fn container(spec: &ServiceSpec) -> ContainerSpec {
    spec.task
        .as_ref()
        .and_then(|t| t.container.clone())
        .expect("container")
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A file under the temp dir, unique to this test process, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, body: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("shoalctl-{}-{name}", std::process::id()));
        std::fs::write(&path, body).expect("write temp file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn create_sends_every_knob() {
    let profile = TempFile::new("create.json", br#"{"defaultAction":"SCMP_ACT_ERRNO"}"#);
    let seccomp = format!("seccomp={}", profile.path());
    let spec = build_spec(&create_args(&[
        "--cap-add",
        "net_admin",
        "--cap-add",
        "CHOWN",
        "--cap-drop",
        "chown",
        "--cap-drop",
        "mknod",
        "--cap-drop",
        "CAP_MKNOD",
        "--device",
        "/dev/fuse",
        "--device",
        "/dev/sda:/dev/xvda:r",
        "--security-opt",
        "no-new-privileges",
        "--security-opt",
        &seccomp,
        "--read-only",
        "-u",
        "1000:100",
        "--group-add",
        "audio",
        "--group-add",
        "audio",
        "--ulimit",
        "nofile=10:20",
        "--ulimit",
        "nofile=1024:2048",
        "--sysctl",
        "net.core.somaxconn=1024",
        "--init",
        "--hostname",
        "box",
        "-w",
        "/srv",
        "--entrypoint",
        "/bin/sh -c",
        "--stop-signal",
        "SIGQUIT",
        "--log-opt",
        "max-size=1m",
    ]))
    .expect("valid");
    let c = container(&spec);
    // adding wins over dropping the same capability; names are normalized and sorted
    assert_eq!(c.capability_add, strings(&["CAP_CHOWN", "CAP_NET_ADMIN"]));
    assert_eq!(c.capability_drop, strings(&["CAP_MKNOD"]));
    assert_eq!(c.devices.len(), 2);
    assert_eq!(c.devices[1].path_in_container, "/dev/xvda");
    let p = c.privileges.clone().expect("privileges");
    assert!(p.no_new_privileges);
    let sc = p.seccomp.expect("seccomp");
    assert_eq!(sc.mode, "custom");
    assert_eq!(sc.profile, br#"{"defaultAction":"SCMP_ACT_ERRNO"}"#);
    assert!(c.read_only && c.init && !c.privileged);
    assert_eq!(c.user, "1000:100");
    assert_eq!(c.groups, strings(&["audio"]));
    assert_eq!(
        c.ulimits,
        vec![Ulimit {
            name: "nofile".into(),
            soft: 1024,
            hard: 2048
        }]
    );
    assert_eq!(
        c.sysctls.get("net.core.somaxconn").map(String::as_str),
        Some("1024")
    );
    assert_eq!(c.hostname, "box");
    assert_eq!(c.dir, "/srv");
    assert_eq!(c.command, strings(&["/bin/sh", "-c"]));
    assert_eq!(c.stop_signal, "SIGQUIT");
    let log = spec.task.as_ref().and_then(|t| t.log_driver.clone());
    assert_eq!(
        log,
        Some(Driver {
            name: "json-file".into(),
            options: [("max-size".to_string(), "1m".to_string())].into(),
        })
    );

    // nothing asked: nothing set, so the defaults apply on the node
    let plain = build_spec(&create_args(&[])).expect("valid");
    let c = container(&plain);
    assert!(c.privileges.is_none() && c.capability_add.is_empty() && c.command.is_empty());
    assert!(plain.task.as_ref().expect("task").log_driver.is_none());
    let all = build_spec(&create_args(&[
        "--cap-add",
        "ALL",
        "--cap-add",
        "NET_ADMIN",
    ]))
    .expect("valid");
    assert_eq!(container(&all).capability_add, strings(&["ALL"]));
}

#[test]
fn create_refuses_what_the_manager_would() {
    let not_object = TempFile::new("array.json", b"[1, 2]");
    let not_json = TempFile::new("text.json", b"syscalls: all");
    let bad_action = TempFile::new(
        "action.json",
        br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOPE"}]}"#,
    );
    let missing = std::env::temp_dir().join(format!("shoalctl-{}-none.json", std::process::id()));
    let seccomp = |p: &str| format!("seccomp={p}");
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            strings(&["--security-opt", &seccomp(&missing.display().to_string())]),
            format!(
                "--security-opt: cannot read seccomp profile {}: No such file or directory (os error 2)",
                missing.display()
            ),
        ),
        (
            strings(&["--security-opt", &seccomp(not_object.path())]),
            format!("--security-opt: seccomp profile {} is not a JSON object", not_object.path()),
        ),
        (
            strings(&["--security-opt", &seccomp(not_json.path())]),
            format!("--security-opt: seccomp profile {} is not JSON: expected value at line 1 column 1", not_json.path()),
        ),
        (
            strings(&["--security-opt", &seccomp(bad_action.path())]),
            format!("--security-opt: seccomp profile {}: syscalls[0].action: unknown action \"SCMP_ACT_NOPE\"", bad_action.path()),
        ),
        (strings(&["--workdir", "srv"]), "--workdir: \"srv\" must be an absolute path".into()),
        (strings(&["--user", "a:b:c"]), "--user: \"a:b:c\" is not USER[:GROUP] (names or numbers, e.g. 1000:1000 or nobody)".into()),
        (strings(&["--hostname", "a b"]), "--hostname: \"a b\" is not a hostname (at most 64 letters, digits, '-', '_' and '.')".into()),
        (strings(&["--group-add", "a b"]), "--group-add: \"a b\" is not a group name or number".into()),
        (strings(&["--device", "/dev/a:/dev/x", "--device", "/dev/b:/dev/x"]), "".into()),
    ];
    for (args, want) in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let got = build_spec(&create_args(&refs))
            .map(|_| ())
            .map_err(|e| e.to_string());
        if want.is_empty() {
            // a second device for the same container path replaces the first
            assert!(got.is_ok(), "{args:?}: {got:?}");
        } else {
            assert_eq!(got, Err(want), "{args:?}");
        }
    }
}

#[test]
fn capabilities_update_like_docker() {
    #[rustfmt::skip]
    let cases: [[&[&str]; 6]; 7] = [
        // (add, drop, --cap-add, --cap-drop, add after, drop after)
        [&[], &[], &["CAP_NET_ADMIN"], &[], &["CAP_NET_ADMIN"], &[]],
        [&[], &["CAP_NET_ADMIN"], &["CAP_NET_ADMIN"], &[], &["CAP_NET_ADMIN"], &[]],
        [&["CAP_NET_ADMIN"], &[], &[], &["CAP_NET_ADMIN"], &[], &["CAP_NET_ADMIN"]],
        [&[], &[], &["CAP_CHOWN"], &["CAP_CHOWN"], &["CAP_CHOWN"], &[]],
        [&["CAP_NET_ADMIN", "CAP_SYS_TIME"], &["CAP_MKNOD"], &["RESET"], &[], &[], &["CAP_MKNOD"]],
        [&["CAP_NET_ADMIN"], &["CAP_MKNOD"], &["RESET", "CAP_BPF"], &["RESET"], &["CAP_BPF"], &[]],
        // drop everything but keep what was added: only NET_ADMIN remains in effect
        [&["CAP_NET_ADMIN"], &["CAP_MKNOD"], &[], &["ALL"], &["CAP_NET_ADMIN"], &["ALL"]],
    ];
    for [add, drop, to_add, to_drop, want_add, want_drop] in cases {
        let (mut a, mut d) = (strings(add), strings(drop));
        update_capabilities(&mut a, &mut d, &strings(to_add), &strings(to_drop));
        assert_eq!(
            (a, d),
            (strings(want_add), strings(want_drop)),
            "{to_add:?} {to_drop:?}"
        );
    }
}

#[test]
fn update_changes_the_knobs() {
    let mut spec = build_spec(&create_args(&[
        "--cap-drop",
        "NET_RAW",
        "--device",
        "/dev/fuse",
        "--device",
        "/dev/sda",
        "--security-opt",
        "seccomp=unconfined",
        "--group-add",
        "audio",
        "--ulimit",
        "nofile=1024",
        "--ulimit",
        "core=0",
        "--sysctl",
        "net.core.somaxconn=1024",
        "--user",
        "1000",
        "--entrypoint",
        "/bin/app",
        "--stop-signal",
        "SIGQUIT",
        "--hostname",
        "old",
        "--log-opt",
        "max-size=1m",
    ]))
    .expect("valid");
    let profile = TempFile::new("update.json", br#"{"defaultAction":"SCMP_ACT_ALLOW"}"#);
    let seccomp = format!("seccomp={}", profile.path());
    let a = update_args(&[
        "--cap-add",
        "net_raw",
        "--cap-drop",
        "SYS_CHROOT",
        "--privileged",
        "--read-only",
        "--init",
        "--device-rm",
        "/dev/sda",
        "--device",
        "/dev/fuse:/dev/fuse:r",
        "--device-add",
        "/dev/kvm",
        "--security-opt",
        &seccomp,
        "--security-opt",
        "no-new-privileges",
        "--group-rm",
        "audio",
        "--group-add",
        "video",
        "--ulimit-rm",
        "core",
        "--ulimit",
        "nofile=1:2",
        "--sysctl-rm",
        "net.core.somaxconn",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "--user",
        "",
        "--entrypoint",
        "",
        "--stop-signal",
        "TERM",
        "--hostname",
        "new",
        "--workdir",
        "/w",
        "--log-opt",
        "max-file=5",
    ]);
    apply_update(&mut spec, &a, &NetworkIds::new()).expect("applies");
    let c = container(&spec);
    assert_eq!(c.capability_add, strings(&["CAP_NET_RAW"]));
    assert_eq!(c.capability_drop, strings(&["CAP_SYS_CHROOT"]));
    assert!(c.privileged && c.read_only && c.init);
    let devices: Vec<(&str, &str)> = c
        .devices
        .iter()
        .map(|d| (d.path_on_host.as_str(), d.cgroup_permissions.as_str()))
        .collect();
    assert_eq!(devices, vec![("/dev/fuse", "r"), ("/dev/kvm", "rwm")]);
    let p = c.privileges.clone().expect("privileges");
    assert!(p.no_new_privileges);
    assert_eq!(
        p.seccomp.map(|s| (s.mode, s.profile)),
        Some((
            "custom".into(),
            br#"{"defaultAction":"SCMP_ACT_ALLOW"}"#.to_vec()
        ))
    );
    assert_eq!(c.groups, strings(&["video"]));
    assert_eq!(
        c.ulimits,
        vec![Ulimit {
            name: "nofile".into(),
            soft: 1,
            hard: 2
        }]
    );
    assert_eq!(c.sysctls.len(), 1);
    assert_eq!(
        c.sysctls.get("net.ipv4.ip_forward").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        (c.user.as_str(), c.dir.as_str(), c.hostname.as_str()),
        ("", "/w", "new")
    );
    assert!(
        c.command.is_empty(),
        "an empty --entrypoint resets to the image's"
    );
    assert_eq!(c.stop_signal, "TERM");
    let log = spec
        .task
        .as_ref()
        .and_then(|t| t.log_driver.clone())
        .expect("log driver");
    assert_eq!(log.options.get("max-size").map(String::as_str), Some("1m"));
    assert_eq!(log.options.get("max-file").map(String::as_str), Some("5"));

    // undo with explicit false values
    apply_update(
        &mut spec,
        &update_args(&[
            "--privileged=false",
            "--read-only=false",
            "--init=false",
            "--security-opt",
            "seccomp=default",
        ]),
        &NetworkIds::new(),
    )
    .expect("applies");
    let c = container(&spec);
    assert!(!c.privileged && !c.read_only && !c.init);
    assert_eq!(
        c.privileges.and_then(|p| p.seccomp).map(|s| s.mode),
        Some("default".into())
    );

    for (args, want) in [
        (
            &["--device-rm", "/dev/nope"][..],
            "--device-rm: service web has no device /dev/nope",
        ),
        (
            &["--group-rm", "wheel"],
            "--group-rm: service web has no group wheel",
        ),
        (
            &["--ulimit-rm", "nproc"],
            "--ulimit-rm: service web has no ulimit nproc",
        ),
        (
            &["--sysctl-rm", "net.x"],
            "--sysctl-rm: service web has no sysctl net.x",
        ),
        (
            &["--workdir", "rel"],
            "--workdir: \"rel\" must be an absolute path",
        ),
    ] {
        let mut s = spec.clone();
        let e = apply_update(&mut s, &update_args(args), &NetworkIds::new()).expect_err("refused");
        assert_eq!(e.to_string(), want, "{args:?}");
    }
}

#[test]
fn pretty_shows_the_non_defaults() {
    let spec = build_spec(&create_args(&[
        "--cap-add",
        "NET_ADMIN",
        "--cap-drop",
        "ALL",
        "--device",
        "/dev/fuse",
        "--security-opt",
        "no-new-privileges",
        "--security-opt",
        "seccomp=unconfined",
        "--read-only",
        "--user",
        "nobody",
        "--ulimit",
        "nofile=1024:2048",
        "--sysctl",
        "net.core.somaxconn=1024",
        "--init",
        "--entrypoint",
        "/bin/sh -c",
        "--stop-signal",
        "SIGQUIT",
        "--log-opt",
        "max-file=2",
    ]))
    .expect("valid");
    let text = pretty(&Service {
        id: "s1".into(),
        spec: Some(spec),
        ..Default::default()
    });
    for line in [
        " Entrypoint:    /bin/sh -c\n",
        " User:          nobody\n",
        " Stop Signal:   SIGQUIT\n",
        " Read Only:     true\n",
        " Init:          true\n",
        " Devices:       /dev/fuse:/dev/fuse:rwm\n",
        " Ulimits:       nofile=1024:2048\n",
        " Sysctls:       net.core.somaxconn=1024\n",
        "Capabilities:\n Add:           CAP_NET_ADMIN\n Drop:          ALL\n",
        "Security Options:\n No New Privileges: true\n Seccomp:       unconfined\n",
        "Log Driver:\n Name:          json-file\n LogOpts:\n  max-file:     2\n",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
    let plain = pretty(&Service {
        spec: Some(build_spec(&create_args(&[])).expect("valid")),
        ..Default::default()
    });
    for absent in [
        "Capabilities",
        "Security Options",
        "Log Driver",
        "Privileged",
        "Init",
    ] {
        assert!(!plain.contains(absent), "{absent} in\n{plain}");
    }
}

#[test]
fn hosts_are_added_and_removed_like_docker() {
    let a = create_args(&["--host", "db.example:10.0.0.5", "--host", "v6=::1"]);
    let mut spec = build_spec(&a).expect("builds");
    assert_eq!(
        container(&spec).hosts,
        strings(&["10.0.0.5 db.example", "::1 v6"])
    );
    let u = update_args(&["--host-rm", "v6", "--host-add", "cache:10.0.0.6"]);
    apply_update(&mut spec, &u, &NetworkIds::new()).expect("applies");
    assert_eq!(
        container(&spec).hosts,
        strings(&["10.0.0.5 db.example", "10.0.0.6 cache"])
    );
    let u = update_args(&["--host-rm", "db.example:10.9.9.9"]);
    let e = apply_update(&mut spec, &u, &NetworkIds::new()).expect_err("no such line");
    assert!(e.to_string().contains("--host-rm"), "{e}");
    let bad = ["shoalctl", "service", "create", "--host", "db", "busybox"];
    assert!(crate::cli::Cli::try_parse_from(bad).is_err());
}
