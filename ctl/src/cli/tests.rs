//! Parsing of the whole command line.

use std::time::Duration;

use clap::CommandFactory;
use shoal_proto::v1::{DeviceMapping, PortConfig, Ulimit};

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("shoalctl").chain(args.iter().copied()))
}

#[test]
fn cli_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn create_takes_command_and_args_after_image() {
    let cli = parse(&[
        "service", "create", "--name", "x", "busybox", "sh", "-c", "echo hi",
    ])
    .expect("parses");
    let Command::Service(ServiceCommand::Create(a)) = cli.command else {
        panic!("not create")
    };
    assert_eq!(a.image, "busybox");
    assert_eq!(a.args, vec!["sh", "-c", "echo hi"]);
    assert_eq!(a.replicas, None);
    assert_eq!(a.restart_delay, 5_000_000_000);
    assert_eq!(a.timeout, Duration::from_secs(120));
    assert_eq!(a.restart_condition, RestartCondition::Any);
}

/// `service scale` input and what parse_scale makes of it.
type ScaleCase = (&'static str, Result<(String, u64), &'static str>);

#[test]
fn limits_are_refused_with_the_flag_and_the_limit() {
    let e = parse(&[
        "service",
        "create",
        "--name",
        "x",
        "--replicas",
        "100000000000",
        "busybox",
    ])
    .expect_err("over the limit");
    assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
    assert!(
        e.to_string().contains(
            "for '--replicas <N>': 100000000000 is more than the limit of 100000 replicas per service"
        ),
        "{e}"
    );
    #[rustfmt::skip]
    let replicas: [(&str, Result<u64, &str>); 5] = [
        ("100000", Ok(100_000)),
        ("100001", Err("100001 is more than the limit of 100000 replicas per service")),
        ("99999999999999999999999999", Err("99999999999999999999999999 is more than the limit of 100000 replicas per service")),
        ("-1", Err("must be 0 or more")),
        ("ten", Err("invalid number \"ten\": expected a whole number, 0 or more")),
    ];
    for (s, want) in replicas {
        assert_eq!(parse_replicas(s), want.map_err(String::from), "{s}");
    }
    #[rustfmt::skip]
    let scales: [ScaleCase; 4] = [
        ("web=100000", Ok(("web".into(), 100_000))),
        ("web=100000000000", Err("\"web=100000000000\": replicas 100000000000 is more than the limit of 100000 replicas per service")),
        ("web=-1", Err("\"web=-1\": replicas must be 0 or more")),
        ("web=x", Err("\"web=x\": replicas invalid number \"x\": expected a whole number, 0 or more")),
    ];
    for (s, want) in scales {
        assert_eq!(parse_scale(s), want.map_err(String::from), "{s}");
    }
    let key = |n: usize| "k".repeat(n);
    assert!(parse_label(&format!("{}=v", key(128))).is_ok());
    assert_eq!(
        parse_label(&format!("{}=v", key(129))),
        Err(format!(
            "label key \"{}\"… is 129 bytes, more than the limit of 128 bytes",
            key(24)
        ))
    );
    assert!(parse_label(&format!("zone={}", "v".repeat(4096))).is_ok());
    assert_eq!(
        parse_label(&format!("zone={}", "v".repeat(4097))),
        Err("the value of label \"zone\" is 4097 bytes, more than the limit of 4096 bytes".into())
    );
    assert!(parse_label_key(&key(129)).is_err_and(|e| e.contains("limit of 128 bytes")));
    assert!(parse_env(&format!("A={}", "x".repeat(32 * 1024 - 2))).is_ok());
    assert!(
        parse_env(&format!("A={}", "x".repeat(32 * 1024 - 1))).is_err_and(
            |e| e.ends_with("is 32769 bytes, more than the limit of 32768 bytes per entry")
        )
    );
    let e = parse(&[
        "node",
        "update",
        "--label-add",
        &format!("{}=v", key(200)),
        "n1",
    ])
    .expect_err("key over the limit");
    assert!(
        e.to_string().contains("for '--label-add <K=V>': label key"),
        "{e}"
    );
}

#[test]
fn negative_replicas_reach_the_value_parser() {
    for args in [
        &[
            "service",
            "create",
            "--name",
            "x",
            "--replicas",
            "-1",
            "busybox",
        ][..],
        &[
            "service",
            "create",
            "--name",
            "x",
            "--replicas=-1",
            "busybox",
        ][..],
    ] {
        let e = parse(args).expect_err("must fail");
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(e.to_string().contains("must be 0 or more"), "{e}");
    }
}

#[test]
fn format_after_the_verb() {
    let cli = parse(&["service", "ls", "--format", "json"]).expect("parses");
    let Command::Service(ServiceCommand::Ls(a)) = cli.command else {
        panic!("not ls")
    };
    assert!(!a.quiet);
    assert_eq!(cli.format, Format::Json);
    let cli = parse(&["--format", "json", "node", "ls"]).expect("parses");
    assert_eq!(cli.format, Format::Json);
}

fn create(args: &[&str]) -> CreateArgs {
    let mut all = vec!["service", "create", "--name", "x"];
    all.extend_from_slice(args);
    all.push("busybox");
    match parse(&all).expect("parses").command {
        Command::Service(ServiceCommand::Create(a)) => *a,
        _ => panic!("not create"),
    }
}

fn update(args: &[&str]) -> UpdateArgs {
    let mut all = vec!["service", "update"];
    all.extend_from_slice(args);
    all.push("web");
    match parse(&all).expect("parses").command {
        Command::Service(ServiceCommand::Update(a)) => *a,
        _ => panic!("not update"),
    }
}

#[test]
fn confinement_flags_of_create() {
    let a = create(&[
        "--cap-add",
        "net_admin",
        "--cap-add",
        "ALL",
        "--cap-drop",
        "CAP_MKNOD",
        "--privileged",
        "--device",
        "/dev/fuse",
        "--device",
        "/dev/sda:/dev/xvda:r",
        "--device",
        "/dev/sdb:rw",
        "--security-opt",
        "no-new-privileges",
        "--security-opt",
        "seccomp=unconfined",
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
        "h1",
        "-w",
        "/srv",
        "--entrypoint",
        "/bin/sh -c 'echo hi'",
        "--stop-signal",
        "SIGQUIT",
        "--log-driver",
        "json-file",
        "--log-opt",
        "max-size=1m",
        "--log-opt",
        "max-file=2",
    ]);
    assert_eq!(a.cap_add, vec!["CAP_NET_ADMIN", "ALL"]);
    assert_eq!(a.cap_drop, vec!["CAP_MKNOD"]);
    assert!(a.privileged && a.read_only && a.init);
    let dev = |h: &str, c: &str, p: &str| DeviceMapping {
        path_on_host: h.into(),
        path_in_container: c.into(),
        cgroup_permissions: p.into(),
    };
    assert_eq!(
        a.device,
        vec![
            dev("/dev/fuse", "/dev/fuse", "rwm"),
            dev("/dev/sda", "/dev/xvda", "r"),
            dev("/dev/sdb", "/dev/sdb", "rw"),
        ]
    );
    assert_eq!(
        a.security_opt,
        vec![
            SecurityOpt::NoNewPrivileges(true),
            SecurityOpt::SeccompUnconfined
        ]
    );
    assert_eq!(a.user.as_deref(), Some("1000:1000"));
    assert_eq!(a.group_add, vec!["audio"]);
    assert_eq!(
        a.ulimit,
        vec![Ulimit {
            name: "nofile".into(),
            soft: 1024,
            hard: 2048
        }]
    );
    assert_eq!(a.sysctl, vec![("net.core.somaxconn".into(), "1024".into())]);
    assert_eq!(a.hostname.as_deref(), Some("h1"));
    assert_eq!(a.workdir.as_deref(), Some("/srv"));
    assert_eq!(
        a.entrypoint,
        Some(Entrypoint(vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo hi".into()
        ]))
    );
    assert_eq!(a.stop_signal.as_deref(), Some("SIGQUIT"));
    assert_eq!(a.log_driver.as_deref(), Some("json-file"));
    assert_eq!(a.log_opt.len(), 2);

    let plain = create(&[]);
    assert!(!plain.privileged && !plain.read_only && !plain.init);
    assert!(plain.entrypoint.is_none() && plain.security_opt.is_empty());
    let off = create(&["--privileged=false", "--read-only=true", "--init=false"]);
    assert!(!off.privileged && off.read_only && !off.init);
}

#[test]
fn confinement_flags_of_update() {
    let a = update(&[
        "--cap-add",
        "RESET",
        "--cap-add",
        "sys_time",
        "--cap-drop",
        "net_raw",
        "--privileged",
        "--read-only=false",
        "--init=true",
        "--device",
        "/dev/fuse",
        "--device-add",
        "/dev/kvm",
        "--device-rm",
        "/dev/sda",
        "--security-opt",
        "no-new-privileges=false",
        "--security-opt",
        "seccomp=/tmp/p.json",
        "--user",
        "",
        "--group-add",
        "video",
        "--group-rm",
        "audio",
        "--ulimit",
        "core=0",
        "--ulimit-add",
        "nproc=-1",
        "--ulimit-rm",
        "nofile",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "--sysctl-add",
        "kernel.shmmax=1",
        "--sysctl-rm",
        "net.core.somaxconn",
        "--hostname",
        "",
        "--workdir",
        "/app",
        "--entrypoint",
        "",
        "--stop-signal",
        "",
        "--log-opt",
        "max-file=5",
    ]);
    assert_eq!(a.cap_add, vec!["RESET", "CAP_SYS_TIME"]);
    assert_eq!(a.cap_drop, vec!["CAP_NET_RAW"]);
    assert_eq!(
        (a.privileged, a.read_only, a.init),
        (Some(true), Some(false), Some(true))
    );
    assert_eq!(a.device_add.len(), 2);
    assert_eq!(a.device_rm, vec!["/dev/sda"]);
    assert_eq!(
        a.security_opt,
        vec![
            SecurityOpt::NoNewPrivileges(false),
            SecurityOpt::SeccompProfile(PathBuf::from("/tmp/p.json"))
        ]
    );
    assert_eq!(a.user.as_deref(), Some(""));
    assert_eq!(a.ulimit_add.len(), 2);
    assert_eq!(a.ulimit_rm, vec!["nofile"]);
    assert_eq!(a.sysctl_add.len(), 2);
    assert_eq!(a.entrypoint, Some(Entrypoint(Vec::new())));
    assert_eq!(a.stop_signal.as_deref(), Some(""));
    assert!(!a.changes_nothing());
    // a bare optional bool does not swallow the service name
    let a = update(&["--privileged"]);
    assert_eq!(a.privileged, Some(true));
    assert!(!a.changes_nothing());
    for flag in [
        "--init",
        "--read-only",
        "--hostname=h",
        "--cap-drop=ALL",
        "--log-driver=json-file",
    ] {
        assert!(!update(&[flag]).changes_nothing(), "{flag}");
    }
}

#[test]
fn confinement_value_parsers() {
    assert_eq!(parse_capability("cap_chown"), Ok("CAP_CHOWN".into()));
    assert_eq!(parse_capability("all"), Ok("ALL".into()));
    assert!(parse_capability("RESET").is_err());
    assert_eq!(parse_capability_update("reset"), Ok("RESET".into()));
    assert_eq!(
        parse_security_opt("no-new-privileges:true"),
        Ok(SecurityOpt::NoNewPrivileges(true))
    );
    assert_eq!(
        parse_security_opt("seccomp=default"),
        Ok(SecurityOpt::SeccompDefault)
    );
    assert_eq!(
        parse_security_opt("seccomp:unconfined"),
        Ok(SecurityOpt::SeccompUnconfined)
    );
    assert_eq!(
        parse_device("/dev/sda:/dev/xvda"),
        Ok(DeviceMapping {
            path_on_host: "/dev/sda".into(),
            path_in_container: "/dev/xvda".into(),
            cgroup_permissions: "rwm".into(),
        })
    );
    assert_eq!(parse_ulimit("nproc=-1").map(|u| u.hard), Ok(-1));
    assert_eq!(parse_stop_signal("9"), Ok("9".into()));
    assert_eq!(parse_stop_signal_or_reset(""), Ok(String::new()));
    assert_eq!(
        parse_log_opt("max-size=10M"),
        Ok(("max-size".into(), "10M".into()))
    );
    assert_eq!(
        parse_entrypoint(r#"python -m "http.server" 8000"#),
        Ok(Entrypoint(vec![
            "python".into(),
            "-m".into(),
            "http.server".into(),
            "8000".into()
        ]))
    );
}

#[test]
fn value_parsers() {
    assert_eq!(parse_scale("web=3"), Ok(("web".into(), 3)));
    assert!(parse_scale("web=-1").is_err_and(|e| e.contains("must be 0 or more")));
    assert!(parse_scale("web").is_err());
    assert_eq!(parse_tail("all"), Ok(-1));
    assert_eq!(parse_tail("10"), Ok(10));
    assert!(parse_tail("-3").is_err());
    assert!(parse_size("lots").is_err_and(|e| e.starts_with("invalid size \"lots\"")));
    assert_eq!(parse_size("64M"), Ok(64 << 20));
    assert!(parse_env("NOEQ").is_err());
    assert_eq!(parse_replicas("0"), Ok(0));
    assert_eq!(
        parse_placement_pref("spread=node.labels.zone"),
        Ok("spread=node.labels.zone".into())
    );
    assert!(parse_placement_pref("pack=node.labels.zone").is_err());
    assert!(parse_placement_pref("spread=node.colour").is_err());
    assert_eq!(parse_label("zone=a"), Ok(("zone".into(), "a".into())));
    assert_eq!(parse_label("ssd"), Ok(("ssd".into(), String::new())));
    assert!(parse_label("=a").is_err());
    assert!(parse_label_key("a b").is_err());
}

#[test]
fn publish_forms() {
    let p = parse_publish("8080:80").expect("short");
    assert_eq!(
        (
            p.published_port,
            p.target_port,
            p.protocol.as_str(),
            p.publish_mode.as_str()
        ),
        (8080, 80, "tcp", "ingress")
    );
    let p = parse_publish("53:5353/udp").expect("udp");
    assert_eq!(
        (p.published_port, p.target_port, p.protocol.as_str()),
        (53, 5353, "udp")
    );
    let p = parse_publish("80").expect("target only");
    assert_eq!((p.published_port, p.target_port), (0, 80));
    let p = parse_publish("published=8080,target=80,protocol=udp,mode=host").expect("long");
    assert_eq!(
        (
            p.published_port,
            p.target_port,
            p.protocol.as_str(),
            p.publish_mode.as_str()
        ),
        (8080, 80, "udp", "host")
    );
    let p = parse_publish("target=80").expect("long, no published");
    assert_eq!((p.published_port, p.publish_mode.as_str()), (0, "ingress"));
    for (bad, why) in [
        ("published=8080", "no target port"),
        ("8080:80/sctp", "unknown protocol"),
        ("mode=local,target=80", "unknown mode"),
        ("published=8080,target=80,colour=red", "unknown key"),
        ("127.0.0.1:8080:80", "binding to one address"),
        ("8080-8081:80-81", "port ranges"),
        ("web:80", "invalid published port"),
        ("published=8080,target", "not KEY=VALUE"),
    ] {
        let e = parse_publish(bad).expect_err(bad);
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn publish_rm_forms() {
    let port = |published, target, protocol: &str, mode: &str| PortConfig {
        published_port: published,
        target_port: target,
        protocol: protocol.into(),
        publish_mode: mode.into(),
        ..Default::default()
    };
    let tcp = port(8080, 80, "tcp", "ingress");
    let udp = port(8080, 80, "udp", "host");
    let m = parse_publish_rm("8080").expect("bare");
    assert_eq!(m.published, Some(8080));
    assert!(m.matches(&tcp) && m.matches(&udp));
    let m = parse_publish_rm("8080/udp").expect("proto");
    assert!(!m.matches(&tcp) && m.matches(&udp));
    let m = parse_publish_rm("published=8080,protocol=tcp").expect("long");
    assert!(m.matches(&tcp) && !m.matches(&udp));
    assert!(m.matches(&port(8080, 80, "", "")), "empty protocol is tcp");
    let m = parse_publish_rm("8080:81").expect("both");
    assert!(!m.matches(&tcp));
    assert_eq!(m.to_string(), "published=8080,target=81");
    assert!(parse_publish_rm("protocol=tcp").is_err());
}

#[test]
fn network_forms() {
    let n = parse_network("front").expect("name");
    assert_eq!((n.target.as_str(), n.aliases.len()), ("front", 0));
    let n = parse_network("name=front,alias=web1,alias=www").expect("long");
    assert_eq!(n.target, "front");
    assert_eq!(n.aliases, vec!["web1", "www"]);
    assert_eq!(parse_network("target=back").expect("target").target, "back");
    assert!(parse_network("alias=x").is_err_and(|e| e.contains("no name=NETWORK")));
    assert!(parse_network("name=a,driver-opt=x").is_err_and(|e| e.contains("unknown key")));
    assert!(parse_network("").is_err());
    assert_eq!(
        parse_option("encrypted"),
        Ok(("encrypted".into(), String::new()))
    );
    assert_eq!(parse_option("mtu=1400"), Ok(("mtu".into(), "1400".into())));
    assert!(parse_option("=x").is_err());
}

#[test]
fn network_and_update_commands() {
    let cli = parse(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.5.0.0/24",
        "--opt",
        "encrypted",
        "-o",
        "mtu=1400",
        "--attachable",
        "--label",
        "team=a",
        "front",
    ])
    .expect("parses");
    let Command::Network(NetworkCommand::Create(a)) = cli.command else {
        panic!("not network create")
    };
    assert_eq!(a.driver, NetworkDriver::Overlay);
    assert_eq!(a.subnet.as_deref(), Some("10.5.0.0/24"));
    assert_eq!(a.opt.len(), 2);
    assert!(a.attachable);
    assert_eq!(a.name, "front");
    assert!(parse(&["network", "create", "-d", "macvlan", "x"]).is_err());
    let cli = parse(&["network", "ls", "-q"]).expect("ls");
    assert!(matches!(cli.command, Command::Network(NetworkCommand::Ls(ref a)) if a.quiet));
    let cli = parse(&[
        "service",
        "update",
        "--publish-add",
        "9090:90",
        "--publish-rm",
        "8080",
        "--network-add",
        "name=back,alias=api",
        "--network-rm",
        "front",
        "--image",
        "nginx",
        "-d",
        "web",
    ])
    .expect("update");
    let Command::Service(ServiceCommand::Update(a)) = cli.command else {
        panic!("not update")
    };
    assert_eq!(a.publish_add[0].published_port, 9090);
    assert_eq!(a.publish_rm[0].published, Some(8080));
    assert_eq!(a.network_add[0].aliases, vec!["api"]);
    assert_eq!(a.network_rm, vec!["front"]);
    assert!(a.detach && !a.changes_nothing());
    let cli = parse(&["service", "update", "web"]).expect("bare update parses");
    let Command::Service(ServiceCommand::Update(a)) = cli.command else {
        panic!("not update")
    };
    assert!(a.changes_nothing());
}

#[test]
fn node_update_and_rm() {
    let cli = parse(&[
        "node",
        "update",
        "--availability",
        "drain",
        "--label-add",
        "zone=a",
        "--label-add",
        "disk=ssd",
        "--label-rm",
        "old",
        "w1",
    ])
    .expect("parses");
    let Command::Node(NodeCommand::Update(a)) = cli.command else {
        panic!("not update")
    };
    assert_eq!(a.availability, Some(Availability::Drain));
    assert_eq!(a.label_add.len(), 2);
    assert_eq!(a.label_rm, vec!["old"]);
    assert_eq!(a.node, "w1");
    let cli = parse(&["node", "rm", "-f", "w1", "w2"]).expect("parses");
    let Command::Node(NodeCommand::Rm(a)) = cli.command else {
        panic!("not rm")
    };
    assert!(a.force);
    assert_eq!(a.nodes, vec!["w1", "w2"]);
    assert!(parse(&["node", "update", "--availability", "gone", "w1"]).is_err());
}

#[test]
fn config_before_the_noun_is_admin_conf_after_it_a_service_config() {
    let cli = parse(&[
        "--config",
        "/etc/admin.conf",
        "service",
        "create",
        "--name",
        "web",
        "--config",
        "source=nginx_conf,target=/etc/nginx/nginx.conf",
        "--secret",
        "db_pass",
        "--mount",
        "type=volume,src=data,dst=/data",
        "--with-registry-auth",
        "--hostname",
        "{{.Service.Name}}-{{.Task.Slot}}",
        "nginx",
    ])
    .expect("parses");
    assert_eq!(
        cli.config.as_deref(),
        Some(std::path::Path::new("/etc/admin.conf"))
    );
    let Command::Service(ServiceCommand::Create(a)) = cli.command else {
        panic!("not create")
    };
    assert_eq!(a.config_ref[0].config_name, "nginx_conf");
    assert_eq!(a.secret[0].secret_name, "db_pass");
    assert_eq!(a.mount[0].target, "/data");
    assert!(a.shared.with_registry_auth);
    assert_eq!(
        a.hostname.as_deref(),
        Some("{{.Service.Name}}-{{.Task.Slot}}")
    );
}

#[test]
fn update_takes_add_and_rm_of_secrets_configs_and_mounts() {
    let cli = parse(&[
        "service",
        "update",
        "--secret-add",
        "source=pw2,target=pw",
        "--secret-rm",
        "pw1",
        "--config-add",
        "c2",
        "--config-rm",
        "c1",
        "--mount-add",
        "type=tmpfs,dst=/tmp",
        "--mount-rm",
        "/old",
        "web",
    ])
    .expect("parses");
    let Command::Service(ServiceCommand::Update(a)) = cli.command else {
        panic!("not update")
    };
    assert_eq!(a.secret_rm, vec!["pw1"]);
    assert_eq!(a.config_add[0].config_name, "c2");
    assert_eq!(a.mount_rm, vec!["/old"]);
    assert!(!a.changes_nothing());
    assert!(a.check().is_ok());
}

#[test]
fn secret_config_volume_stack_and_login_commands_parse() {
    let ok = |args: &[&str]| parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let cli = ok(&["secret", "create", "--label", "a=b", "pw", "-"]);
    let Command::Secret(SecretCommand::Create(a)) = cli.command else {
        panic!("not secret create")
    };
    assert_eq!((a.name.as_str(), a.file.to_str()), ("pw", Some("-")));
    assert_eq!(a.label, vec![("a".to_string(), "b".to_string())]);
    ok(&["secret", "ls", "-q"]);
    ok(&["secret", "inspect", "a", "b"]);
    ok(&["secret", "rm", "a"]);
    ok(&["config", "create", "c", "/etc/hosts"]);
    ok(&["config", "ls", "--format", "json"]);
    ok(&["config", "inspect", "c"]);
    ok(&["config", "rm", "c"]);
    ok(&["volume", "ls", "--node", "host1", "-q"]);
    ok(&["volume", "inspect", "--node", "host1", "data"]);
    ok(&["volume", "rm", "-f", "--node", "host1", "data", "more"]);
    let cli = ok(&["volume", "prune", "-a", "-f"]);
    let Command::Volume(VolumeCommand::Prune(p)) = cli.command else {
        panic!("not prune")
    };
    assert!(p.all && p.force && p.node.is_none());
    let cli = ok(&[
        "stack",
        "deploy",
        "-c",
        "a.yml",
        "-c",
        "b.yml",
        "--prune",
        "--resolve-image",
        "never",
        "--with-registry-auth",
        "app",
    ]);
    let Command::Stack(StackCommand::Deploy(d)) = cli.command else {
        panic!("not deploy")
    };
    assert_eq!(d.files.compose_files.len(), 2);
    assert!(d.prune && d.with_registry_auth && d.detach);
    assert_eq!(d.resolve_image, ResolveImage::Never);
    assert_eq!(d.stack, "app");
    ok(&["stack", "ls"]);
    ok(&["stack", "services", "-q", "app"]);
    ok(&["stack", "ps", "--no-trunc", "app"]);
    ok(&["stack", "rm", "app", "other"]);
    ok(&["stack", "config", "-c", "a.yml", "-c", "b.yml"]);
    assert!(parse(&["stack", "deploy", "app"]).is_err());
    let cli = ok(&["login", "-u", "me", "--password-stdin", "127.0.0.1:5000"]);
    let Command::Login(l) = cli.command else {
        panic!("not login")
    };
    assert_eq!(l.registry.as_deref(), Some("127.0.0.1:5000"));
    assert!(l.password_stdin);
    assert!(parse(&["login", "-p", "x", "--password-stdin"]).is_err());
    ok(&["logout"]);
    ok(&["logout", "127.0.0.1:5000"]);
}
