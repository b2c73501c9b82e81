use std::collections::HashMap;

use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::{
    NetworkAttachmentConfig, PortConfig, Service, StoreAction, StoreRequest, TaskSpec,
};

use super::*;

fn apply(s: &mut State, actions: Vec<Action>) {
    let req = StoreRequest {
        request_id: 1,
        actions: actions
            .into_iter()
            .map(|a| StoreAction { action: Some(a) })
            .collect(),
    };
    if let Err(e) = s.apply_request(1, &req) {
        panic!("apply failed: {e}");
    }
}

fn cluster() -> State {
    let mut s = State::default();
    apply(
        &mut s,
        ipam::predefined_networks(1)
            .into_iter()
            .map(Action::CreateNetwork)
            .collect(),
    );
    s
}

fn spec(name: &str, driver: &str, subnet: &str, gateway: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        driver: driver.into(),
        subnet: subnet.into(),
        gateway: gateway.into(),
        ..Default::default()
    }
}

/// Plans and writes a network; returns it.
fn create(s: &mut State, sp: NetworkSpec) -> Network {
    let n = plan_network(s, sp, 5).unwrap_or_else(|e| panic!("{}", e.message()));
    apply(s, vec![Action::CreateNetwork(n.clone())]);
    n
}

fn err(r: Result<Network, Status>) -> String {
    match r {
        Ok(n) => panic!("expected an error, got {n:?}"),
        Err(e) => e.message().to_string(),
    }
}

#[test]
fn overlay_networks_get_a_subnet_gateway_and_vni() {
    let mut s = cluster();
    let a = create(&mut s, spec("a", "", "", ""));
    assert_eq!(a.spec.as_ref().unwrap().driver, "overlay");
    assert_eq!(
        (a.subnet.as_str(), a.gateway.as_str(), a.vni),
        ("10.1.0.0/24", "10.1.0.1", 4097)
    );
    assert!(!a.predefined);
    let b = create(&mut s, spec("b", "overlay", "10.1.1.0/24", "10.1.1.254"));
    assert_eq!(
        (b.subnet.as_str(), b.gateway.as_str(), b.vni),
        ("10.1.1.0/24", "10.1.1.254", 4098)
    );
    let c = create(&mut s, spec("c", "overlay", "", ""));
    assert_eq!(c.subnet, "10.1.2.0/24");
    let lan = create(&mut s, spec("lan", "bridge", "", ""));
    assert_eq!(
        (lan.subnet.as_str(), lan.gateway.as_str(), lan.vni),
        ("172.18.0.0/24", "172.18.0.1", 0)
    );
    let mut enc = spec("secret", "overlay", "", "");
    enc.options = HashMap::from([("encrypted".to_string(), String::new())]);
    assert!(create(&mut s, enc).spec.unwrap().encrypted);
}

#[test]
fn bad_network_specs_are_refused_with_the_flag_named() {
    let mut s = cluster();
    create(&mut s, spec("taken", "overlay", "10.5.0.0/16", ""));
    let mut enc_bridge = spec("e", "bridge", "", "");
    enc_bridge.encrypted = true;
    let mut second_ingress = spec("ing2", "overlay", "", "");
    second_ingress.ingress = true;
    // (spec, words the error must contain)
    let cases = vec![
        (spec("", "overlay", "", ""), "needs a name"),
        (spec("bad name", "overlay", "", ""), "not valid"),
        (spec("taken", "overlay", "", ""), "already in use"),
        (spec("x", "macvlan", "", ""), "unknown driver"),
        (spec("x", "overlay", "10.1.0.0", ""), "--subnet"),
        (
            spec("x", "overlay", "10.1.0.5/24", ""),
            "it should be 10.1.0.0/24",
        ),
        (spec("x", "overlay", "10.5.3.0/24", ""), "overlaps"),
        (spec("x", "overlay", "10.0.0.0/8", ""), "overlaps"),
        (spec("x", "overlay", "10.255.9.0/24", ""), "WireGuard"),
        (spec("x", "overlay", "10.88.1.0/24", ""), "bridge"),
        (
            spec("x", "overlay", "10.9.0.0/24", "10.8.0.1"),
            "is outside the subnet",
        ),
        (
            spec("x", "overlay", "10.9.0.0/24", "10.9.0.255"),
            "network or broadcast address",
        ),
        (spec("x", "overlay", "10.9.0.0/24", "nope"), "--gateway"),
        (spec("x", "overlay", "", "10.9.0.1"), "needs --subnet"),
        (spec("x", "host", "", ""), "only one host network"),
        (spec("x", "none", "", ""), "only one none network"),
        (enc_bridge, "encrypted is only for overlay networks"),
        (second_ingress, "already the ingress network"),
    ];
    for (sp, want) in cases {
        let what = format!("{sp:?}");
        let got = err(plan_network(&s, sp, 5));
        assert!(got.contains(want), "{what}: {got:?} lacks {want:?}");
    }
}

#[test]
fn lookups_by_name_id_and_prefix() {
    let mut s = cluster();
    let n = create(&mut s, spec("front", "overlay", "", ""));
    assert_eq!(find_network(&s, "front").unwrap().id, n.id);
    assert_eq!(find_network(&s, &n.id).unwrap().id, n.id);
    assert_eq!(find_network(&s, &n.id[..20]).unwrap().id, n.id);
    assert_eq!(
        find_network(&s, "nope").unwrap_err().code(),
        tonic::Code::NotFound
    );
    assert_eq!(
        find_network(&s, "").unwrap_err().code(),
        tonic::Code::NotFound
    );
}

#[test]
fn predefined_networks_stay_but_an_unused_ingress_can_go() {
    let s = cluster();
    for name in ["bridge", "host", "none"] {
        let n = find_network(&s, name).unwrap();
        let e = check_removable(&s, &n).unwrap_err();
        assert!(
            e.message().contains("predefined"),
            "{name}: {}",
            e.message()
        );
    }
    let ingress = find_network(&s, "ingress").unwrap();
    assert!(check_removable(&s, &ingress).is_ok());

    let mut s = s;
    let mut svc = service("web", &[]);
    svc.spec.as_mut().unwrap().endpoint = Some(EndpointSpec {
        mode: "vip".into(),
        ports: vec![port(80, 8080, "")],
    });
    apply(&mut s, vec![Action::CreateService(svc)]);
    let e = check_removable(&s, &ingress).unwrap_err();
    assert!(e.message().contains("service web"), "{}", e.message());
}

#[test]
fn ingress_ports_need_an_ingress_network_which_can_be_replaced() {
    let mut s = cluster();
    let old = find_network(&s, "ingress").unwrap();
    apply(&mut s, vec![Action::RemoveNetwork(old.id.clone())]);
    let publishing = |mode: &str| {
        let mut sp = service("web", &[]).spec.unwrap();
        sp.endpoint = Some(EndpointSpec {
            mode: "vip".into(),
            ports: vec![port(80, 8080, mode)],
        });
        sp
    };
    let e = check_endpoint(&s, &mut publishing(""), None).unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("no ingress network") && e.message().contains("--ingress"),
        "{}",
        e.message()
    );
    assert!(check_endpoint(&s, &mut publishing("host"), None).is_ok());

    // A new ingress network with a larger subnet takes the old one's place.
    let mut big = spec("big-ingress", "overlay", "10.4.0.0/14", "");
    big.ingress = true;
    let big = create(&mut s, big);
    assert_eq!(big.subnet, "10.4.0.0/14");
    assert_eq!(
        crate::allocator::ingress_network(&s).map(|n| n.id.as_str()),
        Some(big.id.as_str())
    );
    assert!(check_endpoint(&s, &mut publishing(""), None).is_ok());
    let mut second = spec("again", "overlay", "", "");
    second.ingress = true;
    assert!(err(plan_network(&s, second, 6)).contains("already the ingress network"));
}

fn service(name: &str, networks: &[&str]) -> Service {
    Service {
        id: format!("id-{name}"),
        spec: Some(ServiceSpec {
            name: name.into(),
            task: Some(TaskSpec {
                networks: networks
                    .iter()
                    .map(|n| NetworkAttachmentConfig {
                        target: n.to_string(),
                        aliases: vec![],
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        spec_version: 1,
        ..Default::default()
    }
}

fn port(target: u32, published: u32, mode: &str) -> PortConfig {
    PortConfig {
        target_port: target,
        published_port: published,
        publish_mode: mode.into(),
        ..Default::default()
    }
}

#[test]
fn service_networks_resolve_to_ids() {
    let mut s = cluster();
    let front = create(&mut s, spec("front", "overlay", "", ""));
    let back = create(&mut s, spec("back", "overlay", "", ""));
    let mut sp = service("web", &["front", &back.id[..12]]).spec.unwrap();
    resolve_networks(&s, &mut sp).unwrap();
    let targets: Vec<String> = sp
        .task
        .unwrap()
        .networks
        .into_iter()
        .map(|c| c.target)
        .collect();
    assert_eq!(targets, [front.id.clone(), back.id.clone()]);

    // (networks, words of the error)
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["nope"], "--network: network \"nope\" not found"),
        (vec!["ingress"], "routing mesh"),
        (vec!["host", "front"], "cannot be on other networks"),
        (vec!["front", "none"], "cannot be on other networks"),
        (vec!["front", "front"], "given twice"),
    ];
    for (nets, want) in cases {
        let mut sp = service("web", &nets).spec.unwrap();
        let e = resolve_networks(&s, &mut sp).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains(want), "{nets:?}: {}", e.message());
    }
    let mut alone = service("web", &["host"]).spec.unwrap();
    assert!(resolve_networks(&s, &mut alone).is_ok());
}

#[test]
fn endpoints_are_normalized_and_published_ports_are_unique() {
    let mut s = cluster();
    let mut other = service("other", &[]);
    other.spec.as_mut().unwrap().endpoint = Some(EndpointSpec {
        mode: "vip".into(),
        ports: vec![port(80, 8080, "ingress")],
    });
    apply(&mut s, vec![Action::CreateService(other)]);

    let with = |mode: &str, ports: Vec<PortConfig>| {
        let mut sp = service("web", &[]).spec.unwrap();
        sp.endpoint = Some(EndpointSpec {
            mode: mode.into(),
            ports,
        });
        sp
    };
    let mut ok = with("", vec![port(80, 0, ""), port(53, 5353, "host")]);
    check_endpoint(&s, &mut ok, None).unwrap();
    let ep = ok.endpoint.unwrap();
    assert_eq!(ep.mode, "vip");
    assert_eq!(
        (
            ep.ports[0].protocol.as_str(),
            ep.ports[0].publish_mode.as_str()
        ),
        ("tcp", "ingress")
    );

    // The same port number over udp, or in host mode, is another port.
    let mut udp = with(
        "",
        vec![PortConfig {
            protocol: "udp".into(),
            ..port(80, 8080, "")
        }],
    );
    assert!(check_endpoint(&s, &mut udp, None).is_ok());
    let mut host = with("", vec![port(80, 8080, "host")]);
    assert!(check_endpoint(&s, &mut host, None).is_ok());
    // The service publishing it may keep it on update.
    let mut own = with("", vec![port(80, 8080, "")]);
    assert!(check_endpoint(&s, &mut own, Some("id-other")).is_ok());

    let cases = vec![
        (
            with("", vec![port(80, 8080, "")]),
            "already published by service other",
        ),
        (with("dnsrr", vec![port(80, 0, "")]), "dnsrr"),
        (with("dnsrr", vec![port(80, 0, "host")]), ""),
        (with("rr", vec![]), "--endpoint-mode"),
        (with("", vec![port(0, 80, "")]), "target port"),
        (with("", vec![port(80, 70000, "")]), "published port"),
        (
            with(
                "",
                vec![PortConfig {
                    protocol: "sctp".into(),
                    ..port(80, 0, "")
                }],
            ),
            "protocol",
        ),
        (with("", vec![port(80, 0, "bridge")]), "mode"),
        (
            with("", vec![port(80, 9000, ""), port(81, 9000, "")]),
            "published twice",
        ),
    ];
    for (mut sp, want) in cases {
        let what = format!("{:?}", sp.endpoint);
        match check_endpoint(&s, &mut sp, None) {
            Ok(()) => assert!(want.is_empty(), "{what}: accepted"),
            Err(e) => assert!(
                !want.is_empty() && e.message().contains(want),
                "{what}: {}",
                e.message()
            ),
        }
    }
}
