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
        ..Default::default()
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address literal")
}

#[test]
fn vips_cover_vip_mode_services_of_the_task_networks_with_running_tasks_only() {
    let front = NetworkView {
        version: 0,
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
        version: 0,
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
        version: 0,
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
pub(crate) fn plug(
    fabric: &TestNs,
    bridge: &str,
    port: &str,
    member: &TestNs,
    ifname: &str,
    addr: &str,
) {
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

pub(crate) fn bridge(ns: &TestNs, name: &str) {
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

#[path = "lb_kernel_tests.rs"]
mod kernel;
