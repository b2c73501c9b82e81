//! Tests of spec validation: limits, names, placement, confinement, logs, networks, ports.

use std::net::Ipv4Addr;

use super::*;
use crate::limits::MAX_NETWORK_OPTIONS;
use crate::v1::{
    ContainerSpec, DeviceMapping, Driver, EndpointSpec, NetworkAttachmentConfig, NetworkSpec,
    PortConfig, TaskSpec,
};

fn spec(name: &str) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        replicas: 1,
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// (what the case changes, the error it must give or None).
type Case = (Box<dyn Fn(&mut ServiceSpec)>, Option<String>);

/// (what the case changes in a network spec, the error it must give or None).
type NetCase = (Box<dyn Fn(&mut NetworkSpec)>, Option<&'static str>);

fn env_of(s: &mut ServiceSpec) -> &mut Vec<String> {
    &mut s
        .task
        .as_mut()
        .and_then(|t| t.container.as_mut())
        .expect("test spec has a container")
        .env
}

#[test]
fn service_limits_just_under_pass_just_over_fail() {
    let labels = |n: usize| -> std::collections::HashMap<String, String> {
        (0..n).map(|i| (format!("k{i:03}"), "v".into())).collect()
    };
    let long_env = |bytes: usize| format!("K={}", "x".repeat(bytes - 2));
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (Box::new(|s| s.replicas = MAX_REPLICAS), None),
        (Box::new(|s| s.replicas = MAX_REPLICAS + 1),
         Some("--replicas: 100001 is more than the limit of 100000 replicas per service".into())),
        (Box::new(|s| s.replicas = 100_000_000_000),
         Some("--replicas: 100000000000 is more than the limit of 100000 replicas per service".into())),
        (Box::new(move |s| s.labels = labels(MAX_LABELS)), None),
        (Box::new(move |s| s.labels = labels(MAX_LABELS + 1)),
         Some("--label: 65 labels are more than the limit of 64 per object".into())),
        (Box::new(|s| { s.labels.insert("k".repeat(MAX_LABEL_KEY_BYTES), "v".into()); }), None),
        (Box::new(|s| { s.labels.insert("k".repeat(MAX_LABEL_KEY_BYTES + 1), "v".into()); }),
         Some(format!("--label: label key \"{}\"… is 129 bytes, more than the limit of 128 bytes", "k".repeat(24)))),
        (Box::new(|s| { s.labels.insert("zone".into(), "v".repeat(MAX_LABEL_VALUE_BYTES)); }), None),
        (Box::new(|s| { s.labels.insert("zone".into(), "v".repeat(MAX_LABEL_VALUE_BYTES + 1)); }),
         Some("--label: the value of label \"zone\" is 4097 bytes, more than the limit of 4096 bytes".into())),
        (Box::new(|s| *env_of(s) = vec!["A=1".into(); MAX_ENV_ENTRIES]), None),
        (Box::new(|s| *env_of(s) = vec!["A=1".into(); MAX_ENV_ENTRIES + 1]),
         Some("--env: 1001 entries are more than the limit of 1000".into())),
        (Box::new(move |s| *env_of(s) = vec![long_env(MAX_ENV_ENTRY_BYTES)]), None),
        (Box::new(move |s| *env_of(s) = vec![long_env(MAX_ENV_ENTRY_BYTES + 1)]),
         Some(format!("--env: \"K={}\"… is 32769 bytes, more than the limit of 32768 bytes per entry", "x".repeat(22)))),
        // 15 entries of 32 KiB stay under the spec limit, 17 go over it.
        (Box::new(move |s| *env_of(s) = vec![long_env(MAX_ENV_ENTRY_BYTES); 15]), None),
        (Box::new(move |s| *env_of(s) = vec![long_env(MAX_ENV_ENTRY_BYTES); 17]),
         Some("spec: the service spec is 557148 bytes encoded, more than the limit of 524288 bytes (512 KiB)".into())),
    ];
    for (i, (edit, want)) in cases.into_iter().enumerate() {
        let mut s = spec("web");
        edit(&mut s);
        let got = validate_service(&s).err().map(|e| e.to_string());
        assert_eq!(got, want, "case {i}");
    }
}

#[test]
fn network_limits_just_under_pass_just_over_fail() {
    let many = |n: usize| -> std::collections::HashMap<String, String> {
        (0..n).map(|i| (format!("k{i:03}"), "v".into())).collect()
    };
    #[rustfmt::skip]
    let cases: Vec<NetCase> = vec![
        (Box::new(move |n| n.labels = many(MAX_LABELS)), None),
        (Box::new(move |n| n.labels = many(MAX_LABELS + 1)), Some("--label: 65 labels are more than the limit of 64 per object")),
        (Box::new(|n| { n.labels.insert("a b".into(), "v".into()); }), Some("--label: invalid label key \"a b\": no whitespace or '='")),
        (Box::new(|n| { n.labels.insert("team".into(), "v".repeat(MAX_LABEL_VALUE_BYTES + 1)); }), Some("--label: the value of label \"team\" is 4097 bytes, more than the limit of 4096 bytes")),
        (Box::new(move |n| n.options = many(MAX_NETWORK_OPTIONS)), None),
        (Box::new(move |n| n.options = many(MAX_NETWORK_OPTIONS + 1)), Some("--opt: 65 options are more than the limit of 64 per network")),
        (Box::new(|n| { n.options.insert("o".repeat(MAX_LABEL_KEY_BYTES + 1), String::new()); }), Some("--opt: option name \"oooooooooooooooooooooooo\"… is 129 bytes, more than the limit of 128 bytes")),
        (Box::new(|n| { n.options.insert("mtu".into(), "1".repeat(MAX_LABEL_VALUE_BYTES + 1)); }), Some("--opt: the value of option \"mtu\" is 4097 bytes, more than the limit of 4096 bytes")),
        (Box::new(|n| n.name = "x".repeat(MAX_SPEC_BYTES)), Some("spec: the network spec is 524301 bytes encoded, more than the limit of 524288 bytes (512 KiB)")),
    ];
    for (i, (edit, want)) in cases.into_iter().enumerate() {
        let mut n = net("front", "overlay", "", "");
        edit(&mut n);
        let got = validate_network(&n).err().map(|e| e.to_string());
        assert_eq!(got.as_deref(), want, "case {i}");
    }
}

#[test]
fn single_label_and_replica_checks() {
    assert_eq!(check_replicas(0), Ok(()));
    assert_eq!(check_replicas(MAX_REPLICAS), Ok(()));
    assert!(check_replicas(u64::MAX).is_err_and(|e| e.contains("limit of 100000")));
    assert_eq!(check_label("zone", ""), Ok(()));
    assert!(check_label("", "a").is_err_and(|e| e.contains("must not be empty")));
    assert!(check_label("a=b", "a").is_err());
    assert!(check_label_count("--label-add", MAX_LABELS).is_ok());
    assert_eq!(
        check_label_count("--label-add", MAX_LABELS + 1)
            .unwrap_err()
            .to_string(),
        "--label-add: 65 labels are more than the limit of 64 per object"
    );
    // A multi-byte character is never cut in half in an error.
    assert!(check_label_key(&"é".repeat(100)).is_err_and(|e| e.contains("is 200 bytes")));
    assert_eq!(check_env_entry("A="), Ok(()));
    assert!(check_env_entry("=A").is_err());
}

#[test]
fn names() {
    assert!(validate_service(&spec("web")).is_ok());
    assert_eq!(validate_service(&spec("")).unwrap_err().field, "--name");
    assert_eq!(validate_service(&spec("-x")).unwrap_err().field, "--name");
    assert_eq!(validate_service(&spec("a b")).unwrap_err().field, "--name");
}

#[test]
fn constraints() {
    let c = Constraint::parse("node.labels.zone==east").expect("valid");
    assert_eq!(c.key, "node.labels.zone");
    assert_eq!(c.op, ConstraintOp::Eq);
    assert_eq!(
        Constraint::parse("node.role!=manager").expect("valid").op,
        ConstraintOp::Ne
    );
    assert!(Constraint::parse("node.colour==red").is_err());
    assert!(Constraint::parse("node.hostname=a").is_err());
    assert!(Constraint::parse("node.role==boss").is_err());
    let mut s = spec("web");
    if let Some(t) = s.task.as_mut() {
        t.placement = Some(crate::v1::Placement {
            constraints: vec!["bad".into()],
            ..Default::default()
        });
    }
    assert_eq!(validate_service(&s).unwrap_err().field, "--constraint");
}

#[test]
fn placement_preferences_and_grace() {
    #[rustfmt::skip]
    let cases: [(&str, Result<&str, ()>); 6] = [
        ("spread=node.labels.zone", Ok("node.labels.zone")),
        (" spread= engine.labels.disk ", Ok("engine.labels.disk")),
        ("spread=node.hostname", Ok("node.hostname")),
        ("spread=node.labels.", Err(())),
        ("spread=node.colour", Err(())),
        ("binpack=node.labels.zone", Err(())),
    ];
    for (pref, want) in cases {
        let got = parse_placement_pref(pref).map_err(|e| {
            assert_eq!(e.field, "--placement-pref");
        });
        assert_eq!(got.as_deref(), want.as_ref().map(|s| *s), "{pref}");
    }
    let mut s = spec("web");
    if let Some(t) = s.task.as_mut() {
        t.placement = Some(crate::v1::Placement {
            preferences: vec!["spread=zone".into()],
            ..Default::default()
        });
    }
    assert_eq!(validate_service(&s).unwrap_err().field, "--placement-pref");
    let mut s = spec("web");
    if let Some(c) = s.task.as_mut().and_then(|t| t.container.as_mut()) {
        c.stop_grace_period_ns = -1;
    }
    assert_eq!(
        validate_service(&s).unwrap_err().field,
        "--stop-grace-period"
    );
}

#[test]
fn env_and_mode() {
    let mut s = spec("web");
    if let Some(c) = s.task.as_mut().and_then(|t| t.container.as_mut()) {
        c.env.push("NOEQUALS".into());
    }
    assert_eq!(validate_service(&s).unwrap_err().field, "--env");
    let mut s = spec("web");
    s.mode = ServiceMode::ModeGlobal as i32;
    assert_eq!(validate_service(&s).unwrap_err().field, "--replicas");
}

fn with_container(f: impl FnOnce(&mut ContainerSpec)) -> ServiceSpec {
    let mut s = spec("web");
    if let Some(c) = s.task.as_mut().and_then(|t| t.container.as_mut()) {
        f(c);
    }
    s
}

fn device(host: &str, container: &str, perms: &str) -> DeviceMapping {
    DeviceMapping {
        path_on_host: host.into(),
        path_in_container: container.into(),
        cgroup_permissions: perms.into(),
    }
}

fn seccomp(mode: &str, profile: &[u8]) -> Option<crate::v1::Privileges> {
    Some(crate::v1::Privileges {
        seccomp: Some(crate::v1::SeccompOpts {
            mode: mode.into(),
            profile: profile.to_vec(),
        }),
        no_new_privileges: true,
    })
}

fn ulimit(name: &str, soft: i64, hard: i64) -> crate::v1::Ulimit {
    crate::v1::Ulimit {
        name: name.into(),
        soft,
        hard,
    }
}

type Edit = fn(&mut ContainerSpec);

#[test]
fn confinement_knobs() {
    #[rustfmt::skip]
    let cases: Vec<(Edit, Option<&str>)> = vec![
        (|c| c.capability_add = vec!["NET_ADMIN".into(), "CAP_SYS_TIME".into(), "ALL".into()], None),
        (|c| c.capability_drop = vec!["all".into(), "mknod".into()], None),
        (|c| c.capability_add = vec!["FLY".into()], Some("--cap-add: unknown capability \"FLY\" (use names like NET_ADMIN or CAP_NET_ADMIN, or ALL)")),
        (|c| c.capability_drop = vec!["RESET".into()], Some("--cap-drop: unknown capability \"RESET\" (use names like NET_ADMIN or CAP_NET_ADMIN, or ALL)")),
        (|c| c.devices = vec![device("/dev/fuse", "", "")], None),
        (|c| c.devices = vec![device("/dev/sda", "/dev/xvda", "r"), device("/dev/sdb", "/dev/xvdb", "rwm")], None),
        (|c| c.devices = vec![device("dev/fuse", "", "rwm")], Some("--device: host path \"dev/fuse\" must be an absolute path to a device (e.g. /dev/fuse)")),
        (|c| c.devices = vec![device("/dev/fuse", "/dev/../etc/x", "rwm")], Some("--device: container path \"/dev/../etc/x\" must be an absolute path without . or .. (e.g. /dev/fuse)")),
        (|c| c.devices = vec![device("/dev/fuse", "", "rx")], Some("--device: /dev/fuse: permissions \"rx\" are not a combination of r, w and m (e.g. rwm, r)")),
        (|c| c.devices = vec![device("/dev/fuse", "", "rr")], Some("--device: /dev/fuse: permissions \"rr\" are not a combination of r, w and m (e.g. rwm, r)")),
        (|c| c.devices = vec![device("/dev/a", "/dev/x", "r"), device("/dev/b", "/dev/x", "r")], Some("--device: container path /dev/x is given twice")),
        (|c| c.privileges = seccomp("", b""), None),
        (|c| c.privileges = seccomp("default", b""), None),
        (|c| c.privileges = seccomp("unconfined", b""), None),
        (|c| c.privileges = seccomp("custom", b"{\"defaultAction\":\"SCMP_ACT_ALLOW\"}"), None),
        (|c| c.privileges = seccomp("custom", b"{\"defaultAction\":\"SCMP_ACT_NOPE\"}"), Some("--security-opt: seccomp profile: defaultAction: unknown action \"SCMP_ACT_NOPE\"")),
        (|c| c.privileges = seccomp("custom", b""), Some("--security-opt: a custom seccomp mode needs a profile (seccomp=PATH.json)")),
        (|c| c.privileges = seccomp("unconfined", b"{}"), Some("--security-opt: seccomp mode \"unconfined\" carries a profile: only mode \"custom\" has one")),
        (|c| c.privileges = seccomp("strict", b""), Some("--security-opt: unknown seccomp mode \"strict\" (use seccomp=default, seccomp=unconfined or seccomp=PATH.json)")),
        (|c| c.ulimits = vec![ulimit("nofile", 1024, 2048), ulimit("core", 0, 0), ulimit("nproc", -1, -1)], None),
        (|c| c.ulimits = vec![ulimit("nofile", 2048, 1024)], Some("--ulimit: nofile: soft limit 2048 is above the hard limit 1024")),
        (|c| c.ulimits = vec![ulimit("files", 1, 1)], Some("--ulimit: unknown ulimit \"files\" (one of as, core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack)")),
        (|c| c.ulimits = vec![ulimit("nofile", 1, 1), ulimit("nofile", 2, 2)], Some("--ulimit: nofile is given twice")),
        (|c| { c.sysctls.insert("net.core.somaxconn".into(), "1024".into()); }, None),
        (|c| { c.sysctls.insert("kernel.panic".into(), "1".into()); }, Some("--sysctl: kernel.panic is not a namespaced sysctl: it would change the whole node, not just the container (allowed: net.*, fs.mqueue.*, kernel.msg*, kernel.sem, kernel.shm*)")),
        (|c| c.stop_signal = "SIGUSR1".into(), None),
        (|c| c.stop_signal = "9".into(), None),
        (|c| c.stop_signal = "SIGNOPE".into(), Some("--stop-signal: unknown signal \"SIGNOPE\" (e.g. SIGTERM, SIGQUIT, SIGUSR1 or a number)")),
        (|c| c.groups = vec!["audio".into(), "1001".into()], None),
        (|c| c.groups = vec!["".into()], Some("--group-add: \"\" is not a group name or number")),
        (|c| c.user = "1000:1000".into(), None),
        (|c| c.user = "nobody".into(), None),
        (|c| c.user = "1000:".into(), Some("--user: \"1000:\" is not USER[:GROUP] (names or numbers, e.g. 1000:1000 or nobody)")),
        (|c| c.user = "a:b:c".into(), Some("--user: \"a:b:c\" is not USER[:GROUP] (names or numbers, e.g. 1000:1000 or nobody)")),
        (|c| c.hostname = "web-1.local".into(), None),
        (|c| c.hostname = "has space".into(), Some("--hostname: \"has space\" is not a hostname (at most 64 letters, digits, '-', '_' and '.')")),
        (|c| c.hostname = "{{.Node.Hostname}}-{{ .Task.Slot }}".into(), None),
        (|c| c.hostname = "{{.Node.Hostname}} {{.Task.Slot}}".into(), Some("--hostname: \"{{.Node.Hostname}} {{.Task.Slot}}\" is not a hostname (at most 64 letters, digits, '-', '_' and '.')")),
        (|c| c.hostname = "x".repeat(65), Some("--hostname")),
        (|c| c.dir = "/srv/app".into(), None),
        (|c| c.dir = "srv".into(), Some("--workdir: \"srv\" must be an absolute path")),
        (|c| { c.privileged = true; c.read_only = true; c.init = true; c.command = vec!["/bin/sh".into(), "-c".into()]; }, None),
    ];
    for (i, (edit, want)) in cases.into_iter().enumerate() {
        let got = validate_service(&with_container(edit))
            .err()
            .map(|e| e.to_string());
        match (got.as_deref(), want) {
            (None, None) => {}
            (Some(g), Some(w))
                if g == w || (!w.contains(' ') && g.starts_with(&format!("{w}: "))) => {}
            (g, w) => panic!("case {i}: got {g:?}, want {w:?}"),
        }
    }
}

#[test]
fn log_sizes_in_dockers_units() {
    #[rustfmt::skip]
    let cases: [(&str, Option<u64>); 12] = [
        ("10m", Some(10_000_000)),
        ("10M", Some(10_000_000)),
        ("10mb", Some(10_000_000)),
        ("512k", Some(512_000)),
        ("1g", Some(1_000_000_000)),
        ("1.5k", Some(1500)),
        ("100", Some(100)),
        ("100b", Some(100)),
        ("0", None),
        ("-1m", None),
        ("10x", None),
        ("m", None),
    ];
    for (s, want) in cases {
        assert_eq!(parse_log_size(s).ok(), want, "{s}");
    }
    assert_eq!(parse_log_max_file("3"), Ok(3));
    assert!(parse_log_max_file("0").is_err_and(|e| e.contains("at least 1")));
    assert!(parse_log_max_file("x").is_err());
}

#[test]
fn log_driver_and_options() {
    let driver = |name: &str, opts: &[(&str, &str)]| Driver {
        name: name.into(),
        options: opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let defaults = LogRotation {
        max_size: 10_000_000,
        max_file: 3,
    };
    assert_eq!(log_rotation(None), Ok(defaults));
    assert_eq!(log_rotation(Some(&driver("", &[]))), Ok(defaults));
    assert_eq!(
        log_rotation(Some(&driver(
            "json-file",
            &[("max-size", "1m"), ("max-file", "5")]
        ))),
        Ok(LogRotation {
            max_size: 1_000_000,
            max_file: 5
        })
    );
    #[rustfmt::skip]
    let bad: [(Driver, &str); 4] = [
        (driver("syslog", &[]), "--log-driver: unsupported log driver \"syslog\" (only json-file is supported)"),
        (driver("json-file", &[("compress", "true")]), "--log-opt: unknown option \"compress\" of the json-file log driver (use max-size or max-file)"),
        (driver("json-file", &[("max-file", "0")]), "--log-opt: max-file must be at least 1"),
        (driver("json-file", &[("max-size", "lots")]), "--log-opt: \"lots\" is not a size (a number with an optional unit b, k, m or g, e.g. 10m)"),
    ];
    for (d, want) in bad {
        let mut s = spec("web");
        if let Some(t) = s.task.as_mut() {
            t.log_driver = Some(d);
        }
        assert_eq!(validate_service(&s).unwrap_err().to_string(), want);
    }
}

fn net(name: &str, driver: &str, subnet: &str, gateway: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        driver: driver.into(),
        subnet: subnet.into(),
        gateway: gateway.into(),
        ..Default::default()
    }
}

#[test]
fn cidrs() {
    let n = Ipv4Cidr::parse("10.1.2.0/24").expect("valid");
    assert_eq!(n.to_string(), "10.1.2.0/24");
    assert!(n.contains(Ipv4Addr::new(10, 1, 2, 255)));
    assert!(!n.contains(Ipv4Addr::new(10, 1, 3, 0)));
    assert_eq!(n.broadcast(), Ipv4Addr::new(10, 1, 2, 255));
    assert!(n.overlaps(&Ipv4Cidr::parse("10.0.0.0/8").expect("valid")));
    assert!(!n.overlaps(&Ipv4Cidr::parse("10.1.3.0/24").expect("valid")));
    assert_eq!(
        Ipv4Cidr::parse("10.1.2.3/24").unwrap_err(),
        "\"10.1.2.3/24\" has host bits set: it should be 10.1.2.0/24"
    );
    assert!(Ipv4Cidr::parse("10.1.2.0").is_err());
    assert!(Ipv4Cidr::parse("10.1.2.0/33").is_err());
    assert!(Ipv4Cidr::parse("fd00::/64").is_err());
    assert!(Ipv4Cidr::parse("0.0.0.0/0").is_ok());
}

#[test]
fn networks() {
    #[rustfmt::skip]
    let cases: [(NetworkSpec, Option<&str>); 16] = [
        (net("front", "overlay", "", ""), None),
        (net("front", "overlay", "10.5.0.0/24", ""), None),
        (net("front", "bridge", "10.5.0.0/24", "10.5.0.254"), None),
        (net("host", "host", "", ""), None),
        (net("", "overlay", "", ""), Some("name")),
        (net("a.b", "overlay", "", ""), Some("name")),
        (net("front", "macvlan", "", ""), Some("--driver")),
        (net("front", "", "", ""), Some("--driver")),
        (net("front", "overlay", "10.5.0.1/24", ""), Some("--subnet")),
        (net("front", "overlay", "10.5.0.0/31", ""), Some("--subnet")),
        (net("front", "overlay", "10.0.0.0/7", ""), Some("--subnet")),
        (net("front", "host", "10.5.0.0/24", ""), Some("--subnet")),
        (net("front", "overlay", "", "10.5.0.1"), Some("--gateway")),
        (net("front", "overlay", "10.5.0.0/24", "10.6.0.1"), Some("--gateway")),
        (net("front", "overlay", "10.5.0.0/24", "10.5.0.0"), Some("--gateway")),
        (net("front", "overlay", "10.5.0.0/24", "nope"), Some("--gateway")),
    ];
    for (spec, want) in cases {
        let got = validate_network(&spec).err().map(|e| e.field);
        assert_eq!(got.as_deref(), want, "{spec:?}");
    }
    let mut enc = net("secret", "overlay", "", "");
    enc.encrypted = true;
    assert!(validate_network(&enc).is_ok());
    enc.driver = "bridge".into();
    assert_eq!(
        validate_network(&enc).unwrap_err().to_string(),
        "--opt: encrypted is only for overlay networks, not bridge"
    );
    let mut ing = net("ingress", "overlay", "10.0.0.0/16", "");
    ing.ingress = true;
    assert!(validate_network(&ing).is_ok());
    ing.attachable = true;
    assert_eq!(validate_network(&ing).unwrap_err().field, "--attachable");
    let mut opt = net("front", "overlay", "", "");
    opt.options.insert(String::new(), "x".into());
    assert_eq!(validate_network(&opt).unwrap_err().field, "--opt");
    let e = validate_network(&net("front", "overlay", "10.5.0.0/24", "10.6.0.1")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--gateway: 10.6.0.1 is outside the subnet 10.5.0.0/24"
    );
}

fn port(published: u32, target: u32, protocol: &str, mode: &str) -> PortConfig {
    PortConfig {
        published_port: published,
        target_port: target,
        protocol: protocol.into(),
        publish_mode: mode.into(),
        ..Default::default()
    }
}

fn with_ports(mode: &str, ports: Vec<PortConfig>) -> ServiceSpec {
    let mut s = spec("web");
    s.endpoint = Some(EndpointSpec {
        mode: mode.into(),
        ports,
    });
    s
}

#[test]
fn published_ports() {
    #[rustfmt::skip]
    let cases: Vec<(ServiceSpec, Option<&str>)> = vec![
        (with_ports("", vec![port(8080, 80, "", "")]), None),
        (with_ports("vip", vec![port(0, 80, "tcp", "ingress")]), None),
        (with_ports("vip", vec![port(8080, 80, "tcp", ""), port(8080, 80, "udp", "")]), None),
        (with_ports("dnsrr", vec![port(8080, 80, "tcp", "host")]), None),
        (with_ports("dnsrr", vec![]), None),
        (with_ports("vip", vec![port(8080, 0, "", "")]), Some("--publish")),
        (with_ports("vip", vec![port(8080, 65536, "", "")]), Some("--publish")),
        (with_ports("vip", vec![port(65536, 80, "", "")]), Some("--publish")),
        (with_ports("vip", vec![port(8080, 80, "sctp", "")]), Some("--publish")),
        (with_ports("vip", vec![port(8080, 80, "", "local")]), Some("--publish")),
        (with_ports("vip", vec![port(0, 80, "", "host")]), Some("--publish")),
        (with_ports("vip", vec![port(8080, 80, "", ""), port(8080, 81, "tcp", "host")]), Some("--publish")),
        (with_ports("dnsrr", vec![port(8080, 80, "", "")]), Some("--endpoint-mode")),
        (with_ports("rr", vec![]), Some("--endpoint-mode")),
    ];
    for (s, want) in cases {
        let got = validate_service(&s).err().map(|e| e.field);
        assert_eq!(got.as_deref(), want, "{:?}", s.endpoint);
    }
    let e = validate_service(&with_ports(
        "vip",
        vec![port(8080, 80, "", ""), port(8080, 90, "", "")],
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "--publish: published port 8080/tcp is given twice"
    );
}

fn attach(target: &str, aliases: &[&str]) -> NetworkAttachmentConfig {
    NetworkAttachmentConfig {
        target: target.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
    }
}

fn with_networks(networks: Vec<NetworkAttachmentConfig>) -> ServiceSpec {
    let mut s = spec("web");
    if let Some(t) = s.task.as_mut() {
        t.networks = networks;
    }
    s
}

#[test]
fn service_networks() {
    assert!(validate_service(&with_networks(vec![
        attach("a", &["web1"]),
        attach("b", &[])
    ]))
    .is_ok());
    assert!(validate_service(&with_networks(vec![attach("host", &[])])).is_ok());
    for bad in [
        vec![attach("a", &[]), attach("a", &[])],
        vec![attach("", &[])],
        vec![attach("a", &["no spaces"])],
        vec![attach("host", &[]), attach("a", &[])],
        vec![attach("a", &[]), attach("none", &[])],
    ] {
        let e = validate_service(&with_networks(bad.clone())).expect_err("refused");
        assert_eq!(e.field, "--network", "{bad:?}");
    }
    let s = with_networks(vec![attach("id1", &[]), attach("id2", &[])]);
    let front = net("front", "overlay", "", "");
    let hostnet = net("myhost", "host", "", "");
    assert!(validate_service_networks(&s, &[front.clone(), front.clone()]).is_ok());
    assert_eq!(
        validate_service_networks(&s, &[front.clone(), hostnet])
            .unwrap_err()
            .to_string(),
        "--network: network \"myhost\" (driver host) cannot be combined with other networks"
    );
    let mut ingress = net("ingress", "overlay", "", "");
    ingress.ingress = true;
    assert!(validate_service_networks(&s, &[front.clone(), ingress]).is_err());
    assert!(validate_service_networks(&s, &[front]).is_err());
}

mod files {
    use super::*;
    use crate::limits::{CONFIG_MAX_BYTES, SECRET_MAX_BYTES};
    use crate::v1::{
        BindOptions, ConfigReference, Driver, FileTarget, Mount, MountType, SecretReference,
        ServiceDependency, TmpfsOptions, VolumeOptions,
    };

    fn mount(kind: MountType, source: &str, target: &str) -> Mount {
        Mount {
            r#type: kind as i32,
            source: source.into(),
            target: target.into(),
            ..Default::default()
        }
    }

    fn secret(name: &str, target: &str) -> SecretReference {
        SecretReference {
            secret_name: name.into(),
            file: Some(FileTarget {
                name: target.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn config(name: &str, target: &str) -> ConfigReference {
        ConfigReference {
            config_name: name.into(),
            file: Some(FileTarget {
                name: target.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn check(f: impl FnOnce(&mut ContainerSpec)) -> Result<(), String> {
        validate_service(&with_container(f)).map_err(|e| e.to_string())
    }

    fn mounts(m: Vec<Mount>) -> Result<(), String> {
        check(|c| c.mounts = m)
    }

    #[test]
    fn targets_are_absolute_and_given_once_across_mounts_secrets_and_configs() {
        use MountType::*;
        assert_eq!(mounts(vec![mount(MountBind, "/srv", "/data")]), Ok(()));
        assert_eq!(
            mounts(vec![mount(MountBind, "/srv", "data")]),
            Err("--mount: target \"data\" must be an absolute path".into())
        );
        assert_eq!(
            mounts(vec![mount(MountTmpfs, "", "")]),
            Err("--mount: a mount needs a target (target=/PATH)".into())
        );
        assert_eq!(
            mounts(vec![mount(MountBind, "/a", "/data"), mount(MountVolume, "v1", "/data/")]),
            Err("--mount: target /data is given more than once (mounts, secrets and configs share the container's paths)".into())
        );
        // A secret's default target is /run/secrets/NAME; a config's is /NAME.
        let clash = check(|c| {
            c.mounts = vec![mount(MountTmpfs, "", "/run/secrets/db_pw")];
            c.secrets = vec![secret("db_pw", "")];
        });
        assert_eq!(clash, Err("--secret: target /run/secrets/db_pw is given more than once (mounts, secrets and configs share the container's paths)".into()));
        let clash = check(|c| {
            c.secrets = vec![secret("a", "/etc/app.conf")];
            c.configs = vec![config("app.conf", "/etc/app.conf")];
        });
        assert_eq!(clash, Err("--config: target /etc/app.conf is given more than once (mounts, secrets and configs share the container's paths)".into()));
        let clash = check(|c| c.configs = vec![config("a", "/x"), config("b", "x")]);
        assert_eq!(clash, Err("--config: target /x is given more than once (mounts, secrets and configs share the container's paths)".into()));
        assert_eq!(
            check(|c| c.secrets = vec![secret("a", ""), secret("b", "a2")]),
            Ok(())
        );
        assert_eq!(
            check(|c| c.secrets = vec![secret("a", "../etc/passwd")]),
            Err("--secret: target \"/run/secrets/../etc/passwd\" must not contain \"..\"".into())
        );
        assert_eq!(
            check(|c| c.secrets = vec![SecretReference::default()]),
            Err("--secret: a secret reference needs a source (source=NAME)".into())
        );
        let bad_uid = check(|c| {
            let mut r = secret("a", "");
            if let Some(f) = r.file.as_mut() {
                f.uid = "root".into();
            }
            c.secrets = vec![r];
        });
        assert_eq!(
            bad_uid,
            Err("--secret: uid \"root\" must be a number".into())
        );
    }

    #[test]
    fn default_targets() {
        assert_eq!(secret_target(&secret("db_pw", "")), "/run/secrets/db_pw");
        assert_eq!(secret_target(&secret("db_pw", "pw")), "/run/secrets/pw");
        assert_eq!(secret_target(&secret("db_pw", "/etc/pw")), "/etc/pw");
        assert_eq!(config_target(&config("nginx.conf", "")), "/nginx.conf");
        assert_eq!(
            config_target(&config("c", "/etc/nginx.conf")),
            "/etc/nginx.conf"
        );
    }

    #[test]
    fn sources_fit_the_mount_type() {
        use MountType::*;
        assert_eq!(
            mounts(vec![mount(MountBind, "", "/d")]),
            Err("--mount: a bind mount needs a source (source=/HOST/PATH)".into())
        );
        assert_eq!(
            mounts(vec![mount(MountBind, "srv/{{.Task.Slot}}", "/d")]),
            Err("--mount: bind source \"srv/{{.Task.Slot}}\" must be an absolute path".into())
        );
        assert_eq!(
            mounts(vec![mount(MountBind, "/srv/{{.Task.Slot}}", "/d")]),
            Ok(())
        );
        assert_eq!(
            mounts(vec![mount(MountVolume, "", "/d")]),
            Ok(()),
            "anonymous volume"
        );
        assert_eq!(
            mounts(vec![mount(MountVolume, "db-data_1.x", "/d")]),
            Ok(())
        );
        assert_eq!(
            mounts(vec![mount(MountVolume, "data-{{.Task.Slot}}", "/d")]),
            Ok(())
        );
        for bad in ["a", "-data", "da/ta", "data dir"] {
            let got = mounts(vec![mount(MountVolume, bad, "/d")]);
            assert!(
                got.as_ref().is_err_and(
                    |e| e.starts_with(&format!("--mount: volume name {bad:?} is not valid"))
                ),
                "{bad}: {got:?}"
            );
        }
        assert_eq!(
            mounts(vec![mount(MountTmpfs, "/x", "/d")]),
            Err("--mount: a tmpfs mount takes no source".into())
        );
        assert_eq!(
            mounts(vec![Mount {
                r#type: 9,
                target: "/d".into(),
                ..Default::default()
            }]),
            Err("--mount: mount type 9 is not bind, volume or tmpfs".into())
        );
    }

    #[test]
    fn options_only_on_their_type() {
        use MountType::*;
        let bind = |p: &str| BindOptions {
            propagation: p.into(),
        };
        let with = |mut m: Mount, f: &dyn Fn(&mut Mount)| {
            f(&mut m);
            mounts(vec![m])
        };
        for p in BIND_PROPAGATIONS {
            assert_eq!(
                with(mount(MountBind, "/s", "/d"), &|m| m.bind_options =
                    Some(bind(p))),
                Ok(())
            );
        }
        assert_eq!(
            with(mount(MountBind, "/s", "/d"), &|m| m.bind_options = Some(bind("bogus"))),
            Err("--mount: bind-propagation \"bogus\" is not one of rprivate, private, rshared, shared, rslave, slave".into())
        );
        assert_eq!(
            with(mount(MountVolume, "v1", "/d"), &|m| m.bind_options =
                Some(bind("shared"))),
            Err("--mount: bind-propagation is only valid with type=bind".into())
        );
        let tmpfs = TmpfsOptions {
            size_bytes: 1 << 20,
            mode: 0,
        };
        assert_eq!(
            with(mount(MountBind, "/s", "/d"), &|m| m.tmpfs_options =
                Some(tmpfs)),
            Err("--mount: tmpfs-size is only valid with type=tmpfs".into())
        );
        assert_eq!(
            with(mount(MountTmpfs, "", "/d"), &|m| m.tmpfs_options =
                Some(tmpfs)),
            Ok(())
        );
        assert_eq!(
            with(mount(MountTmpfs, "", "/d"), &|m| m.tmpfs_options =
                Some(TmpfsOptions {
                    size_bytes: -1,
                    mode: 0
                })),
            Err("--mount: tmpfs-size must not be negative".into())
        );
        let nocopy = VolumeOptions {
            no_copy: true,
            ..Default::default()
        };
        assert_eq!(
            with(mount(MountTmpfs, "", "/d"), &|m| m.volume_options =
                Some(nocopy.clone())),
            Err("--mount: volume-nocopy is only valid with type=volume".into())
        );
        assert_eq!(
            with(mount(MountVolume, "v1", "/d"), &|m| m.volume_options =
                Some(nocopy.clone())),
            Ok(())
        );
        let driver = |name: &str| VolumeOptions {
            driver_config: Some(Driver {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            with(mount(MountVolume, "v1", "/d"), &|m| m.volume_options =
                Some(driver("local"))),
            Ok(())
        );
        assert_eq!(
            with(mount(MountVolume, "v1", "/d"), &|m| m.volume_options =
                Some(driver("nfs"))),
            Err("--mount: volume driver \"nfs\" is not supported: only \"local\"".into())
        );
        // Empty option messages (as a loader may leave them) are no options.
        assert_eq!(
            with(mount(MountBind, "/s", "/d"), &|m| {
                m.volume_options = Some(VolumeOptions::default());
                m.tmpfs_options = Some(TmpfsOptions::default());
            }),
            Ok(())
        );
    }

    #[test]
    fn depends_on_names_other_services_once() {
        let dep = |name: &str| ServiceDependency {
            service: name.into(),
            condition: 0,
        };
        let check = |deps: Vec<ServiceDependency>| {
            let mut s = spec("web");
            s.depends_on = deps;
            validate_service(&s).map_err(|e| e.to_string())
        };
        assert_eq!(check(vec![dep("db"), dep("cache")]), Ok(()));
        assert_eq!(
            check(vec![dep("")]),
            Err("depends_on: a dependency needs a service name".into())
        );
        assert_eq!(
            check(vec![dep("web")]),
            Err("depends_on: service web cannot depend on itself".into())
        );
        assert_eq!(
            check(vec![dep("db"), dep("db")]),
            Err("depends_on: service db is listed more than once".into())
        );
        let mut odd = dep("db");
        odd.condition = 7;
        assert_eq!(
            check(vec![odd]),
            Err("depends_on: condition 7 of db is not known".into())
        );
    }

    #[test]
    fn secret_and_config_names_and_data() {
        for ok in ["a", "db_pw", "db.pw-2", &"x".repeat(64)] {
            assert_eq!(validate_data_name("secret", ok), Ok(()), "{ok}");
        }
        assert_eq!(
            validate_data_name("secret", "").map_err(|e| e.to_string()),
            Err("name: a secret needs a name".into())
        );
        for bad in ["-a", "a-", "a b", "a/b", "_a"] {
            assert_eq!(
                validate_data_name("config", bad).map_err(|e| e.to_string()),
                Err(format!("name: config name {bad:?} is not valid: use letters, digits, '-', '_' and '.', starting and ending with a letter or digit"))
            );
        }
        assert!(validate_data_name("secret", &"x".repeat(65))
            .is_err_and(|e| e.reason.contains("longer than 64 characters")));
        assert_eq!(validate_data("secret", &vec![1; SECRET_MAX_BYTES]), Ok(()));
        assert_eq!(
            validate_data("secret", &vec![1; 600 * 1024]).map_err(|e| e.to_string()),
            Err("data: secret data is 600 KiB: secrets are limited to 500 KiB".into())
        );
        assert_eq!(validate_data("config", &vec![1; CONFIG_MAX_BYTES]), Ok(()));
        assert_eq!(
            validate_data("config", &vec![1; CONFIG_MAX_BYTES + 1]).map_err(|e| e.to_string()),
            Err("data: config data is 1001 KiB: configs are limited to 1000 KiB".into())
        );
        assert_eq!(
            validate_data("config", b"").map_err(|e| e.to_string()),
            Err("data: config data must not be empty".into())
        );
    }
}
