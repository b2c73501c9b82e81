//! Tests of the WireGuard mesh. The pure ones run anywhere; the kernel ones need root and
//! `/dev/net/tun`, and build two "hosts" as throwaway namespaces joined by a veth underlay.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Instant;

use shoal_tests::capture::Capture;

use super::*;
use std::os::unix::fs::PermissionsExt as _;

fn peer(node: &str, key: &str, endpoint: &str, mesh_addr: &str) -> MeshPeer {
    MeshPeer {
        node_id: node.into(),
        public_key: key.into(),
        endpoint: endpoint.into(),
        mesh_addr: mesh_addr.into(),
    }
}

fn spec(endpoint: &str, ip: [u8; 4]) -> PeerSpec {
    PeerSpec {
        endpoint: endpoint.parse().expect("endpoint literal"),
        mesh_ip: Ipv4Addr::from(ip),
    }
}

#[test]
fn a_mesh_can_move_between_tasks() {
    fn is_send<T: Send>() {}
    is_send::<Mesh>();
}

#[test]
fn device_names_come_from_the_node_id() {
    assert_eq!(
        device_name("abcdef0123456789").expect("name"),
        "swgabcdef01"
    );
    assert_eq!(device_name("abc").expect("name"), "swgabc");
    for bad in ["", "ab/cdefgh", "é"] {
        assert!(matches!(
            device_name(bad),
            Err(MeshError::InvalidNodeId { .. })
        ));
    }
}

#[test]
fn the_key_is_generated_once_kept_private_and_reloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Mesh::open(dir.path(), "node0001", DEFAULT_PORT, None).expect("open");
    let path = dir.path().join("network/wg.key");
    let mode = std::fs::metadata(&path)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let b = Mesh::open(dir.path(), "node0001", DEFAULT_PORT, None).expect("reopen");
    assert_eq!(a.public_key(), b.public_key());
    assert_eq!(
        Key::from_base64(a.public_key()).expect("base64").0.len(),
        32
    );
    // The private key never shows in Debug output.
    let text = std::fs::read_to_string(&path).expect("read key");
    assert!(!format!("{a:?}").contains(text.trim()));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    Mesh::open(dir.path(), "node0001", DEFAULT_PORT, None).expect("reopen");
    let mode = std::fs::metadata(&path)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "a key readable by others is made private"
    );

    std::fs::write(&path, "not a key").expect("write");
    assert!(matches!(
        Mesh::open(dir.path(), "node0001", DEFAULT_PORT, None),
        Err(MeshError::BadKey { .. })
    ));
}

#[test]
fn desired_peers_skip_self_and_invalid_entries() {
    let own = Key::generate_private().get_public().to_base64();
    let other = Key::generate_private().get_public().to_base64();
    let peers = [
        peer("me", &own, "192.0.2.1:51820", "10.255.0.1/16"),
        peer("b", &other, "192.0.2.2:51820", "10.255.0.2/16"),
        peer("bad-key", "xyz", "192.0.2.3:51820", "10.255.0.3/16"),
        peer("bad-endpoint", &other, "nowhere", "10.255.0.4/16"),
        peer("bad-addr", &other, "192.0.2.5:51820", "10.255.0.x"),
    ];
    let desired = desired_peers(&peers, &own);
    assert_eq!(desired.len(), 1);
    assert_eq!(desired[&other], spec("192.0.2.2:51820", [10, 255, 0, 2]));
}

#[test]
fn peer_plans_touch_only_what_changed() {
    let cur: BTreeMap<String, PeerSpec> = [
        ("a".to_string(), spec("192.0.2.1:51820", [10, 255, 0, 1])),
        ("b".to_string(), spec("192.0.2.2:51820", [10, 255, 0, 2])),
        ("c".to_string(), spec("192.0.2.3:51820", [10, 255, 0, 3])),
    ]
    .into();
    let mut want = cur.clone();
    assert_eq!(plan_peers(Some(&cur), &want), PeerPlan::default());

    want.remove("a");
    want.insert("b".into(), spec("192.0.2.22:51820", [10, 255, 0, 2]));
    want.insert("d".into(), spec("192.0.2.4:51820", [10, 255, 0, 4]));
    let plan = plan_peers(Some(&cur), &want);
    assert!(!plan.replace);
    assert_eq!(plan.remove, vec!["a".to_string(), "b".to_string()]);
    let added: Vec<&str> = plan.add.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(added, vec!["b", "d"]);

    let plan = plan_peers(None, &want);
    assert!(plan.replace && plan.remove.is_empty() && plan.add.len() == 3);
}

#[test]
fn kernel_wireguard_is_chosen_wherever_it_exists() {
    let cases = [
        (true, true, Some(EngineKind::Kernel)),
        (true, false, Some(EngineKind::Kernel)),
        (false, true, Some(EngineKind::Userspace)),
        (false, false, None),
    ];
    for (kernel_wireguard, tun, want) in cases {
        let caps = Capabilities {
            kernel_wireguard,
            tun,
        };
        assert_eq!(select_engine(caps), want, "{caps:?}");
    }
}

#[test]
fn userspace_peers_carry_key_endpoint_allowed_ip_and_keepalive() {
    let k1 = Key::generate_private().get_public();
    let k2 = Key::generate_private().get_public();
    let plan = PeerPlan {
        replace: false,
        remove: vec![k1.to_base64()],
        add: vec![
            (k1.to_base64(), spec("192.0.2.9:51820", [10, 255, 0, 9])),
            (k2.to_base64(), spec("[2001:db8::2]:51820", [10, 255, 0, 2])),
        ],
    };
    let peers = userspace_peers(&plan);
    assert_eq!(
        peers,
        vec![userspace::PeerConfig {
            public_key: <[u8; 32]>::try_from(k1.as_bytes()).expect("32-byte key"),
            endpoint: "192.0.2.9:51820".parse().expect("endpoint literal"),
            mesh_ip: Ipv4Addr::new(10, 255, 0, 9),
            keepalive: KEEPALIVE_SECS,
        }],
        "the IPv6 endpoint is skipped"
    );
    assert!(userspace_peers(&PeerPlan::default()).is_empty());
}

// ---- kernel tests ----

/// Where boringtun would put a UAPI socket file if it were asked to (it must not be).
fn uapi_socket(ifname: &str) -> PathBuf {
    Path::new("/var/run/wireguard").join(format!("{ifname}.sock"))
}

/// Whether the kernel tests can run here: root and a TUN device node.
fn can_run_kernel_tests() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return false;
    }
    if !Path::new("/dev/net/tun").exists() {
        eprintln!("skipped: no /dev/net/tun");
        return false;
    }
    true
}

/// Underlay addresses of the two test hosts.
const UNDERLAY_A: Ipv4Addr = Ipv4Addr::new(192, 168, 211, 1);
const UNDERLAY_B: Ipv4Addr = Ipv4Addr::new(192, 168, 211, 2);
/// Mesh addresses of the two test hosts.
const MESH_A: &str = "10.255.0.1/16";
const MESH_B: &str = "10.255.0.2/16";
const MESH_IP_A: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
const MESH_IP_B: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 2);
/// The underlay veth end in host A.
const UNDERLAY_IF_A: &str = "ula";

/// Runs `ip` with `args` and fails the test if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One test "host": a namespace with a Mesh (in its own data dir). Removed on drop, after the
/// mesh (whose boringtun threads hold the namespace until they exit).
struct Host {
    name: String,
    path: PathBuf,
    mesh: Option<Mesh>,
    _data: tempfile::TempDir,
}

impl Host {
    fn ns(&self) -> Option<PathBuf> {
        Some(self.path.clone())
    }

    fn mesh(&mut self) -> &mut Mesh {
        self.mesh.as_mut().expect("the mesh lives until drop")
    }

    fn mesh_peer(&self, underlay: Ipv4Addr, mesh_addr: &str) -> MeshPeer {
        let mesh = self.mesh.as_ref().expect("the mesh lives until drop");
        peer(
            "n",
            mesh.public_key(),
            &format!("{underlay}:{}", mesh.port()),
            mesh_addr,
        )
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        drop(self.mesh.take());
        if let Err(e) = netns::remove(&self.path) {
            eprintln!("removing {}: {e}", self.path.display());
        }
    }
}

/// Two hosts joined by a veth underlay (192.168.211.1 <-> .2), each with a Mesh not yet applied.
async fn two_hosts() -> (Host, Host) {
    let tag = &shoal_proto::new_id()[..8];
    let mut hosts = Vec::new();
    for side in ["a", "b"] {
        let name = format!("shoalwg-{tag}-{side}");
        let path = netns::path_of(&name);
        netns::create(&path).await.expect("create host netns");
        let data = tempfile::tempdir().expect("tempdir");
        let node_id = format!("{}{side}", &shoal_proto::new_id()[..7]);
        let mesh =
            Mesh::open(data.path(), &node_id, DEFAULT_PORT, Some(path.clone())).expect("open mesh");
        hosts.push(Host {
            name,
            path,
            mesh: Some(mesh),
            _data: data,
        });
    }
    let b = hosts.pop().expect("two hosts");
    let a = hosts.pop().expect("two hosts");
    ip(&[
        "-n",
        &a.name,
        "link",
        "add",
        UNDERLAY_IF_A,
        "type",
        "veth",
        "peer",
        "name",
        "ulb",
        "netns",
        &b.name,
    ]);
    for (host, dev, addr) in [(&a, UNDERLAY_IF_A, UNDERLAY_A), (&b, "ulb", UNDERLAY_B)] {
        ip(&[
            "-n",
            &host.name,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            dev,
        ]);
        ip(&["-n", &host.name, "link", "set", dev, "up"]);
        ip(&["-n", &host.name, "link", "set", "lo", "up"]);
    }
    (a, b)
}

/// Applies each host's mesh with the other as its only peer.
async fn mesh_up(a: &mut Host, b: &mut Host) {
    let pb = b.mesh_peer(UNDERLAY_B, MESH_B);
    let pa = a.mesh_peer(UNDERLAY_A, MESH_A);
    a.mesh().apply(MESH_A, &[pb]).await.expect("apply a");
    b.mesh().apply(MESH_B, &[pa]).await.expect("apply b");
}

/// Binds a TCP listener on `ip` inside `netns` (a socket stays in the namespace it was made in).
async fn listen_in(netns: Option<PathBuf>, ip: Ipv4Addr) -> TcpListener {
    netns::on_thread(netns, "test-listen", move || TcpListener::bind((ip, 0)))
        .await
        .expect("thread")
        .expect("bind")
}

/// Connects from inside `netns` to `to`, retrying until `deadline` (the first WireGuard handshake
/// takes a round trip or two).
async fn connect_from(
    netns: Option<PathBuf>,
    to: SocketAddr,
    deadline: Duration,
) -> Option<TcpStream> {
    let start = Instant::now();
    loop {
        let ns = netns.clone();
        let attempt = netns::on_thread(ns, "test-connect", move || {
            TcpStream::connect_timeout(&to, Duration::from_millis(500))
        })
        .await
        .expect("thread");
        match attempt {
            Ok(s) => return Some(s),
            Err(_) if start.elapsed() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(_) => return None,
        }
    }
}

/// Accepts one connection on `listener` within `deadline` (polling, so a connection that never
/// comes cannot strand the thread) and reads it to the end.
fn receive_one(listener: TcpListener, deadline: Duration) -> Option<Vec<u8>> {
    listener.set_nonblocking(true).ok()?;
    let start = Instant::now();
    let mut conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && start.elapsed() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(_) => return None,
        }
    };
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut got = Vec::new();
    conn.read_to_end(&mut got).ok()?;
    Some(got)
}

/// Sends `payload` over a fresh connection from `from` to `listener` and returns what arrived.
async fn send_over(
    from: Option<PathBuf>,
    listener: TcpListener,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let to = listener.local_addr().expect("local addr");
    let server = std::thread::spawn(move || receive_one(listener, Duration::from_secs(15)));
    let Some(mut stream) = connect_from(from, to, Duration::from_secs(10)).await else {
        let _ = server.join();
        return None;
    };
    stream.write_all(payload).expect("send");
    drop(stream);
    server.join().expect("server thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_talk_over_the_mesh_and_a_removed_peer_cuts_them_off() {
    if !can_run_kernel_tests() {
        return;
    }
    let (mut a, mut b) = two_hosts().await;
    mesh_up(&mut a, &mut b).await;
    assert_eq!(
        a.mesh().is_kernel(),
        Some(false),
        "this kernel has no WireGuard"
    );

    // The device: address, MTU, up.
    let ifname = a.mesh().ifname().to_string();
    let out = Command::new("ip")
        .args(["-n", &a.name, "-o", "addr", "show", "dev", &ifname])
        .output()
        .expect("ip addr");
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.255.0.1/16"));
    let out = Command::new("ip")
        .args(["-n", &a.name, "link", "show", "dev", &ifname])
        .output()
        .expect("ip link");
    let link = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(link.contains("mtu 1420") && link.contains(",UP"), "{link}");

    let listener = listen_in(b.ns(), MESH_IP_B).await;
    let got = send_over(a.ns(), listener, b"hello over the mesh").await;
    assert_eq!(got.as_deref(), Some(&b"hello over the mesh"[..]));

    // Applying the same state again is a no-op (and must not trip boringtun's "modify peer").
    let pb = b.mesh_peer(UNDERLAY_B, MESH_B);
    a.mesh()
        .apply(MESH_A, std::slice::from_ref(&pb))
        .await
        .expect("reapply");
    // A changed endpoint is applied as remove + add (boringtun panics on an in-place change).
    let moved = MeshPeer {
        endpoint: format!("{UNDERLAY_B}:1"),
        ..pb.clone()
    };
    a.mesh().apply(MESH_A, &[moved]).await.expect("move peer");
    a.mesh()
        .apply(MESH_A, std::slice::from_ref(&pb))
        .await
        .expect("move peer back");
    let listener = listen_in(b.ns(), MESH_IP_B).await;
    let got = send_over(a.ns(), listener, b"after the move").await;
    assert_eq!(got.as_deref(), Some(&b"after the move"[..]));

    // B leaves A's peers: A can no longer reach B.
    a.mesh().apply(MESH_A, &[]).await.expect("remove peer");
    let listener = listen_in(b.ns(), MESH_IP_B).await;
    let to = listener.local_addr().expect("addr");
    assert!(
        connect_from(a.ns(), to, Duration::from_secs(2))
            .await
            .is_none(),
        "traffic must stop once the peer is removed"
    );
    // And back.
    a.mesh().apply(MESH_A, &[pb]).await.expect("re-add peer");
    let got = send_over(a.ns(), listener, b"back again").await;
    assert_eq!(got.as_deref(), Some(&b"back again"[..]));

    // Shutdown leaves no device, no UAPI socket, and frees the UDP port.
    a.mesh().shutdown().await.expect("shutdown");
    a.mesh().shutdown().await.expect("shutdown is idempotent");
    let name = ifname.clone();
    let (exists, port_free) = netns::on_thread(a.ns(), "test-check", move || {
        (
            link_index(&name).is_some(),
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, DEFAULT_PORT)).is_ok(),
        )
    })
    .await
    .expect("thread");
    assert!(!exists, "device {ifname} still exists");
    assert!(port_free, "the UDP port is still bound");
    assert!(
        !uapi_socket(&ifname).exists(),
        "a UAPI socket file appeared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_underlay_never_carries_the_plaintext() {
    if !can_run_kernel_tests() {
        return;
    }
    let (mut a, mut b) = two_hosts().await;
    mesh_up(&mut a, &mut b).await;
    let marker = format!("SHOAL-MARKER-{}", shoal_proto::new_id());

    // Control: sent on the underlay in clear, the capture sees the marker.
    let capture =
        Capture::start(&a.ns().expect("a test host namespace"), UNDERLAY_IF_A).expect("capture");
    let listener = listen_in(b.ns(), UNDERLAY_B).await;
    let got = send_over(a.ns(), listener, marker.as_bytes()).await;
    assert_eq!(got.as_deref(), Some(marker.as_bytes()));
    let seen = capture.finish().expect("capture");
    assert!(seen.contains(marker.as_bytes()), "the capture must work");

    // Over the mesh: the marker arrives, but the underlay never carries it.
    let capture =
        Capture::start(&a.ns().expect("a test host namespace"), UNDERLAY_IF_A).expect("capture");
    let listener = listen_in(b.ns(), MESH_IP_B).await;
    let payload = marker.repeat(100);
    let got = send_over(a.ns(), listener, payload.as_bytes()).await;
    assert_eq!(got.as_deref(), Some(payload.as_bytes()));
    let seen = capture.finish().expect("capture");
    assert!(
        seen.bytes.len() > payload.len(),
        "the encrypted traffic crossed the underlay"
    );
    assert!(
        !seen.contains(marker.as_bytes()),
        "plaintext marker seen on the underlay"
    );
}

/// Inner addresses of the test VXLAN riding the mesh.
const INNER_A: Ipv4Addr = Ipv4Addr::new(192, 168, 212, 1);
const INNER_B: Ipv4Addr = Ipv4Addr::new(192, 168, 212, 2);

/// Builds a kernel VXLAN `vxm` (VNI 42, MTU 1370) in both hosts whose remote is the other host's
/// mesh address, and returns the inner addresses of A and B.
fn vxlan_over_mesh(a: &mut Host, b: &mut Host) -> (Ipv4Addr, Ipv4Addr) {
    for (host, local, remote, inner) in [
        (&mut *a, MESH_IP_A, MESH_IP_B, INNER_A),
        (&mut *b, MESH_IP_B, MESH_IP_A, INNER_B),
    ] {
        let dev = host.mesh().ifname().to_string();
        ip(&[
            "-n",
            &host.name,
            "link",
            "add",
            "vxm",
            "type",
            "vxlan",
            "id",
            "42",
            "local",
            &local.to_string(),
            "remote",
            &remote.to_string(),
            "dstport",
            "4789",
            "dev",
            &dev,
        ]);
        ip(&["-n", &host.name, "link", "set", "vxm", "mtu", "1370", "up"]);
        ip(&[
            "-n",
            &host.name,
            "addr",
            "add",
            &format!("{inner}/24"),
            "dev",
            "vxm",
        ]);
    }
    (INNER_A, INNER_B)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_vxlan_rides_the_mesh() {
    if !can_run_kernel_tests() {
        return;
    }
    let (mut a, mut b) = two_hosts().await;
    mesh_up(&mut a, &mut b).await;
    let (_, inner_b) = vxlan_over_mesh(&mut a, &mut b);
    let out = Command::new("ip")
        .args([
            "netns", "exec", &a.name, "busybox", "ping", "-c", "3", "-W", "5",
        ])
        .arg(inner_b.to_string())
        .output()
        .expect("busybox ping");
    assert!(
        out.status.success(),
        "ping across the vxlan: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A full-size TCP exchange (segments at the vxlan MTU) crosses too.
    let listener = listen_in(b.ns(), inner_b).await;
    let payload = vec![7u8; 1 << 20];
    let got = send_over(a.ns(), listener, &payload).await;
    assert_eq!(got.map(|g| g.len()), Some(payload.len()));
}

/// Rough TCP throughput across the mesh (prints the figure). Run with `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn mesh_throughput() {
    if !can_run_kernel_tests() {
        return;
    }
    let (mut a, mut b) = two_hosts().await;
    mesh_up(&mut a, &mut b).await;
    let (_, inner_b) = vxlan_over_mesh(&mut a, &mut b);
    for (label, from, target) in [
        ("underlay veth", a.ns(), (b.ns(), UNDERLAY_B)),
        ("wireguard mesh", a.ns(), (b.ns(), MESH_IP_B)),
        ("vxlan over the mesh", a.ns(), (b.ns(), inner_b)),
    ] {
        let listener = listen_in(target.0, target.1).await;
        let to = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut buf = vec![0u8; 1 << 17];
            let mut total = 0u64;
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            total
        });
        let mut stream = connect_from(from, to, Duration::from_secs(10))
            .await
            .expect("connect");
        let buf = vec![0x5au8; 1 << 17];
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            stream.write_all(&buf).expect("send");
        }
        drop(stream);
        let total = server.join().expect("server");
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "{label}: {:.0} Mbit/s ({total} bytes in {secs:.2} s)",
            total as f64 * 8.0 / secs / 1e6
        );
    }
}
