//! Networks, attachments and published ports, through the real shoalctl.

use shoal_proto::v1::*;

use crate::harness::*;

fn targets(spec: &ServiceSpec) -> Vec<String> {
    spec.task
        .as_ref()
        .map(|t| t.networks.iter().map(|n| n.target.clone()).collect())
        .unwrap_or_default()
}

fn ports(spec: &ServiceSpec) -> Vec<(u32, u32, String, String)> {
    spec.endpoint
        .as_ref()
        .map(|e| {
            e.ports
                .iter()
                .map(|p| {
                    (
                        p.published_port,
                        p.target_port,
                        p.protocol.clone(),
                        p.publish_mode.clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn port(published: u32, target: u32, protocol: &str, mode: &str) -> (u32, u32, String, String) {
    (published, target, protocol.into(), mode.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_against_a_fake_manager() {
    let served = serve("networks").await;
    let conf = served.conf.clone();
    let fake = served.fake.clone();

    // create prints the id; the spec sent carries every flag
    let r = shoalctl(
        &conf,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.5.0.0/24",
            "--gateway",
            "10.5.0.254",
            "--opt",
            "encrypted",
            "-o",
            "mtu=1400",
            "--attachable",
            "--label",
            "team=a",
            "front",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let front_id = r.stdout.trim().to_string();
    assert!(front_id.starts_with("net04"), "{}", r.stdout);
    {
        let st = fake.lock();
        let spec = st.networks[4].spec.clone().expect("spec");
        assert_eq!(spec.name, "front");
        assert_eq!(spec.driver, "overlay");
        assert_eq!(spec.subnet, "10.5.0.0/24");
        assert_eq!(spec.gateway, "10.5.0.254");
        assert!(spec.encrypted && spec.attachable);
        assert_eq!(spec.options.get("mtu").map(String::as_str), Some("1400"));
        assert_eq!(spec.labels.get("team").map(String::as_str), Some("a"));
    }
    let r = shoalctl(&conf, &["network", "create", "back"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let back_id = r.stdout.trim().to_string();
    let r = shoalctl(&conf, &["network", "create", "-d", "bridge", "extra"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);

    // client-side checks fail before anything is sent, naming the field
    for (args, err) in [
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.6.0.0/24",
                "--gateway",
                "10.7.0.1",
                "x",
            ][..],
            "Error: --gateway: 10.7.0.1 is outside the subnet 10.6.0.0/24\n",
        ),
        (
            &["network", "create", "--subnet", "10.6.0.0/33", "x"],
            "Error: --subnet: \"10.6.0.0/33\" has an invalid prefix length \"33\" (0-32)\n",
        ),
        (
            &[
                "network",
                "create",
                "-d",
                "bridge",
                "--opt",
                "encrypted",
                "x",
            ],
            "Error: --opt: encrypted is only for overlay networks, not bridge\n",
        ),
    ] {
        let r = shoalctl(&conf, args).await;
        assert_eq!((r.code, r.stderr.as_str()), (1, err), "{args:?}");
    }
    let r = shoalctl(&conf, &["network", "create", "-d", "macvlan", "x"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .starts_with("Error: --driver: invalid value \"macvlan\""),
        "{}",
        r.stderr
    );
    assert_eq!(fake.lock().networks.len(), 7, "nothing was created");
    let r = shoalctl(&conf, &["network", "create", "front"]).await;
    assert_eq!(r.stderr, "Error: name: network front already exists\n");

    // ls: docker's columns, sorted by name; -q; json rows
    let r = shoalctl(&conf, &["network", "ls"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "NETWORK ID     NAME      DRIVER    SCOPE");
    let names: Vec<&str> = lines[1..]
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        names,
        vec!["back", "bridge", "extra", "front", "host", "ingress", "none"]
    );
    assert_eq!(
        lines[4],
        format!("{}   front     overlay   swarm", &front_id[..12])
    );
    assert!(lines[2].ends_with("bridge    local"), "{}", lines[2]);
    let r = shoalctl(&conf, &["network", "ls", "-q", "--no-trunc"]).await;
    assert_eq!(r.stdout.lines().nth(3), Some(front_id.as_str()));
    let r = shoalctl(&conf, &["network", "ls", "--format", "json"]).await;
    let row: serde_json::Value =
        serde_json::from_str(r.stdout.lines().nth(3).unwrap_or_default()).expect("json row");
    assert_eq!(row["Name"], "front");
    assert_eq!(row["Scope"], "swarm");
    assert_eq!(row["Labels"], "team=a");

    // service create with networks and published ports: names go out, the manager stores ids
    let r = shoalctl(
        &conf,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--network",
            "front",
            "--network",
            "name=back,alias=api",
            "-p",
            "8080:80",
            "--publish",
            "published=5353,target=53,protocol=udp,mode=host",
            "busybox",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.ends_with("verify: Service converged\n"),
        "{}",
        r.stdout
    );
    let stored = fake.lock().services[0].spec.clone().expect("spec");
    assert_eq!(targets(&stored), vec![front_id.clone(), back_id.clone()]);
    assert_eq!(
        stored.task.as_ref().map(|t| t.networks[1].aliases.clone()),
        Some(vec!["api".to_string()])
    );
    assert_eq!(
        ports(&stored),
        vec![
            port(8080, 80, "tcp", "ingress"),
            port(5353, 53, "udp", "host")
        ]
    );
    let r = shoalctl(
        &conf,
        &[
            "service", "create", "--name", "x", "-p", "8080:80", "-p", "8080:81", "busybox",
        ],
    )
    .await;
    assert_eq!(
        r.stderr,
        "Error: --publish: published port 8080/tcp is given twice\n"
    );
    let r = shoalctl(
        &conf,
        &[
            "service",
            "create",
            "--name",
            "x",
            "-d",
            "--network",
            "nope",
            "busybox",
        ],
    )
    .await;
    assert_eq!(r.stderr, "Error: network nope not found\n");

    // ls shows the ingress ports; inspect the networks and the endpoint with docker's names
    let r = shoalctl(&conf, &["service", "ls"]).await;
    assert!(
        r.stdout
            .lines()
            .next()
            .unwrap_or_default()
            .ends_with("IMAGE     PORTS"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .lines()
            .nth(1)
            .unwrap_or_default()
            .ends_with("busybox   *:8080->80/tcp"),
        "{}",
        r.stdout
    );
    let r = shoalctl(&conf, &["service", "ls", "--format", "json"]).await;
    let row: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("json row");
    assert_eq!(row["Ports"], "*:8080->80/tcp");
    let r = shoalctl(&conf, &["service", "inspect", "web"]).await;
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).expect("inspect json");
    let svc = &doc[0];
    assert_eq!(
        svc["Spec"]["TaskTemplate"]["Networks"],
        serde_json::json!([{"Target": front_id}, {"Target": back_id, "Aliases": ["api"]}])
    );
    assert_eq!(svc["Spec"]["EndpointSpec"]["Mode"], "vip");
    assert_eq!(
        svc["Spec"]["EndpointSpec"]["Ports"][0],
        serde_json::json!({"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"})
    );
    assert_eq!(svc["Endpoint"]["Ports"][1]["PublishMode"], "host");
    assert_eq!(
        svc["Endpoint"]["VirtualIPs"][0],
        serde_json::json!({"NetworkID": front_id, "Addr": "10.5.0.2/24"})
    );
    assert_eq!(
        svc["Endpoint"]["VirtualIPs"][2]["NetworkID"],
        "ingress000000000000000000"
    );

    let r = shoalctl(&conf, &["network", "inspect", "front", "--format", "json"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).expect("network json");
    let n = &doc[0];
    assert_eq!(n["Name"], "front");
    assert_eq!(n["Id"], front_id.as_str());
    assert_eq!(n["Scope"], "swarm");
    assert_eq!(n["Driver"], "overlay");
    assert_eq!(n["Attachable"], true);
    assert_eq!(n["Ingress"], false);
    assert_eq!(
        n["IPAM"],
        serde_json::json!({"Driver": "default", "Options": {}, "Config": [{"Subnet": "10.5.0.0/24", "Gateway": "10.5.0.254"}]})
    );
    assert_eq!(n["Options"]["encrypted"], "");
    assert_eq!(n["Options"]["mtu"], "1400");
    assert_eq!(n["Labels"], serde_json::json!({"team": "a"}));
    assert_eq!(
        n["Services"],
        serde_json::json!({"web": {"VIP": "10.5.0.2"}})
    );
    let r = shoalctl(&conf, &["network", "inspect", "ingress", "nope"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr, "Error: network nope not found\n");
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).expect("partial json");
    assert_eq!(doc[0]["Ingress"], true);

    // rm of a network in use: the manager's error, naming the service
    let r = shoalctl(&conf, &["network", "rm", "front"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "Error: front: network front is in use by service web\n")
    );

    // update: publish and network changes go out as a whole spec; waits for the new tasks
    let r = shoalctl(
        &conf,
        &[
            "service",
            "update",
            "--publish-add",
            "9090:90",
            "--publish-rm",
            "5353",
            "--network-add",
            "extra",
            "web",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("web\n"), "{}", r.stdout);
    assert!(
        r.stdout.contains("overall progress: 2 out of 2 tasks"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.ends_with("verify: Service converged\n"),
        "{}",
        r.stdout
    );
    let sent = sent_spec(&fake);
    assert_eq!(
        fake.lock().updates[0].name_or_id,
        "svc00abcdefghijklmnopqrstu"
    );
    assert_eq!(
        targets(&sent),
        vec![front_id.clone(), back_id.clone(), "extra".to_string()]
    );
    assert_eq!(
        ports(&sent),
        vec![
            port(8080, 80, "tcp", "ingress"),
            port(9090, 90, "tcp", "ingress")
        ]
    );
    {
        let st = fake.lock();
        assert_eq!(st.services[0].spec_version, 2);
        let running_v2 = st
            .tasks
            .iter()
            .filter(|t| {
                t.spec_version == 2
                    && t.status.as_ref().map(|s| s.state) == Some(TaskState::TaskRunning as i32)
            })
            .count();
        assert_eq!(running_v2, 2, "the wait ended once the new tasks ran");
    }
    let r = shoalctl(&conf, &["service", "ls"]).await;
    assert!(
        r.stdout.contains("*:8080->80/tcp, *:9090->90/tcp"),
        "{}",
        r.stdout
    );

    let r = shoalctl(
        &conf,
        &[
            "service",
            "update",
            "-d",
            "--network-rm",
            "back",
            "--endpoint-mode",
            "dnsrr",
            "--publish-rm",
            "published=8080,protocol=tcp",
            "--publish-rm",
            "9090",
            "web",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "web\n");
    let sent = sent_spec(&fake);
    assert_eq!(
        targets(&sent),
        vec![front_id.clone(), fake.lock().networks[6].id.clone()]
    );
    assert!(ports(&sent).is_empty());
    assert_eq!(
        sent.endpoint.as_ref().map(|e| e.mode.as_str()),
        Some("dnsrr")
    );

    // refusals: named fields, nothing sent
    let updates = fake.lock().updates.len();
    for (args, err) in [
        (&["service", "update", "--network-add", "front", "web"][..], "Error: --network-add: service web is already attached to network front\n"),
        (&["service", "update", "--publish-add", "8080:80", "web"], "Error: --endpoint-mode: dnsrr cannot serve the ingress-mode port 8080/tcp (publish it with mode=host, or use vip)\n"),
        (&["service", "update", "web"], "Error: nothing to update: give at least one flag (see shoalctl service update --help)\n"),
        (&["service", "update", "--network-add", "nope", "web"], "Error: network nope: network nope not found\n"),
    ] {
        let r = shoalctl(&conf, args).await;
        assert_eq!((r.code, r.stderr.as_str()), (1, err), "{args:?}");
    }
    assert_eq!(fake.lock().updates.len(), updates);

    // once the service is gone its networks go too; predefined ones stay
    let r = shoalctl(&conf, &["service", "rm", "web"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = shoalctl(
        &conf,
        &["network", "rm", "front", "bridge", "back", "extra"],
    )
    .await;
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "front\nback\nextra\n");
    assert_eq!(
        r.stderr,
        "Error: bridge: network bridge is predefined and cannot be removed\n"
    );
    assert_eq!(fake.lock().networks.len(), 4);

    served.stop().await;
}
