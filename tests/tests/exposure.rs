//! End-to-end scenarios for a node's network exposure (issue 10 §6): with published ports on, a
//! neighbour's frame addressed to a node's 127.0.0.1 never reaches a listener there; VXLAN frames
//! crafted by a host outside the cluster never reach a task, on a plain or an encrypted overlay,
//! and an encrypted overlay takes no clear VXLAN even from a cluster member. Every drop is seen
//! on the node's `shoal_guard` counters (deterministic: no waiting for something not to happen),
//! and, for the loopback and the plain overlay, the same frame does get through once the guard
//! table is removed by hand, which shows the frames are right and the guard is what stops them.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use shoal_tests::capture::{self, Capture, Mac, UdpFrame};
use shoal_tests::testbed::{Cluster, ClusterOptions, Host, Testbed, DEADLINE};

/// A server answering `task <its hostname>` over HTTP.
const SERVER: &str =
    "mkdir -p /www && echo \"task $(hostname)\" > /www/index.html && exec httpd -f -p 80 -h /www";
const GUARD_TABLE: &str = "shoal_guard";
const LOOPBACK_COUNTER: &str = "loopback_dropped";
const VXLAN_COUNTER: &str = "vxlan_dropped";

fn cluster(name: &str, workers: usize) -> Result<Cluster> {
    Cluster::start_with(Testbed::new(name)?, ClusterOptions::new(workers))
}

/// `service create --name NAME FLAGS... busybox sh -c SCRIPT`.
fn create(c: &Cluster, name: &str, flags: &[&str], script: &str) -> Result<()> {
    let image = c.busybox_image();
    let mut args = vec!["service", "create", "--name", name];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[&image, "sh", "-c", script]);
    c.ctl_ok(&args)?;
    Ok(())
}

/// The pid of a task's container.
fn task_pid(c: &Cluster, task_id: &str) -> Result<i32> {
    let (_, container) = c.container_of(task_id)?;
    container
        .pid
        .with_context(|| format!("task {task_id} has no recorded pid"))
}

/// Runs `script` with /bin/sh inside a task's container (its network and mount namespaces).
fn exec_in_task(c: &Cluster, task_id: &str, script: &str) -> Result<String> {
    let pid = task_pid(c, task_id)?;
    let out = c.manager.run_timeout(
        "nsenter",
        ["-t", &pid.to_string(), "-n", "-m", "/bin/sh", "-c", script],
        Duration::from_secs(20),
    )?;
    if !out.status.success() {
        bail!(
            "in task {task_id}: `{script}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The IPv4 address (and prefix) of `ifname` inside a task.
fn task_addr(c: &Cluster, task_id: &str, ifname: &str) -> Result<(Ipv4Addr, u8)> {
    let out = exec_in_task(c, task_id, &format!("ip -4 -o addr show {ifname}"))?;
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| {
            let (ip, prefix) = cidr.split_once('/')?;
            Some((ip.parse().ok()?, prefix.parse().ok()?))
        })
        .with_context(|| format!("no IPv4 address on {ifname} in task {task_id}: {out:?}"))
}

/// HTTP GET from a host's own namespace (curl); the body, trimmed.
fn get_on_host(host: &Host, url: &str) -> Result<String> {
    let out = host.run_timeout(
        "curl",
        ["-sS", "--fail", "-m", "3", url],
        Duration::from_secs(10),
    )?;
    if !out.status.success() {
        bail!(
            "curl {url} on {}: {}",
            host.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `program args` on `host`, which must succeed; its stdout.
fn run_ok(host: &Host, program: &str, args: &[&str]) -> Result<String> {
    let out = host.run(program, args)?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} on {}: {}",
            host.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The MAC of `ifname` on `host`.
fn mac_of(host: &Host, ifname: &str) -> Result<Mac> {
    let out = run_ok(host, "ip", &["-o", "link", "show", ifname])?;
    let word = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .with_context(|| format!("no MAC of {ifname} on {}: {out:?}", host.name()))?;
    capture::parse_mac(word)
}

/// The packets counted by `counter` in the node's guard table.
fn guard_count(host: &Host, counter: &str) -> Result<u64> {
    let listing = run_ok(host, "nft", &["list", "table", "ip", GUARD_TABLE])?;
    let mut lines = listing.lines().map(str::trim);
    lines
        .find(|l| *l == format!("counter {counter} {{"))
        .with_context(|| format!("no counter {counter} on {}:\n{listing}", host.name()))?;
    lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unreadable counter {counter}:\n{listing}"))
}

/// Waits until `counter` on `host` passes `before` (the frame was seen and dropped).
fn wait_dropped(host: &Host, counter: &str, before: u64, what: &str) -> Result<()> {
    Testbed::wait_for(DEADLINE, what, || Ok(guard_count(host, counter)? > before))
}

/// A UDP socket bound to `addr` inside the namespace at `netns` (a socket stays in the namespace
/// it was made in, whichever thread reads it).
fn udp_socket_in(netns: &Path, addr: SocketAddrV4) -> Result<UdpSocket> {
    let netns = netns.to_path_buf();
    let socket = std::thread::spawn(move || -> Result<UdpSocket> {
        let ns = File::open(&netns).with_context(|| format!("opening {}", netns.display()))?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering {}", netns.display()))?;
        UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the bind thread panicked"))??;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(socket)
}

/// Whether `socket` receives `payload` within `wait`.
fn receives(socket: &UdpSocket, payload: &[u8], wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            if &buf[..n] == payload {
                return true;
            }
        }
    }
    false
}

/// With a published port on every node (so `route_localnet` is on), a frame from a host outside
/// the cluster to w1's MAC with destination 127.0.0.1 never reaches a listener on w1's loopback;
/// the published port keeps answering from outside, from w1 itself (127.0.0.1) and hairpin.
#[test]
fn loopback_stays_local_with_published_ports() -> Result<()> {
    let c = cluster("exp-lo", 2)?;
    let outsider = c.testbed().add_host("x")?;
    create(
        &c,
        "web",
        &["-p", "8080:80", "--constraint", "node.hostname==w2"],
        SERVER,
    )?;
    let web = c.wait_running("web", 1)?;
    let w1 = c.agents[0].host.clone();
    ensure!(w1.name() == "w1", "agent 0 runs on {}", w1.name());
    let answer = format!("task {}", &web[0].id[..web[0].id.len().min(12)]);
    let w1_url = format!("http://{}:8080/", w1.ip());
    for (what, from, url) in [
        ("outside host reaches w1:8080", &outsider, w1_url.as_str()),
        ("w1 reaches 127.0.0.1:8080", &w1, "http://127.0.0.1:8080/"),
        ("w1 reaches its own w1:8080", &w1, w1_url.as_str()),
    ] {
        Testbed::wait_for(DEADLINE, what, || Ok(get_on_host(from, url)? == answer))?;
    }
    // Hairpin: the web task reaches its own published port through its node.
    let w2_ip = c.agents[1].host.ip();
    Testbed::wait_for(DEADLINE, "web reaches w2:8080 from inside", || {
        let out = exec_in_task(
            &c,
            &web[0].id,
            &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {w2_ip} 8080 || true"),
        )?;
        Ok(out.contains(&answer))
    })?;
    let localnet = run_ok(&w1, "cat", &["/proc/sys/net/ipv4/conf/all/route_localnet"])?;
    ensure!(
        localnet.trim() == "1",
        "route_localnet on w1 is {localnet:?}: the published port did not need it any more?"
    );

    // A service on w1 that trusts its loopback, and one on its public address.
    let local = udp_socket_in(
        &w1.netns_path(),
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7070),
    )?;
    let public = udp_socket_in(&w1.netns_path(), SocketAddrV4::new(w1.ip(), 7071))?;
    let frame = UdpFrame {
        dst_mac: mac_of(&w1, "eth0")?,
        src_mac: mac_of(&outsider, "eth0")?,
        src: outsider.ip(),
        dst: Ipv4Addr::LOCALHOST,
        sport: 40000,
        dport: 7070,
    };
    let send = |frame: &UdpFrame, payload: &[u8]| {
        capture::send_frame(&outsider.netns_path(), "eth0", &frame.build(payload))
    };
    let before = guard_count(&w1, LOOPBACK_COUNTER)?;
    send(&frame, b"to-loopback")?;
    wait_dropped(
        &w1,
        LOOPBACK_COUNTER,
        before,
        "w1 drops the frame to 127.0.0.1",
    )?;
    ensure!(
        !receives(&local, b"to-loopback", Duration::from_millis(500)),
        "a neighbour's frame reached w1's 127.0.0.1"
    );
    // The frame is otherwise fine: to w1's own address it arrives.
    let to_public = UdpFrame {
        dst: w1.ip(),
        dport: 7071,
        ..frame.clone()
    };
    send(&to_public, b"to-public")?;
    ensure!(
        receives(&public, b"to-public", Duration::from_secs(5)),
        "the same frame to w1's own address did not arrive"
    );
    // And the guard is what stops it: without its table, the door is open.
    run_ok(&w1, "nft", &["delete", "table", "ip", GUARD_TABLE])?;
    let mut opened = false;
    for _ in 0..10 {
        send(&frame, b"unguarded")?;
        if receives(&local, b"unguarded", Duration::from_millis(500)) {
            opened = true;
            break;
        }
    }
    ensure!(
        opened,
        "without the guard the frame did not reach 127.0.0.1 either: the test proves nothing"
    );
    c.ctl_ok(["service", "rm", "web"])?;
    c.shutdown()
}

/// The frames of one overlay aimed at a task on w1: where they go in, what they carry.
struct Target {
    /// The overlay's VNI.
    vni: u32,
    /// The task's overlay address and MAC.
    ip: Ipv4Addr,
    mac: Mac,
    /// Another address in the task's subnet, as the inner source.
    peer: Ipv4Addr,
    /// `/proc/PID/ns/net` of the task.
    netns: PathBuf,
}

impl Target {
    /// A VXLAN datagram carrying `marker` to the task's port 9999, from `src` (`src_mac`) to
    /// `dst` at `dst_mac`.
    fn frame(
        &self,
        src_mac: Mac,
        src: Ipv4Addr,
        dst_mac: Mac,
        dst: Ipv4Addr,
        marker: &str,
    ) -> Vec<u8> {
        let [a, b, cc, d] = self.peer.octets();
        let inner = UdpFrame {
            dst_mac: self.mac,
            src_mac: [0x02, 0x42, a, b, cc, d],
            src: self.peer,
            dst: self.ip,
            sport: 40000,
            dport: 9999,
        }
        .build(marker.as_bytes());
        UdpFrame {
            dst_mac,
            src_mac,
            src,
            dst,
            sport: 50000,
            dport: 4789,
        }
        .build(&capture::vxlan_payload(self.vni, &inner))
    }
}

/// A `sink` task on w1 on an overlay `front` (encrypted or not), reached by a client on w2.
fn overlay_target(c: &Cluster, encrypted: bool) -> Result<Target> {
    let mut net = vec!["network", "create", "-d", "overlay"];
    if encrypted {
        net.extend(["--opt", "encrypted"]);
    }
    net.push("front");
    c.ctl_ok(&net)?;
    create(
        c,
        "sink",
        &["--network", "front", "--constraint", "node.hostname==w1"],
        SERVER,
    )?;
    create(
        c,
        "client",
        &["--network", "front", "--constraint", "node.hostname==w2"],
        "exec sleep 3600",
    )?;
    let sink = c.wait_running("sink", 1)?;
    let client = c.wait_running("client", 1)?;
    let answer = format!("task {}", &sink[0].id[..sink[0].id.len().min(12)]);
    // The cluster's own VXLAN passes the guard: the client on w2 reaches the sink on w1.
    Testbed::wait_for(DEADLINE, "client on w2 reaches sink on w1", || {
        let out = exec_in_task(
            c,
            &client[0].id,
            "printf 'GET / HTTP/1.0\\r\\nHost: sink\\r\\n\\r\\n' | nc -w 3 sink 80 || true",
        )?;
        Ok(out.contains(&answer))
    })?;
    let (ip, prefix) = task_addr(c, &sink[0].id, "eth0")?;
    // The last usable address of the subnet: not the sink's, not the network's VIPs (low ones).
    let host_bits = 32 - u32::from(prefix);
    let peer = Ipv4Addr::from((u32::from(ip) | ((1u32 << host_bits) - 1)) - 1);
    ensure!(
        peer != ip,
        "the sink has the address picked as the inner source"
    );
    let w1 = &c.agents[0].host;
    // Every overlay but ingress keeps its devices in the agent's overlay namespace.
    let overlay_ns = c.agents[0]
        .data_dir
        .join("network")
        .join("netns-overlay")
        .join("overlays");
    let net = format!("--net={}", overlay_ns.display());
    let links = run_ok(
        w1,
        "nsenter",
        &[&net, "ip", "-d", "-o", "link", "show", "type", "vxlan"],
    )?;
    let vnis: Vec<u32> = links
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "id")
                .nth(1)
                .and_then(|v| v.parse().ok())
        })
        .collect();
    let [vni] = vnis.as_slice() else {
        bail!("w1 must have exactly one VXLAN device (front's): {links}");
    };
    let [a, b, cc, d] = ip.octets();
    Ok(Target {
        vni: *vni,
        ip,
        mac: [0x02, 0x42, a, b, cc, d],
        peer,
        netns: PathBuf::from(format!("/proc/{}/ns/net", task_pid(c, &sink[0].id)?)),
    })
}

/// Sends each `(from, frame)` and waits until w1's VXLAN counter has dropped them all, while
/// capturing inside the sink; fails if any marker reached the task.
fn all_dropped(c: &Cluster, target: &Target, sends: &[(&Host, Vec<u8>, &str)]) -> Result<()> {
    let w1 = &c.agents[0].host;
    let capture = Capture::start(&target.netns, "eth0")?;
    for (from, frame, marker) in sends {
        let before = guard_count(w1, VXLAN_COUNTER)?;
        capture::send_frame(&from.netns_path(), "eth0", frame)?;
        wait_dropped(
            w1,
            VXLAN_COUNTER,
            before,
            &format!("w1 drops the VXLAN frame {marker} from {}", from.name()),
        )?;
    }
    let seen = capture.finish()?;
    for (from, _, marker) in sends {
        ensure!(
            !seen.contains(marker.as_bytes()),
            "the VXLAN frame {marker} from {} reached the task",
            from.name()
        );
    }
    Ok(())
}

/// A host outside the cluster crafts VXLAN frames for a task on a plain overlay: dropped.
/// Without the guard table the same frames reach the task.
#[test]
fn vxlan_from_outside_never_reaches_a_task_on_a_plain_overlay() -> Result<()> {
    let c = cluster("exp-vx", 2)?;
    let outsider = c.testbed().add_host("x")?;
    let target = overlay_target(&c, false)?;
    let w1 = c.agents[0].host.clone();
    let (w1_mac, x_mac) = (mac_of(&w1, "eth0")?, mac_of(&outsider, "eth0")?);
    let marker = "SHOAL-INJECT-plain-4f1e";
    let frame = target.frame(x_mac, outsider.ip(), w1_mac, w1.ip(), marker);
    all_dropped(&c, &target, &[(&outsider, frame.clone(), marker)])?;

    // The frame is right and the guard is what stops it: without the table it gets in.
    run_ok(&w1, "nft", &["delete", "table", "ip", GUARD_TABLE])?;
    let mut reached = false;
    for _ in 0..10 {
        let capture = Capture::start(&target.netns, "eth0")?;
        capture::send_frame(&outsider.netns_path(), "eth0", &frame)?;
        std::thread::sleep(Duration::from_millis(300));
        if capture.finish()?.contains(marker.as_bytes()) {
            reached = true;
            break;
        }
    }
    ensure!(
        reached,
        "without the guard the crafted frame did not reach the task either: the test proves nothing"
    );
    c.ctl_ok(["service", "rm", "sink", "client"])?;
    c.ctl_ok(["network", "rm", "front"])?;
    c.shutdown()
}

/// On an encrypted overlay: an outsider's frames to w1's underlay address or to its mesh address,
/// and a cluster member's frames in clear (to either address), are all dropped; only what comes
/// out of the WireGuard mesh gets in (the client's traffic, checked when the target was set up).
#[test]
fn vxlan_never_reaches_a_task_on_an_encrypted_overlay_in_clear() -> Result<()> {
    let c = cluster("exp-vxenc", 2)?;
    let outsider = c.testbed().add_host("x")?;
    let target = overlay_target(&c, true)?;
    let (w1, w2) = (c.agents[0].host.clone(), c.agents[1].host.clone());
    let addrs = run_ok(&w1, "ip", &["-4", "-o", "addr", "show"])?;
    let mesh_ip: Ipv4Addr = addrs
        .lines()
        .find(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|i| i.starts_with("swg"))
        })
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|ip| ip.parse().ok())
        .with_context(|| format!("no mesh address on w1: {addrs}"))?;
    let w1_mac = mac_of(&w1, "eth0")?;
    let (x_mac, w2_mac) = (mac_of(&outsider, "eth0")?, mac_of(&w2, "eth0")?);
    let markers = [
        "SHOAL-INJECT-enc-x-underlay",
        "SHOAL-INJECT-enc-x-mesh",
        "SHOAL-INJECT-enc-w2-mesh",
        "SHOAL-INJECT-enc-w2-underlay",
    ];
    let sends = [
        (
            &outsider,
            target.frame(x_mac, outsider.ip(), w1_mac, w1.ip(), markers[0]),
            markers[0],
        ),
        (
            &outsider,
            target.frame(x_mac, outsider.ip(), w1_mac, mesh_ip, markers[1]),
            markers[1],
        ),
        (
            &w2,
            target.frame(w2_mac, w2.ip(), w1_mac, mesh_ip, markers[2]),
            markers[2],
        ),
        (
            &w2,
            target.frame(w2_mac, w2.ip(), w1_mac, w1.ip(), markers[3]),
            markers[3],
        ),
    ];
    all_dropped(&c, &target, &sends)?;
    c.ctl_ok(["service", "rm", "sink", "client"])?;
    c.ctl_ok(["network", "rm", "front"])?;
    c.shutdown()
}
