//! Confinement options (capabilities, seccomp, read-only root...), through the real shoalctl.

use shoal_proto::v1::*;

use crate::harness::*;

fn container_of(spec: &ServiceSpec) -> ContainerSpec {
    spec.task
        .as_ref()
        .and_then(|t| t.container.clone())
        .expect("a container spec")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confinement_against_a_fake_manager() {
    let served = serve("confinement").await;
    let conf = served.conf.clone();
    let fake = served.fake.clone();
    let profile = served.dir.join("profile.json");
    std::fs::write(&profile, br#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).expect("profile");
    let seccomp = format!("seccomp={}", profile.display());

    // create sends every knob in the spec
    let r = shoalctl(
        &conf,
        &[
            "service",
            "create",
            "--name",
            "locked",
            "-d",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "net_bind_service",
            "--device",
            "/dev/fuse:/dev/fuse:rw",
            "--security-opt",
            "no-new-privileges",
            "--security-opt",
            &seccomp,
            "--read-only",
            "-u",
            "1000:1000",
            "--group-add",
            "audio",
            "--ulimit",
            "nofile=1024:2048",
            "--sysctl",
            "net.core.somaxconn=1024",
            "--init",
            "--hostname",
            "locked",
            "-w",
            "/srv",
            "--entrypoint",
            "/bin/sh -c",
            "--stop-signal",
            "SIGQUIT",
            "--log-driver",
            "json-file",
            "--log-opt",
            "max-size=1m",
            "--log-opt",
            "max-file=2",
            "busybox",
            "echo hi",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let spec = fake.lock().services[0].spec.clone().expect("spec");
    let c = container_of(&spec);
    assert_eq!(c.capability_add, vec!["CAP_NET_BIND_SERVICE"]);
    assert_eq!(c.capability_drop, vec!["ALL"]);
    assert_eq!(
        c.devices,
        vec![DeviceMapping {
            path_on_host: "/dev/fuse".into(),
            path_in_container: "/dev/fuse".into(),
            cgroup_permissions: "rw".into(),
        }]
    );
    let p = c.privileges.clone().expect("privileges");
    assert!(p.no_new_privileges);
    assert_eq!(
        p.seccomp,
        Some(SeccompOpts {
            mode: "custom".into(),
            profile: br#"{"defaultAction":"SCMP_ACT_ALLOW"}"#.to_vec(),
        })
    );
    assert!(c.read_only && c.init && !c.privileged);
    assert_eq!((c.user.as_str(), c.dir.as_str()), ("1000:1000", "/srv"));
    assert_eq!(c.groups, vec!["audio"]);
    assert_eq!(c.ulimits.len(), 1);
    assert_eq!(c.sysctls.len(), 1);
    assert_eq!(c.command, vec!["/bin/sh", "-c"]);
    assert_eq!(c.args, vec!["echo hi"]);
    assert_eq!(c.stop_signal, "SIGQUIT");
    let log = spec
        .task
        .as_ref()
        .and_then(|t| t.log_driver.clone())
        .expect("log");
    assert_eq!(log.name, "json-file");
    assert_eq!(log.options.len(), 2);

    // inspect shows them with docker's names
    let r = shoalctl(&conf, &["service", "inspect", "locked"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).expect("inspect json");
    let cs = &doc[0]["Spec"]["TaskTemplate"]["ContainerSpec"];
    assert_eq!(cs["CapabilityDrop"], serde_json::json!(["ALL"]));
    assert_eq!(cs["Privileges"]["NoNewPrivileges"], true);
    assert_eq!(cs["Privileges"]["Seccomp"]["Mode"], "custom");
    assert_eq!(cs["Ulimits"][0]["Name"], "nofile");
    assert_eq!(cs["StopSignal"], "SIGQUIT");
    assert_eq!(
        doc[0]["Spec"]["TaskTemplate"]["LogDriver"]["Options"]["max-file"],
        "2"
    );

    // update sends the changed spec, and the changed template makes new tasks
    let version = fake.lock().services[0].spec_version;
    let r = shoalctl(
        &conf,
        &[
            "service",
            "update",
            "-d",
            "--cap-add",
            "NET_RAW",
            "--cap-drop",
            "NET_BIND_SERVICE",
            "--privileged",
            "--read-only=false",
            "--device-rm",
            "/dev/fuse",
            "--security-opt",
            "seccomp=unconfined",
            "--group-rm",
            "audio",
            "--ulimit-add",
            "nproc=64",
            "--sysctl-rm",
            "net.core.somaxconn",
            "--user",
            "",
            "--entrypoint",
            "",
            "--stop-signal",
            "",
            "--log-opt",
            "max-file=4",
            "locked",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "locked\n");
    let sent = sent_spec(&fake);
    let c = container_of(&sent);
    assert_eq!(c.capability_add, vec!["CAP_NET_RAW"]);
    assert_eq!(c.capability_drop, vec!["ALL"]);
    assert!(c.privileged && !c.read_only && c.init);
    assert!(c.devices.is_empty() && c.groups.is_empty() && c.sysctls.is_empty());
    let p = c.privileges.clone().expect("privileges");
    assert!(p.no_new_privileges, "options not named keep their value");
    assert_eq!(
        p.seccomp,
        Some(SeccompOpts {
            mode: "unconfined".into(),
            profile: Vec::new(),
        })
    );
    assert_eq!(c.ulimits.len(), 2);
    assert!(c.user.is_empty() && c.command.is_empty() && c.stop_signal.is_empty());
    let log = sent
        .task
        .as_ref()
        .and_then(|t| t.log_driver.clone())
        .expect("log");
    assert_eq!(log.options.get("max-file").map(String::as_str), Some("4"));
    assert_eq!(log.options.get("max-size").map(String::as_str), Some("1m"));
    assert_eq!(fake.lock().services[0].spec_version, version + 1);

    // bad values: one line naming the flag, nothing sent
    let updates = fake.lock().updates.len();
    let missing = served.dir.join("missing.json");
    let missing_opt = format!("seccomp={}", missing.display());
    for (args, want) in [
        (
            vec!["service", "create", "--name", "x", "--security-opt", &missing_opt, "busybox"],
            format!(
                "Error: --security-opt: cannot read seccomp profile {}: No such file or directory (os error 2)\n",
                missing.display()
            ),
        ),
        (
            vec!["service", "create", "--name", "x", "--security-opt", "apparmor=unconfined", "busybox"],
            "Error: --security-opt: unsupported security option \"apparmor\": only no-new-privileges and seccomp are supported\n".into(),
        ),
        (
            vec!["service", "create", "--name", "x", "--cap-add", "FLY", "busybox"],
            "Error: --cap-add: unknown capability \"FLY\" (use names like NET_ADMIN or CAP_NET_ADMIN, or ALL)\n".into(),
        ),
        (
            vec!["service", "create", "--name", "x", "--sysctl", "kernel.panic=1", "busybox"],
            "Error: --sysctl: kernel.panic is not a namespaced sysctl: it would change the whole node, not just the container (allowed: net.*, fs.mqueue.*, kernel.msg*, kernel.sem, kernel.shm*)\n".into(),
        ),
        (
            vec!["service", "update", "--log-driver", "syslog", "locked"],
            "Error: --log-driver: unsupported log driver \"syslog\" (only json-file is supported)\n".into(),
        ),
        (
            vec!["service", "update", "--device-rm", "/dev/sda", "locked"],
            "Error: --device-rm: service locked has no device /dev/sda\n".into(),
        ),
    ] {
        let r = shoalctl(&conf, &args).await;
        assert_eq!((r.code, r.stderr.as_str()), (1, want.as_str()), "{args:?}");
    }
    assert_eq!(fake.lock().updates.len(), updates);
    assert_eq!(fake.lock().services.len(), 1);

    // a client that bypasses shoalctl is refused by the manager's validation
    let mut bad = sent.clone();
    if let Some(c) = bad.task.as_mut().and_then(|t| t.container.as_mut()) {
        c.capability_add = vec!["RESET".into()];
    }
    let e = shoal_proto::spec::validate_service(&bad).expect_err("refused");
    assert_eq!(
        e.to_string(),
        "--cap-add: unknown capability \"RESET\" (use names like NET_ADMIN or CAP_NET_ADMIN, or ALL)"
    );

    served.stop().await;
}
