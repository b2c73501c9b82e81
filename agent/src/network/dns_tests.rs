//! Tests of the resolver: the record table (pure), then a real resolver in a throwaway namespace
//! queried from inside it, forwarding to a fake upstream on the agent side's loopback (needs root;
//! skipped otherwise).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};

use hickory_server::proto::op::{Message, MessageType, Query};
use shoal_proto::v1::NetworkView;

use super::*;
use crate::network::lb::tests::{can_run_kernel_tests, endpoint, network, service, TestNs};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address literal")
}

fn ips(list: &[&str]) -> Vec<Ipv4Addr> {
    list.iter().map(|s| ip(s)).collect()
}

/// front: web (vip, alias www, two running tasks and a stopped one), db (dnsrr);
/// back: another service named web, and api; ingress: pub (never visible).
fn views() -> Vec<NetworkView> {
    let mut web = service("s1", "web", "vip", "10.1.0.100");
    web.aliases = vec!["www".into()];
    let front = NetworkView {
        version: 0,
        network: Some(network("n1", "front", false)),
        endpoints: vec![
            endpoint("t1", "s1", "10.1.0.3", true),
            endpoint("t2", "s1", "10.1.0.4", true),
            endpoint("t3", "s1", "10.1.0.5", false),
            endpoint("t4", "s2", "10.1.0.7", true),
            endpoint("t5", "s2", "10.1.0.6", true),
        ],
        services: vec![web, service("s2", "db", "dnsrr", "")],
    };
    let back = NetworkView {
        version: 0,
        network: Some(network("n2", "back", false)),
        endpoints: vec![
            endpoint("t6", "s3", "10.2.0.3", true),
            endpoint("t7", "s4", "10.2.0.4", true),
        ],
        services: vec![
            service("s3", "web", "vip", "10.2.0.100"),
            service("s4", "api", "vip", "10.2.0.101"),
        ],
    };
    let ingress = NetworkView {
        version: 0,
        network: Some(network("ing", "ingress", true)),
        endpoints: vec![endpoint("t8", "s5", "10.0.0.3", true)],
        services: vec![service("s5", "pub", "vip", "10.0.0.100")],
    };
    vec![front, back, ingress]
}

#[test]
fn records_answer_vips_tasks_dnsrr_and_aliases_of_shared_networks() {
    let r = records_for(&views());
    let get = |n: &str| r.lookup(n).map(<[Ipv4Addr]>::to_vec);
    assert_eq!(get("web"), Some(ips(&["10.1.0.100"])));
    assert_eq!(get("WEB.front."), Some(ips(&["10.1.0.100"])));
    assert_eq!(get("tasks.web"), Some(ips(&["10.1.0.3", "10.1.0.4"])));
    assert_eq!(get("tasks.web.front"), Some(ips(&["10.1.0.3", "10.1.0.4"])));
    assert_eq!(get("www"), Some(ips(&["10.1.0.100"])));
    assert_eq!(get("www.front"), Some(ips(&["10.1.0.100"])));
    assert_eq!(get("db"), Some(ips(&["10.1.0.6", "10.1.0.7"])));
    assert_eq!(get("tasks.db"), Some(ips(&["10.1.0.6", "10.1.0.7"])));
    // The same name on a later network: bare resolves on the first, qualified on its own.
    assert_eq!(get("web.back"), Some(ips(&["10.2.0.100"])));
    assert_eq!(get("tasks.web.back"), Some(ips(&["10.2.0.3"])));
    assert_eq!(get("api"), Some(ips(&["10.2.0.101"])));
    // Ingress carries no discovery; unknown names are not ours.
    assert_eq!(get("pub"), None);
    assert_eq!(get("pub.ingress"), None);
    assert_eq!(get("example.com"), None);
    assert_eq!(get("tasks.nothing"), None);
}

#[test]
fn a_service_without_running_task_is_ours_with_no_address() {
    let view = NetworkView {
        version: 0,
        network: Some(network("n1", "front", false)),
        endpoints: vec![endpoint("t1", "s1", "10.1.0.3", false)],
        services: vec![
            service("s1", "web", "dnsrr", ""),
            service("s2", "idle", "vip", "10.1.0.9"),
        ],
    };
    let r = records_for(&[view]);
    assert_eq!(r.lookup("web"), Some(&[][..]));
    assert_eq!(r.lookup("tasks.web"), Some(&[][..]));
    assert_eq!(r.lookup("idle"), Some(&[ip("10.1.0.9")][..]));
    assert_eq!(r.lookup("tasks.idle"), Some(&[][..]));
}

#[test]
fn resolv_conf_nameservers_are_the_upstreams() {
    let text = "# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver  192.0.2.1 \n\
                nameserver 2001:db8::1\nnameserver fe80::1%eth0\noptions ndots:0\n";
    let want: Vec<SocketAddr> = ["127.0.0.53:53", "192.0.2.1:53", "[2001:db8::1]:53"]
        .iter()
        .map(|s| s.parse().expect("literal"))
        .collect();
    assert_eq!(parse_resolv_conf(text), want);
}

// ---------------------------------------------------------------------------------------------
// A fake upstream on 127.0.0.1 of the test process's own namespace (the agent's side).
// ---------------------------------------------------------------------------------------------

/// Answers `example.test` with 192.0.2.7, `big.test` truncated over UDP and with 192.0.2.8 over
/// TCP, NXDOMAIN otherwise. Stopped on drop.
struct FakeUpstream {
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn upstream_answer(query: &[u8], over_tcp: bool) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let question = q.queries.first()?.clone();
    let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_available = true;
    let name = question.name().to_ascii().to_ascii_lowercase();
    match name.as_str() {
        "example.test." => m.answers.push(Record::from_rdata(
            question.name().clone(),
            60,
            RData::A(A(ip("192.0.2.7"))),
        )),
        "big.test." if !over_tcp => m.metadata.truncation = true,
        "big.test." => m.answers.push(Record::from_rdata(
            question.name().clone(),
            60,
            RData::A(A(ip("192.0.2.8"))),
        )),
        _ => m.metadata.response_code = ResponseCode::NXDomain,
    }
    m.add_query(question);
    m.to_vec().ok()
}

impl FakeUpstream {
    async fn start() -> FakeUpstream {
        // UDP and TCP on one port: take a UDP port, then the same TCP port (retry if taken).
        let (udp, tcp) = loop {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind fake upstream udp");
            let addr = udp.local_addr().expect("local addr");
            if let Ok(tcp) = tokio::net::TcpListener::bind(addr).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().expect("local addr");
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                if let Some(answer) = upstream_answer(&buf[..n], false) {
                    let _ = udp.send_to(&answer, from).await;
                }
            }
        });
        let tcp_task = tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                let Ok(len) = s.read_u16().await else {
                    continue;
                };
                let mut buf = vec![0u8; usize::from(len)];
                if s.read_exact(&mut buf).await.is_err() {
                    continue;
                }
                if let Some(answer) = upstream_answer(&buf, true) {
                    let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&answer);
                    let _ = s.write_all(&framed).await;
                }
            }
        });
        FakeUpstream {
            addr,
            tasks: vec![udp_task, tcp_task],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny client, run inside the task namespace
// ---------------------------------------------------------------------------------------------

fn query_bytes(name: &str, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).expect("query name"),
        rtype,
    ));
    m.to_vec().expect("encode query")
}

fn udp_exchange(name: &str, rtype: RecordType) -> std::io::Result<Message> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.send_to(&query_bytes(name, rtype), RESOLVER_ADDR)?;
    let mut buf = vec![0u8; 4096];
    let n = sock.recv(&mut buf)?;
    Message::from_vec(&buf[..n]).map_err(|e| std::io::Error::other(e.to_string()))
}

fn tcp_exchange(name: &str, rtype: RecordType) -> std::io::Result<Message> {
    let mut s = TcpStream::connect(RESOLVER_ADDR)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let q = query_bytes(name, rtype);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf)?;
    Message::from_vec(&buf).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Asks the resolver of `ns` over UDP (or TCP) from inside the namespace.
async fn ask(ns: &TestNs, name: &str, rtype: RecordType, tcp: bool) -> Message {
    let name = name.to_string();
    netns::on_thread(Some(ns.path()), "test-dns", move || {
        if tcp {
            tcp_exchange(&name, rtype)
        } else {
            udp_exchange(&name, rtype)
        }
    })
    .await
    .expect("enter task netns")
    .expect("DNS exchange")
}

fn addrs(m: &Message) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// Kernel tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_answers_service_names_forwards_the_rest_and_follows_updates() {
    if !can_run_kernel_tests() {
        return;
    }
    let ns = TestNs::new("dns");
    // A fresh namespace with lo down: the resolver brings it up.
    ns.ip(&["link", "set", "lo", "down"]);
    let upstream = FakeUpstream::start().await;
    let handle = Resolver::start_with_timeout(
        "task1",
        &ns.path(),
        vec![upstream.addr],
        Duration::from_secs(2),
    )
    .await
    .expect("start resolver");
    handle.update(records_for(&views()));

    let m = ask(&ns, "web", RecordType::A, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(addrs(&m), ips(&["10.1.0.100"]));
    assert!(m.answers.iter().all(|r| r.ttl == 0));
    for (name, want) in [
        ("WEB.Front.", ips(&["10.1.0.100"])),
        ("tasks.web", ips(&["10.1.0.3", "10.1.0.4"])),
        ("tasks.web.front", ips(&["10.1.0.3", "10.1.0.4"])),
        ("db", ips(&["10.1.0.6", "10.1.0.7"])),
        ("www", ips(&["10.1.0.100"])),
        ("www.front", ips(&["10.1.0.100"])),
        ("web.back", ips(&["10.2.0.100"])),
    ] {
        let m = ask(&ns, name, RecordType::A, false).await;
        assert_eq!(addrs(&m), want, "{name}");
    }
    // Over TCP too.
    assert_eq!(
        addrs(&ask(&ns, "tasks.db", RecordType::A, true).await),
        ips(&["10.1.0.6", "10.1.0.7"])
    );
    // AAAA of our name: NODATA, not forwarded.
    let m = ask(&ns, "web", RecordType::AAAA, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());

    // Forwarded: an answer, an NXDOMAIN, a truncated UDP answer retried over TCP.
    let m = ask(&ns, "example.test", RecordType::A, false).await;
    assert_eq!(addrs(&m), ips(&["192.0.2.7"]));
    let m = ask(&ns, "nothere.test", RecordType::A, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let m = ask(&ns, "big.test", RecordType::A, false).await;
    assert_eq!(addrs(&m), ips(&["192.0.2.8"]));
    // A bare unknown name goes upstream too (Docker does the same).
    let m = ask(&ns, "nosuchservice", RecordType::A, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);

    // Scale up web, remove db: the very next query sees it.
    let mut changed = views();
    changed[0]
        .endpoints
        .push(endpoint("t9", "s1", "10.1.0.8", true));
    changed[0].services.retain(|s| s.name != "db");
    handle.update(records_for(&changed));
    assert_eq!(
        addrs(&ask(&ns, "tasks.web", RecordType::A, false).await),
        ips(&["10.1.0.3", "10.1.0.4", "10.1.0.8"])
    );
    let m = ask(&ns, "db", RecordType::A, false).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "forwarded now"
    );

    // A real client: busybox nslookup inside the namespace.
    let out = ns.exec("busybox", &["nslookup", "web.front", "127.0.0.11"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("10.1.0.100"), "nslookup said: {text}");

    // stop() closes both sockets: they can be bound again at once.
    handle.stop().await;
    let rebound = netns::on_thread(Some(ns.path()), "test-rebind", || {
        UdpSocket::bind(RESOLVER_ADDR)?;
        std::net::TcpListener::bind(RESOLVER_ADDR)?;
        Ok::<(), std::io::Error>(())
    })
    .await
    .expect("enter netns");
    assert!(rebound.is_ok(), "{rebound:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_answers_servfail_when_no_upstream_answers() {
    if !can_run_kernel_tests() {
        return;
    }
    let ns = TestNs::new("dnsf");
    // An upstream that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind silent upstream");
    let silent_addr = silent.local_addr().expect("addr");
    let handle = Resolver::start_with_timeout(
        "task2",
        &ns.path(),
        vec![silent_addr],
        Duration::from_millis(300),
    )
    .await
    .expect("start resolver");
    handle.update(records_for(&views()));
    let m = ask(&ns, "example.test", RecordType::A, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    // Our names do not depend on upstreams.
    assert_eq!(
        addrs(&ask(&ns, "web", RecordType::A, false).await),
        ips(&["10.1.0.100"])
    );
    handle.stop().await;

    let empty = Resolver::start("task3", &ns.path(), Vec::new())
        .await
        .expect("restart resolver in the same netns");
    let m = ask(&ns, "example.test", RecordType::A, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    drop(empty);
}
