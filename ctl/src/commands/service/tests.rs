//! Tests of spec building, updates, tables, logs and `inspect --pretty`.

use std::collections::HashMap;

use clap::Parser;
use serde_json::json;
use shoal_proto::v1::{
    ContainerSpec, EndpointSpec, Meta, PortConfig, ServiceMode, Task, TaskSpec, TaskState,
    TaskStatus,
};

use super::tables::ports_column;
use super::*;

fn create_args(args: &[&str]) -> CreateArgs {
    let cli = crate::cli::Cli::try_parse_from(
        ["shoalctl", "service", "create"].iter().chain(args.iter()),
    )
    .expect("parses");
    match cli.command {
        crate::cli::Command::Service(crate::cli::ServiceCommand::Create(a)) => *a,
        _ => panic!("not create"),
    }
}

#[test]
fn labels_from_flags_reach_the_spec_inspect_and_pretty() {
    let a = create_args(&[
        "--name",
        "web",
        "--label",
        "team=web",
        "-l",
        "tier",
        "--container-label",
        "com.example.role=front",
        "busybox",
    ]);
    let spec = build_spec(&a).expect("valid");
    assert_eq!(spec.labels["team"], "web");
    assert_eq!(spec.labels["tier"], "");
    let c = spec
        .task
        .as_ref()
        .and_then(|t| t.container.as_ref())
        .unwrap();
    assert_eq!(c.labels["com.example.role"], "front");
    assert!(!spec.labels.contains_key("com.example.role"));

    let svc = shoal_proto::v1::Service {
        id: "s1".into(),
        spec: Some(spec),
        ..Default::default()
    };
    let doc = crate::output::json::service(&svc);
    assert_eq!(doc["Spec"]["Labels"], json!({"team": "web", "tier": ""}));
    assert_eq!(
        doc["Spec"]["TaskTemplate"]["ContainerSpec"]["Labels"],
        json!({"com.example.role": "front"})
    );
    let text = pretty(&svc);
    assert!(text.contains("Labels:\n team=web\n tier\n"), "{text}");
    assert!(
        text.contains(" Labels:\n   com.example.role=front\n"),
        "{text}"
    );

    let e = crate::cli::Cli::try_parse_from([
        "shoalctl",
        "service",
        "create",
        "--name",
        "web",
        "--container-label",
        "=x",
        "busybox",
    ])
    .unwrap_err();
    assert!(e.to_string().contains("--container-label"), "{e}");
}

#[test]
fn spec_from_flags() {
    let a = create_args(&[
        "--name",
        "web",
        "--replicas",
        "3",
        "--env",
        "A=1",
        "--limit-memory",
        "64M",
        "--limit-cpu",
        "0.5",
        "--limit-pids",
        "100",
        "--reserve-memory",
        "32M",
        "--restart-condition",
        "on-failure",
        "--restart-max-attempts",
        "2",
        "--constraint",
        "node.role==worker",
        "busybox",
        "sleep",
        "3600",
    ]);
    let spec = build_spec(&a).expect("valid");
    assert_eq!(spec.replicas, 3);
    let task = spec.task.expect("task");
    let c = task.container.expect("container");
    assert_eq!(c.image, "busybox");
    assert_eq!(c.args, vec!["sleep", "3600"]);
    assert!(c.command.is_empty());
    assert_eq!(c.env, vec!["A=1"]);
    let res = task.resources.expect("resources");
    assert_eq!(res.limits.expect("limits").memory_bytes, 64 << 20);
    assert_eq!(res.limits.expect("limits").nano_cpus, 500_000_000);
    assert_eq!(res.reservations.expect("rsv").memory_bytes, 32 << 20);
    assert_eq!(res.pids_limit, 100);
    let r = task.restart.expect("restart");
    assert_eq!(r.condition, 1);
    assert_eq!(r.max_attempts, 2);
    assert_eq!(r.delay_ns, 5_000_000_000);
    let p = task.placement.expect("p");
    assert_eq!(p.constraints, vec!["node.role==worker"]);
    assert_eq!(p.max_replicas_per_node, 0);
    assert!(p.preferences.is_empty());
    assert_eq!(c.stop_grace_period_ns, 10_000_000_000);
}

#[test]
fn placement_and_grace_flags() {
    let a = create_args(&[
        "--name",
        "web",
        "--max-replicas-per-node",
        "2",
        "--placement-pref",
        "spread=node.labels.zone",
        "--placement-pref",
        "spread=engine.labels.rack",
        "--stop-grace-period",
        "3s",
        "busybox",
    ]);
    let spec = build_spec(&a).expect("valid");
    let task = spec.task.clone().expect("task");
    let p = task.placement.expect("placement");
    assert_eq!(p.max_replicas_per_node, 2);
    assert_eq!(
        p.preferences,
        vec!["spread=node.labels.zone", "spread=engine.labels.rack"]
    );
    assert_eq!(
        task.container.expect("c").stop_grace_period_ns,
        3_000_000_000
    );
    let svc = Service {
        id: "s1".into(),
        spec: Some(spec),
        ..Default::default()
    };
    let doc = js::service(&svc);
    let t = &doc["Spec"]["TaskTemplate"];
    assert_eq!(t["Placement"]["MaxReplicas"], 2);
    assert_eq!(
        t["Placement"]["Preferences"][0]["Spread"]["SpreadDescriptor"],
        "node.labels.zone"
    );
    assert_eq!(t["ContainerSpec"]["StopGracePeriod"], 3_000_000_000_i64);
    let text = pretty(&svc);
    assert!(
        text.contains(" Preferences:   [Spread=node.labels.zone Spread=engine.labels.rack]\n"),
        "{text}"
    );
    assert!(text.contains(" Max Replicas:  2\n"), "{text}");
    assert!(text.contains(" Grace Period:  3s\n"), "{text}");
}

#[test]
fn spec_errors_name_the_field() {
    let a = create_args(&[
        "--name",
        "x",
        "--mode",
        "global",
        "--replicas",
        "2",
        "busybox",
    ]);
    assert_eq!(
        build_spec(&a).expect_err("global+replicas").to_string(),
        "--replicas: cannot be used with --mode global"
    );
    let a = create_args(&["--name", "x", "--limit-memory", "1k", "busybox"]);
    assert!(build_spec(&a)
        .expect_err("tiny")
        .to_string()
        .starts_with("--limit-memory:"));
    let a = create_args(&["--name", "x", "--constraint", "bogus", "busybox"]);
    assert!(build_spec(&a)
        .expect_err("bad")
        .to_string()
        .starts_with("--constraint:"));
    let a = create_args(&["--name", "g", "--mode", "global", "busybox"]);
    assert_eq!(build_spec(&a).expect("global").replicas, 0);
}

fn task(id: &str, slot: u64, created: i64, state: TaskState, desired: TaskState) -> Task {
    Task {
        id: id.into(),
        service_name: "web".into(),
        slot,
        node_id: "node1".into(),
        meta: Some(Meta {
            created_at: created,
            ..Default::default()
        }),
        status: Some(TaskStatus {
            state: state as i32,
            timestamp: created,
            ..Default::default()
        }),
        desired_state: desired as i32,
        ..Default::default()
    }
}

#[test]
fn ps_rows_sorted_with_history() {
    const S: i64 = 1_000_000_000;
    let mut failed = task(
        "aaaaaaaaaaaaaaaaaaaa",
        1,
        10 * S,
        TaskState::TaskFailed,
        TaskState::TaskShutdown,
    );
    if let Some(st) = failed.status.as_mut() {
        st.err = "task: non-zero exit (1)".into();
    }
    let tasks = vec![
        task(
            "cccccccccccccccccccc",
            2,
            11 * S,
            TaskState::TaskRunning,
            TaskState::TaskRunning,
        ),
        failed,
        task(
            "bbbbbbbbbbbbbbbbbbbb",
            1,
            20 * S,
            TaskState::TaskRunning,
            TaskState::TaskRunning,
        ),
    ];
    let names: HashMap<String, String> = [("node1".to_string(), "host1".to_string())].into();
    let rows = task_rows("web", &tasks, &names, 25 * S, false);
    let names_col: Vec<String> = rows.iter().map(|r| r.cells(false)[1].clone()).collect();
    assert_eq!(names_col, vec!["web.1", " \\_ web.1", "web.2"]);
    assert_eq!(rows[0].id, "bbbbbbbbbbbb");
    assert_eq!(rows[0].node, "host1");
    assert_eq!(rows[0].desired_state, "Running");
    assert_eq!(rows[0].current_state, "Running 5 seconds ago");
    assert_eq!(rows[1].desired_state, "Shutdown");
    assert_eq!(rows[1].cells(false)[6], "\"task: non-zero exit (1)\"");
    let j = rows[1].json();
    assert_eq!(j["Name"], "web.1");
    assert_eq!(j["Error"], "task: non-zero exit (1)");
    assert_eq!(j["CurrentState"], "Failed 15 seconds ago");
}

#[test]
fn ls_rows() {
    let sum = ServiceSummary {
        service: Some(Service {
            id: "0123456789abcdefghij".into(),
            spec: Some(ServiceSpec {
                name: "web".into(),
                replicas: 3,
                task: Some(TaskSpec {
                    container: Some(ContainerSpec {
                        image: "busybox".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        running_tasks: 2,
        desired_tasks: 3,
    };
    let r = ServiceRow::of(&sum);
    assert_eq!(
        r.cells(),
        vec!["0123456789ab", "web", "replicated", "2/3", "busybox", ""]
    );
    assert_eq!(
        js::line(&r.json()),
        "{\"ID\":\"0123456789ab\",\"Image\":\"busybox\",\"Mode\":\"replicated\",\"Name\":\"web\",\"Ports\":\"\",\"Replicas\":\"2/3\"}\n"
    );
}

#[test]
fn log_lines() {
    let line = LogLine {
        task_id: "abcdefghijklmnopqrstuvwxy".into(),
        task_name: "web.1.abcdefghijklmnopqrstuvwxy".into(),
        node_id: "n1".into(),
        stream: "stdout".into(),
        timestamp: 1_500_000_000_000_000_000,
        data: b"hello\n".to_vec(),
    };
    let p = log_prefix(&line, "web", "host1", 1, false);
    assert_eq!(p, "web.1.abcdefghijkl@host1");
    assert_eq!(
        log_text(&p, &line, false),
        "web.1.abcdefghijkl@host1    | hello"
    );
    assert_eq!(
        log_text(&p, &line, true),
        "2017-07-14T02:40:00.000000000Z web.1.abcdefghijkl@host1    | hello"
    );
    // slot 1 of a service with 10+ replicas gets one more space
    assert_eq!(
        log_prefix(&line, "web", "host1", 2, false),
        "web.1.abcdefghijkl@host1 "
    );
    let bare = LogLine {
        task_name: String::new(),
        ..line.clone()
    };
    assert_eq!(
        log_prefix(&bare, "web", "h", 1, true),
        "web.abcdefghijklmnopqrstuvwxy@h"
    );
}

fn update_args(args: &[&str]) -> UpdateArgs {
    let cli = crate::cli::Cli::try_parse_from(
        ["shoalctl", "service", "update"].iter().chain(args.iter()),
    )
    .expect("parses");
    match cli.command {
        crate::cli::Command::Service(crate::cli::ServiceCommand::Update(a)) => *a,
        _ => panic!("not update"),
    }
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

#[test]
fn create_with_networks_and_ports() {
    let a = create_args(&[
        "--name",
        "web",
        "--network",
        "front",
        "--network",
        "name=back,alias=api",
        "-p",
        "8080:80",
        "--publish",
        "published=5353,target=53,protocol=udp,mode=host",
        "busybox",
    ]);
    let spec = build_spec(&a).expect("valid");
    let nets = &spec.task.as_ref().expect("task").networks;
    assert_eq!(nets.len(), 2);
    assert_eq!(nets[0].target, "front");
    assert_eq!(
        (nets[1].target.as_str(), nets[1].aliases.clone()),
        ("back", vec!["api".to_string()])
    );
    let ep = spec.endpoint.clone().expect("endpoint");
    assert_eq!(ep.mode, "vip");
    assert_eq!(
        ep.ports,
        vec![
            port(8080, 80, "tcp", "ingress"),
            port(5353, 53, "udp", "host")
        ]
    );
    let svc = Service {
        spec: Some(spec),
        ..Default::default()
    };
    let doc = js::service(&svc);
    assert_eq!(
        doc["Spec"]["TaskTemplate"]["Networks"],
        json!([{"Target": "front"}, {"Target": "back", "Aliases": ["api"]}])
    );
    assert_eq!(
        doc["Spec"]["EndpointSpec"],
        json!({"Mode": "vip", "Ports": [
            {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"},
            {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 5353, "PublishMode": "host"},
        ]})
    );
    assert!(doc.get("Endpoint").is_none());
    assert_eq!(ports_column(&svc), "*:8080->80/tcp");
    let text = pretty(&svc);
    assert!(text.contains("Networks:       front back\n"), "{text}");
    assert!(text.contains("Endpoint Mode:  vip\n"), "{text}");
    assert!(
        text.contains(" PublishedPort = 5353\n  Protocol = udp\n"),
        "{text}"
    );

    for (args, want) in [
        (&["--name", "w", "-p", "8080:80", "-p", "8080:90", "i"][..], "--publish: published port 8080/tcp is given twice"),
        (&["--name", "w", "-p", "8080:0", "i"], "--publish: target port 0 is out of range (1-65535)"),
        (&["--name", "w", "--endpoint-mode", "dnsrr", "-p", "8080:80", "i"], "--endpoint-mode: dnsrr cannot serve the ingress-mode port 8080/tcp (publish it with mode=host, or use vip)"),
        (&["--name", "w", "--network", "host", "--network", "front", "i"], "--network: the host network cannot be combined with other networks"),
        (&["--name", "w", "--network", "a", "--network", "a", "i"], "--network: the service is attached to network \"a\" twice"),
    ] {
        let e = build_spec(&create_args(args)).expect_err("refused");
        assert_eq!(e.to_string(), want, "{args:?}");
    }
}

#[test]
fn ports_column_like_docker() {
    let svc = |ports: Vec<PortConfig>, allocated: Option<Vec<PortConfig>>| Service {
        spec: Some(ServiceSpec {
            endpoint: Some(EndpointSpec {
                mode: "vip".into(),
                ports,
            }),
            ..Default::default()
        }),
        endpoint: allocated.map(|ports| shoal_proto::v1::Endpoint {
            ports,
            ..Default::default()
        }),
        ..Default::default()
    };
    let s = svc(
        vec![
            port(8081, 81, "tcp", "ingress"),
            port(8080, 80, "tcp", "ingress"),
            port(53, 53, "udp", "ingress"),
            port(9000, 90, "tcp", "host"),
            port(8083, 83, "tcp", "ingress"),
        ],
        None,
    );
    assert_eq!(
        ports_column(&s),
        "*:8080-8081->80-81/tcp, *:8083->83/tcp, *:53->53/udp"
    );
    // the allocated ports win: a published port 0 was filled in by the manager
    let s = svc(
        vec![port(0, 80, "tcp", "ingress")],
        Some(vec![port(30000, 80, "tcp", "ingress")]),
    );
    assert_eq!(ports_column(&s), "*:30000->80/tcp");
    assert_eq!(
        ports_column(&svc(vec![port(0, 80, "tcp", "ingress")], None)),
        ""
    );
}

fn web_spec() -> ServiceSpec {
    let mut spec = build_spec(&create_args(&[
        "--name",
        "web",
        "--network",
        "front",
        "-p",
        "8080:80",
        "-p",
        "8080:80/udp",
        "-e",
        "A=1",
        "-e",
        "B=2",
        "--constraint",
        "node.role==worker",
        "busybox",
    ]))
    .expect("valid");
    // the manager stores network IDs
    if let Some(t) = spec.task.as_mut() {
        t.networks[0].target = "frontid".into();
    }
    spec
}

#[test]
fn update_applies_flags() {
    let ids: NetworkIds = [
        ("front".to_string(), "frontid".to_string()),
        ("back".to_string(), "backid".to_string()),
    ]
    .into();
    let mut spec = web_spec();
    let a = update_args(&[
        "--image",
        "nginx",
        "--replicas",
        "4",
        "--env-rm",
        "A",
        "--env-add",
        "B=3",
        "--env-add",
        "C=4",
        "--constraint-rm",
        "node.role==worker",
        "--constraint-add",
        "node.labels.zone==a",
        "--network-rm",
        "front",
        "--network-add",
        "name=back,alias=api",
        "--publish-rm",
        "8080/udp",
        "--publish-add",
        "9090:90",
        "--publish-add",
        "8080:81",
        "web",
    ]);
    apply_update(&mut spec, &a, &ids).expect("applies");
    assert_eq!(spec.replicas, 4);
    let task = spec.task.clone().expect("task");
    let c = task.container.expect("c");
    assert_eq!(c.image, "nginx");
    assert_eq!(c.env, vec!["B=3", "C=4"]);
    assert_eq!(
        task.placement.expect("p").constraints,
        vec!["node.labels.zone==a"]
    );
    assert_eq!(task.networks.len(), 1);
    assert_eq!(task.networks[0].target, "back");
    assert_eq!(task.networks[0].aliases, vec!["api"]);
    let ep = spec.endpoint.clone().expect("ep");
    assert_eq!(
        ep.ports,
        vec![
            port(9090, 90, "tcp", "ingress"),
            port(8080, 81, "tcp", "ingress")
        ]
    );

    let mut spec = web_spec();
    apply_update(
        &mut spec,
        &update_args(&["--publish-rm", "8080", "--endpoint-mode", "dnsrr", "web"]),
        &ids,
    )
    .expect("removes both protocols");
    assert!(spec.endpoint.as_ref().expect("ep").ports.is_empty());
    assert_eq!(spec.endpoint.as_ref().expect("ep").mode, "dnsrr");

    for (args, want) in [
        (&["--network-add", "front", "web"][..], "--network-add: service web is already attached to network front"),
        (&["--network-rm", "back", "web"], "--network-rm: service web is not attached to network back"),
        (&["--publish-rm", "9999", "web"], "--publish-rm: service web publishes no port matching published=9999"),
        (&["--endpoint-mode", "dnsrr", "web"], "--endpoint-mode: dnsrr cannot serve the ingress-mode port 8080/tcp (publish it with mode=host, or use vip)"),
        (&["--network-add", "host", "web"], "--network: the host network cannot be combined with other networks"),
        (&["--image", "", "web"], "image: an image is required (e.g. busybox:latest)"),
    ] {
        let mut spec = web_spec();
        let e = apply_update(&mut spec, &update_args(args), &ids).expect_err("refused");
        assert_eq!(e.to_string(), want, "{args:?}");
    }
    let mut global = web_spec();
    global.mode = ServiceMode::ModeGlobal as i32;
    global.replicas = 0;
    let e = apply_update(&mut global, &update_args(&["--replicas", "2", "web"]), &ids)
        .expect_err("global");
    assert_eq!(
        e.to_string(),
        "--replicas: cannot be used with a global service"
    );
    // a network gone from the manager is still removed by the ID the spec holds
    let mut spec = web_spec();
    apply_update(
        &mut spec,
        &update_args(&["--network-rm", "frontid", "web"]),
        &NetworkIds::new(),
    )
    .expect("by id");
    assert!(spec.task.expect("t").networks.is_empty());
}

#[test]
fn endpoint_document() {
    let svc = Service {
        id: "s1".into(),
        spec: Some(web_spec()),
        endpoint: Some(shoal_proto::v1::Endpoint {
            spec: web_spec().endpoint,
            ports: vec![port(8080, 80, "tcp", "ingress")],
            virtual_ips: vec![shoal_proto::v1::VirtualIp {
                network_id: "frontid".into(),
                addr: "10.1.0.2/24".into(),
            }],
        }),
        ..Default::default()
    };
    let doc = js::service(&svc);
    let ep = &doc["Endpoint"];
    assert_eq!(ep["Spec"]["Mode"], "vip");
    assert_eq!(ep["Spec"]["Ports"][1]["Protocol"], "udp");
    assert_eq!(
        ep["Ports"],
        json!([{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}])
    );
    assert_eq!(
        ep["VirtualIPs"],
        json!([{"NetworkID": "frontid", "Addr": "10.1.0.2/24"}])
    );
}

#[test]
fn pretty_inspect() {
    let a = create_args(&["--name", "web", "--limit-memory", "64M", "busybox"]);
    let svc = Service {
        id: "s1".into(),
        spec: Some(build_spec(&a).expect("valid")),
        ..Default::default()
    };
    let text = pretty(&svc);
    assert!(text.contains("Name:           web\n"), "{text}");
    assert!(text.contains(" Replicas:      1\n"));
    assert!(text.contains("  Memory:       64MiB\n"));
}
