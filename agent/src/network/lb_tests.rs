//! Tests of the load-balancing rules: the ruleset text, then real traffic through real nftables in
//! namespaces built here (needs root and `nft`; skipped otherwise). Also the namespace fixture the
//! DNS tests share.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::v1::{EndpointView, Network, NetworkSpec, NetworkView, PortConfig, ServiceView};

use super::*;

// ---------------------------------------------------------------------------------------------
// Views and pure rules
// ---------------------------------------------------------------------------------------------

pub(crate) fn network(id: &str, name: &str, ingress: bool) -> Network {
    Network {
        id: id.to_string(),
        spec: Some(NetworkSpec {
            name: name.to_string(),
            driver: "overlay".to_string(),
            ingress,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn endpoint(task: &str, service: &str, addr: &str, running: bool) -> EndpointView {
    EndpointView {
        task_id: task.to_string(),
        service_id: service.to_string(),
        node_id: "node1".to_string(),
        node_addr: "192.0.2.1".to_string(),
        addr: addr.to_string(),
        running,
        slot: 1,
    }
}

pub(crate) fn service(id: &str, name: &str, mode: &str, vip: &str) -> ServiceView {
    ServiceView {
        service_id: id.to_string(),
        name: name.to_string(),
        mode: mode.to_string(),
        vip: vip.to_string(),
        ports: Vec::new(),
        aliases: Vec::new(),
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address literal")
}

#[test]
fn vips_cover_vip_mode_services_of_the_task_networks_with_running_tasks_only() {
    let front = NetworkView {
        network: Some(network("n1", "front", false)),
        endpoints: vec![
            endpoint("t1", "s1", "10.1.0.3", true),
            endpoint("t2", "s1", "10.1.0.4/24", true),
            endpoint("t3", "s1", "10.1.0.5", false),
            endpoint("t4", "s2", "10.1.0.6", true),
            // A node's own address, not a task's.
            endpoint("", "", "10.1.0.9", true),
        ],
        services: vec![
            service("s1", "web", "vip", "10.1.0.2"),
            service("s2", "db", "dnsrr", ""),
            service("s3", "idle", "vip", "10.1.0.7"),
        ],
    };
    let ingress = NetworkView {
        network: Some(network("ing", "ingress", true)),
        endpoints: vec![endpoint("t1", "s1", "10.0.0.3", true)],
        services: vec![service("s1", "web", "vip", "10.0.0.2")],
    };
    let vips = vips_for(&[front, ingress]);
    assert_eq!(
        vips,
        vec![
            Vip {
                service_id: "s1".into(),
                vip: ip("10.1.0.2"),
                backends: vec![ip("10.1.0.3"), ip("10.1.0.4")],
            },
            Vip {
                service_id: "s3".into(),
                vip: ip("10.1.0.7"),
                backends: vec![],
            },
        ]
    );
}

#[test]
fn vip_ruleset_replaces_the_table_with_dnat_maps_and_refusals() {
    let rules = vip_ruleset(&[
        Vip {
            service_id: "s1".into(),
            vip: ip("10.1.0.2"),
            backends: vec![ip("10.1.0.3"), ip("10.1.0.4")],
        },
        Vip {
            service_id: "s2".into(),
            vip: ip("10.1.0.7"),
            backends: vec![ip("10.1.0.8")],
        },
        Vip {
            service_id: "s3".into(),
            vip: ip("10.1.0.9"),
            backends: vec![],
        },
    ]);
    let expected = "add table ip shoal_vip\n\
        delete table ip shoal_vip\n\
        table ip shoal_vip {\n\
        \tchain output {\n\
        \t\ttype nat hook output priority -100; policy accept;\n\
        \t\tip daddr 10.1.0.2 dnat to numgen inc mod 2 map { 0 : 10.1.0.3, 1 : 10.1.0.4 }\n\
        \t\tip daddr 10.1.0.7 dnat to 10.1.0.8\n\
        \t}\n\
        \tchain refuse {\n\
        \t\ttype filter hook output priority 0; policy accept;\n\
        \t\tip daddr 10.1.0.9 reject\n\
        \t}\n\
        }\n";
    assert_eq!(rules, expected);
    assert_eq!(
        vip_ruleset(&[]),
        "add table ip shoal_vip\ndelete table ip shoal_vip\n"
    );
}

#[test]
fn ingress_rules_take_ingress_mode_ports_and_running_ingress_addresses() {
    let mut web = service("s1", "web", "vip", "10.0.0.2");
    web.ports = vec![
        PortConfig {
            protocol: "tcp".into(),
            target_port: 80,
            published_port: 8080,
            publish_mode: "ingress".into(),
            ..Default::default()
        },
        PortConfig {
            protocol: "udp".into(),
            target_port: 53,
            published_port: 5353,
            publish_mode: String::new(),
            ..Default::default()
        },
        PortConfig {
            protocol: "tcp".into(),
            target_port: 22,
            published_port: 2222,
            publish_mode: "host".into(),
            ..Default::default()
        },
    ];
    let view = NetworkView {
        network: Some(network("ing", "ingress", true)),
        endpoints: vec![
            endpoint("t1", "s1", "10.0.0.5", true),
            endpoint("t2", "s1", "10.0.0.4", true),
            endpoint("t3", "s1", "10.0.0.6", false),
        ],
        services: vec![web],
    };
    let b = |a: &str, p: u16| SocketAddrV4::new(ip(a), p);
    assert_eq!(
        ingress_port_rules(&view),
        vec![
            PortRule {
                protocol: Protocol::Tcp,
                published_port: 8080,
                backends: vec![b("10.0.0.4", 80), b("10.0.0.5", 80)],
            },
            PortRule {
                protocol: Protocol::Udp,
                published_port: 5353,
                backends: vec![b("10.0.0.4", 53), b("10.0.0.5", 53)],
            },
        ]
    );
}

#[test]
fn ports_ruleset_dnats_local_addresses_masquerades_and_refuses_empty_ports() {
    let b = |a: &str, p: u16| SocketAddrV4::new(ip(a), p);
    let mut rules = vec![
        PortRule {
            protocol: Protocol::Tcp,
            published_port: 8080,
            backends: vec![b("10.0.0.4", 80), b("10.0.0.5", 80)],
        },
        PortRule {
            protocol: Protocol::Udp,
            published_port: 5353,
            backends: vec![],
        },
        PortRule {
            protocol: Protocol::Tcp,
            published_port: 8081,
            backends: vec![],
        },
    ];
    rules.extend(host_port_rules(&[HostPort {
        protocol: Protocol::Tcp,
        published_port: 9090,
        addr: ip("10.88.0.5"),
        target_port: 90,
    }]));
    let text = ports_ruleset(Some("sbr12345678"), &rules);
    let expected = "add table ip shoal_ports\n\
        delete table ip shoal_ports\n\
        table ip shoal_ports {\n\
        \tchain prerouting {\n\
        \t\ttype nat hook prerouting priority -100; policy accept;\n\
        \t\tfib daddr type local jump published\n\
        \t}\n\
        \tchain output {\n\
        \t\ttype nat hook output priority -100; policy accept;\n\
        \t\tfib daddr type local jump published\n\
        \t}\n\
        \tchain published {\n\
        \t\ttcp dport 8080 dnat ip to numgen inc mod 2 map { 0 : 10.0.0.4 . 80, 1 : 10.0.0.5 . 80 }\n\
        \t\ttcp dport 9090 dnat to 10.88.0.5:90\n\
        \t}\n\
        \tchain postrouting {\n\
        \t\ttype nat hook postrouting priority 100; policy accept;\n\
        \t\tct status dnat oifname \"sbr12345678\" masquerade\n\
        \t\tct status dnat ip saddr 127.0.0.0/8 masquerade\n\
        \t\tct status dnat ip saddr . ip daddr { 10.0.0.4 . 10.0.0.4, 10.0.0.5 . 10.0.0.5, 10.88.0.5 . 10.88.0.5 } masquerade\n\
        \t}\n\
        \tchain refuse {\n\
        \t\ttype filter hook input priority 0; policy accept;\n\
        \t\tudp dport 5353 reject\n\
        \t\ttcp dport 8081 reject with tcp reset\n\
        \t}\n\
        }\n";
    assert_eq!(text, expected);
    assert_eq!(
        ports_ruleset(None, &[]),
        "add table ip shoal_ports\ndelete table ip shoal_ports\n"
    );
}

#[test]
fn rules_for_one_port_are_merged() {
    let b = |a: &str| SocketAddrV4::new(ip(a), 80);
    let rule = |addrs: &[&str]| PortRule {
        protocol: Protocol::Tcp,
        published_port: 8080,
        backends: addrs.iter().map(|a| b(a)).collect(),
    };
    let text = ports_ruleset(
        None,
        &[rule(&["10.0.0.4"]), rule(&["10.0.0.5", "10.0.0.4"])],
    );
    assert!(text.contains(
        "tcp dport 8080 dnat ip to numgen inc mod 2 map { 0 : 10.0.0.4 . 80, 1 : 10.0.0.5 . 80 }"
    ));
    assert!(!text.contains("oifname"));
}

#[test]
fn protocols_parse_like_port_configs() {
    assert_eq!(Protocol::parse(""), Some(Protocol::Tcp));
    assert_eq!(Protocol::parse("TCP"), Some(Protocol::Tcp));
    assert_eq!(Protocol::parse("udp"), Some(Protocol::Udp));
    assert_eq!(Protocol::parse("sctp"), None);
}

// ---------------------------------------------------------------------------------------------
// Namespace fixture (shared with the DNS tests)
// ---------------------------------------------------------------------------------------------

/// Whether the kernel tests can run here: root, `ip` and `nft`.
pub(crate) fn can_run_kernel_tests() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return false;
    }
    for tool in ["nft", "ip"] {
        if Command::new(tool).arg("-V").output().is_err() {
            eprintln!("skipped: {tool} is not installed");
            return false;
        }
    }
    true
}

/// A throwaway named network namespace, deleted on drop (its links, addresses, nft tables and
/// sockets' namespace go with it).
pub(crate) struct TestNs {
    pub name: String,
}

impl TestNs {
    pub fn new(role: &str) -> TestNs {
        let id = &shoal_proto::new_id()[..6];
        let name = format!("svc{role}-{id}");
        run("ip", &["netns", "add", &name]);
        let ns = TestNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        netns::path_of(&self.name)
    }

    /// `ip -n NAME ARGS...`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// `ip netns exec NAME PROG ARGS...`, returning stdout.
    pub fn exec(&self, prog: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, prog])
            .args(args)
            .output()
            .expect("run ip netns exec")
    }

    /// The sysctl `key` (a /proc/sys relative path) inside this namespace.
    pub fn sysctl(&self, key: &str) -> String {
        let out = self.exec("cat", &[&format!("/proc/sys/{key}")]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub(crate) fn run(prog: &str, args: &[&str]) {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {prog} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Puts the bridge port `port` of `ns` in hairpin mode, as attach must for task ports: with
/// br_netfilter active, a task's packet DNATed back to itself is bridged out the port it came in.
fn hairpin(ns: &TestNs, port: &str) {
    let out = ns.exec("bridge", &["link", "set", "dev", port, "hairpin", "on"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Plugs a new namespace-side interface `ifname` of `member` with `addr` (CIDR) into the bridge
/// `bridge` of `fabric`; `port` names the fabric side.
fn plug(fabric: &TestNs, bridge: &str, port: &str, member: &TestNs, ifname: &str, addr: &str) {
    fabric.ip(&[
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        ifname,
        "netns",
        &member.name,
    ]);
    fabric.ip(&["link", "set", port, "master", bridge, "up"]);
    member.ip(&["addr", "add", addr, "dev", ifname]);
    member.ip(&["link", "set", ifname, "up"]);
}

fn bridge(ns: &TestNs, name: &str) {
    ns.ip(&["link", "add", name, "type", "bridge"]);
    ns.ip(&["link", "set", name, "up"]);
}

/// A TCP server inside a namespace answering every connection with its name; stopped (and its
/// socket closed) on drop.
pub(crate) struct Backend {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves `reply` on 0.0.0.0:`port` inside `ns`.
async fn serve_name(ns: &TestNs, port: u16, reply: &str) -> Backend {
    let listener = netns::on_thread(Some(ns.path()), "test-listen", move || {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
    })
    .await
    .expect("enter backend netns")
    .expect("bind backend listener");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let reply = reply.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::spawn(move || {
        while !stopping.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut c, _)) => {
                    let _ = c.write_all(reply.as_bytes());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
    });
    Backend {
        stop,
        thread: Some(thread),
    }
}

/// Serves `reply` to every datagram on 0.0.0.0:`port`/udp inside `ns`.
async fn serve_name_udp(ns: &TestNs, port: u16, reply: &str) -> Backend {
    let socket = netns::on_thread(Some(ns.path()), "test-listen-udp", move || {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))
    })
    .await
    .expect("enter backend netns")
    .expect("bind backend udp socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("read timeout");
    let reply = reply.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stopping.load(Ordering::Relaxed) {
            if let Ok((_, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(reply.as_bytes(), from);
            }
        }
    });
    Backend {
        stop,
        thread: Some(thread),
    }
}

/// Sends `count` datagrams from inside `ns` to `to`, each from a fresh socket (a new flow), and
/// tallies who answered.
async fn tally_udp(ns: &TestNs, to: SocketAddrV4, count: usize) -> BTreeMap<String, usize> {
    netns::on_thread(Some(ns.path()), "test-udp", move || {
        let mut seen = BTreeMap::new();
        for _ in 0..count {
            let answer = (|| {
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.connect(to)?;
                s.send(b"?")?;
                let mut buf = [0u8; 64];
                let n = s.recv(&mut buf)?;
                Ok::<String, std::io::Error>(String::from_utf8_lossy(&buf[..n]).into_owned())
            })();
            let key = match answer {
                Ok(name) => name,
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => "refused".to_string(),
                Err(e) => format!("error: {:?}", e.kind()),
            };
            *seen.entry(key).or_insert(0) += 1;
        }
        seen
    })
    .await
    .expect("enter client netns")
}

/// Connects `count` times from inside `ns` to `to` and tallies who answered (or how it failed).
async fn tally(ns: &TestNs, to: SocketAddrV4, count: usize) -> BTreeMap<String, usize> {
    netns::on_thread(Some(ns.path()), "test-connect", move || {
        let mut seen = BTreeMap::new();
        for _ in 0..count {
            *seen.entry(ask(to)).or_insert(0) += 1;
        }
        seen
    })
    .await
    .expect("enter client netns")
}

/// One connection: the server's answer, or the kind of failure.
fn ask(to: SocketAddrV4) -> String {
    match TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)) {
        Ok(mut s) => {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut answer = String::new();
            match s.read_to_string(&mut answer) {
                Ok(_) => answer,
                Err(e) => format!("read error: {:?}", e.kind()),
            }
        }
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => "refused".to_string(),
        Err(e) => format!("connect error: {:?}", e.kind()),
    }
}

fn keys(m: &BTreeMap<String, usize>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

// ---------------------------------------------------------------------------------------------
// Kernel tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vip_connections_are_spread_over_running_backends_only() {
    if !can_run_kernel_tests() {
        return;
    }
    let fabric = TestNs::new("fab");
    let task = TestNs::new("task");
    let backends: Vec<TestNs> = (1..=3).map(|i| TestNs::new(&format!("be{i}"))).collect();
    let mut servers = Vec::new();
    bridge(&fabric, "br0");
    plug(&fabric, "br0", "vtask", &task, "eth0", "10.1.0.2/24");
    for (i, be) in backends.iter().enumerate() {
        let addr = format!("10.1.0.{}/24", 11 + i);
        plug(&fabric, "br0", &format!("vbe{i}"), be, "eth0", &addr);
        servers.push(serve_name(be, 80, &format!("be{}", i + 1)).await);
    }
    // The task serves too: reaching its own service's VIP must work (hairpin).
    servers.push(serve_name(&task, 80, "self").await);

    let vip = ip("10.1.0.100");
    let self_vip = ip("10.1.0.101");
    let all = vec![ip("10.1.0.11"), ip("10.1.0.12"), ip("10.1.0.13")];
    let vips = |backends: Vec<Ipv4Addr>| {
        vec![
            Vip {
                service_id: "web".into(),
                vip,
                backends,
            },
            Vip {
                service_id: "me".into(),
                vip: self_vip,
                backends: vec![ip("10.1.0.2")],
            },
        ]
    };
    apply_vip("task1", &task.path(), &vips(all.clone()))
        .await
        .expect("apply VIP rules");
    let seen = tally(&task, SocketAddrV4::new(vip, 80), 30).await;
    assert_eq!(keys(&seen), ["be1", "be2", "be3"], "{seen:?}");
    let seen = tally(&task, SocketAddrV4::new(self_vip, 80), 3).await;
    assert_eq!(keys(&seen), ["self"], "{seen:?}");

    // be3 stops: it leaves the rotation at once.
    apply_vip("task1", &task.path(), &vips(all[..2].to_vec()))
        .await
        .expect("apply VIP rules without be3");
    let seen = tally(&task, SocketAddrV4::new(vip, 80), 30).await;
    assert_eq!(keys(&seen), ["be1", "be2"], "{seen:?}");

    // No running task: refused, not hanging.
    apply_vip("task1", &task.path(), &vips(Vec::new()))
        .await
        .expect("apply VIP rules with no backend");
    let seen = tally(&task, SocketAddrV4::new(vip, 80), 3).await;
    assert_eq!(keys(&seen), ["refused"], "{seen:?}");

    // Empty set: the table is gone.
    apply_vip("task1", &task.path(), &[])
        .await
        .expect("remove VIP rules");
    let out = task.exec("nft", &["list", "tables"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(VIP_TABLE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_ports_reach_backends_from_outside_and_from_the_host_itself() {
    if !can_run_kernel_tests() {
        return;
    }
    // host: ingress bridge with the node's ingress address, a local bridge with a host-mode task,
    // and an uplink to a client.
    let host = TestNs::new("host");
    let client = TestNs::new("cli");
    let be1 = TestNs::new("ing1");
    let be2 = TestNs::new("ing2");
    let local_task = TestNs::new("loc");
    let ingress_bridge = "sbr1a2b3c4d";
    bridge(&host, ingress_bridge);
    host.ip(&["addr", "add", "10.0.0.2/16", "dev", ingress_bridge]);
    plug(&host, ingress_bridge, "ving1", &be1, "eth0", "10.0.0.5/16");
    plug(&host, ingress_bridge, "ving2", &be2, "eth0", "10.0.0.6/16");
    hairpin(&host, "ving1");
    hairpin(&host, "ving2");
    let _s1 = serve_name(&be1, 80, "ing1").await;
    let _s2 = serve_name(&be2, 80, "ing2").await;
    let _u1 = serve_name_udp(&be1, 53, "ing1").await;
    let _u2 = serve_name_udp(&be2, 53, "ing2").await;
    bridge(&host, "shl0");
    host.ip(&["addr", "add", "10.88.0.1/16", "dev", "shl0"]);
    plug(&host, "shl0", "vloc", &local_task, "eth0", "10.88.0.5/16");
    hairpin(&host, "vloc");
    local_task.ip(&["route", "add", "default", "via", "10.88.0.1"]);
    let _s3 = serve_name(&local_task, 90, "hosttask").await;
    host.ip(&[
        "link",
        "add",
        "up0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &client.name,
    ]);
    host.ip(&["addr", "add", "10.99.0.1/24", "dev", "up0"]);
    host.ip(&["link", "set", "up0", "up"]);
    client.ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"]);
    client.ip(&["link", "set", "eth0", "up"]);

    let view = NetworkView {
        network: Some(network("1a2b3c4d5e", "ingress", true)),
        endpoints: vec![
            endpoint("t1", "s1", "10.0.0.5", true),
            endpoint("t2", "s1", "10.0.0.6", true),
            endpoint("", "", "10.0.0.2", true),
        ],
        services: vec![
            ServiceView {
                ports: vec![
                    PortConfig {
                        protocol: "tcp".into(),
                        target_port: 80,
                        published_port: 8080,
                        publish_mode: "ingress".into(),
                        ..Default::default()
                    },
                    PortConfig {
                        protocol: "udp".into(),
                        target_port: 53,
                        published_port: 5353,
                        publish_mode: "ingress".into(),
                        ..Default::default()
                    },
                ],
                ..service("s1", "web", "vip", "10.0.0.3")
            },
            ServiceView {
                ports: vec![PortConfig {
                    protocol: "tcp".into(),
                    target_port: 80,
                    published_port: 8081,
                    publish_mode: "ingress".into(),
                    ..Default::default()
                }],
                ..service("s2", "down", "vip", "10.0.0.4")
            },
        ],
    };
    let mut rules = ingress_port_rules(&view);
    rules.extend(host_port_rules(&[HostPort {
        protocol: Protocol::Tcp,
        published_port: 9090,
        addr: ip("10.88.0.5"),
        target_port: 90,
    }]));
    // As the agent does: the loopback guard first; every path below must work behind it.
    use crate::network::guard;
    guard::apply(
        Some(host.path()),
        guard::ruleset(&guard::Guard::default(), true),
    )
    .await
    .expect("apply the exposure rules");
    apply_ports(Some(&host.path()), Some(ingress_bridge), &rules)
        .await
        .expect("apply published ports");
    assert_eq!(host.sysctl("net/ipv4/conf/all/route_localnet"), "1");

    let at = |a: &str, p: u16| SocketAddrV4::new(ip(a), p);
    // From another machine: balanced over both ingress backends.
    let seen = tally(&client, at("10.99.0.1", 8080), 20).await;
    assert_eq!(keys(&seen), ["ing1", "ing2"], "{seen:?}");
    // From the host itself: loopback, the uplink address, the ingress address.
    for to in [
        at("127.0.0.1", 8080),
        at("10.99.0.1", 8080),
        at("10.0.0.2", 8080),
    ] {
        let seen = tally(&host, to, 4).await;
        assert_eq!(keys(&seen), ["ing1", "ing2"], "{to}: {seen:?}");
    }
    // UDP too, from outside and from the host.
    let seen = tally_udp(&client, at("10.99.0.1", 5353), 20).await;
    assert_eq!(keys(&seen), ["ing1", "ing2"], "{seen:?}");
    let seen = tally_udp(&host, at("127.0.0.1", 5353), 10).await;
    assert_eq!(keys(&seen), ["ing1", "ing2"], "{seen:?}");
    // A service with no running task: refused.
    assert_eq!(
        keys(&tally(&client, at("10.99.0.1", 8081), 2).await),
        ["refused"]
    );
    assert_eq!(
        keys(&tally(&host, at("127.0.0.1", 8081), 2).await),
        ["refused"]
    );
    // Host mode: the local task, from outside and from the host.
    assert_eq!(
        keys(&tally(&client, at("10.99.0.1", 9090), 2).await),
        ["hosttask"]
    );
    assert_eq!(
        keys(&tally(&host, at("127.0.0.1", 9090), 2).await),
        ["hosttask"]
    );
    // Hairpin: the tasks reach their own published ports through the host.
    for to in [at("10.88.0.1", 9090), at("10.99.0.1", 9090)] {
        assert_eq!(keys(&tally(&local_task, to, 2).await), ["hosttask"], "{to}");
    }
    let seen = tally(&local_task, at("10.99.0.1", 8080), 10).await;
    assert_eq!(keys(&seen), ["ing1", "ing2"], "{seen:?}");
    // An ingress backend reaching the routing mesh through the node, itself included.
    let seen = tally(&be1, at("10.0.0.2", 8080), 10).await;
    assert_eq!(keys(&seen), ["ing1", "ing2"], "{seen:?}");

    // A backend stops: it leaves the rotation.
    let view = NetworkView {
        endpoints: vec![
            endpoint("t1", "s1", "10.0.0.5", true),
            endpoint("t2", "s1", "10.0.0.6", false),
        ],
        ..view
    };
    apply_ports(
        Some(&host.path()),
        Some(ingress_bridge),
        &ingress_port_rules(&view),
    )
    .await
    .expect("re-apply published ports");
    assert_eq!(
        keys(&tally(&client, at("10.99.0.1", 8080), 10).await),
        ["ing1"]
    );
    // The host-mode port went with the rules not given any more.
    assert_eq!(
        keys(&tally(&client, at("10.99.0.1", 9090), 1).await),
        ["refused"]
    );

    cleanup(Some(&host.path())).await.expect("cleanup");
    cleanup(Some(&host.path()))
        .await
        .expect("cleanup is idempotent");
    assert_eq!(host.sysctl("net/ipv4/conf/all/route_localnet"), "0");
    let out = host.exec("nft", &["list", "tables"]);
    let tables = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !tables.contains(PORTS_TABLE) && !tables.contains(VIP_TABLE),
        "{tables}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_masquerade_table_is_left_alone() {
    if !can_run_kernel_tests() {
        return;
    }
    let host = TestNs::new("keep");
    let out = host.exec("nft", &["add", "table", "ip", "shoal"]);
    assert!(out.status.success());
    apply_ports(
        Some(&host.path()),
        None,
        &host_port_rules(&[HostPort {
            protocol: Protocol::Udp,
            published_port: 5000,
            addr: ip("10.88.0.9"),
            target_port: 5000,
        }]),
    )
    .await
    .expect("apply");
    cleanup(Some(&host.path())).await.expect("cleanup");
    let out = host.exec("nft", &["list", "tables"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "table ip shoal"
    );
}
