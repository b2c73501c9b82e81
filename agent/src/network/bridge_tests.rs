//! Tests of the bridge network. The pure ones run anywhere; the kernel ones need root and build
//! everything inside a throwaway namespace standing in for the host, so the real host is untouched.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::*;

#[test]
fn names_are_derived_from_the_task_id_and_fit_interface_limits() {
    let names = Names::of("abcdefghijklmnopqrstuvwxy");
    assert_eq!(names.netns, "shoal-abcdefghijkl");
    assert!(names.veth.starts_with("veth") && names.veth.len() == 12);
    assert!(names.peer.starts_with("vp") && names.peer.len() == 10);
    assert_eq!(names.veth[4..], names.peer[2..]);
    assert_eq!(Names::of("short").netns, "shoal-short");
    assert_ne!(Names::of("task-a").veth, Names::of("task-b").veth);
}

#[test]
fn task_ids_and_bridge_names_are_validated() {
    assert!(validate_task_id("abc123-_x").is_ok());
    for bad in ["", "../etc", "a b", "é"] {
        assert!(matches!(
            validate_task_id(bad),
            Err(NetworkError::InvalidTaskId { .. })
        ));
    }
    assert!(validate_ifname("shoal0").is_ok());
    for bad in ["", "a-name-too-long-x", "br/0", "br 0"] {
        assert!(matches!(
            validate_ifname(bad),
            Err(NetworkError::InvalidBridgeName { .. })
        ));
    }
}

#[test]
fn new_reads_subnet_and_gateway_without_touching_the_kernel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = BridgeNetwork::default_for(dir.path()).expect("default network");
    assert_eq!(net.bridge_name(), "shoal0");
    assert_eq!(net.gateway(), Ipv4Addr::new(10, 88, 0, 1));
    assert_eq!(net.subnet().to_string(), "10.88.0.0/16");
    assert!(net.allocations().is_empty());
}

/// Whether the kernel tests can run here: root, and `nft` installed (Debian's `nftables`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_share_writes_and_all_reach_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let net = Arc::new(
        BridgeNetwork::new(dir.path(), "shoaltest0", "10.77.0.0/24".parse().unwrap()).unwrap(),
    );
    let ids: Vec<String> = (0..40).map(|i| format!("task{i}")).collect();
    let mut joins = Vec::new();
    for id in &ids {
        let (net, id) = (net.clone(), id.clone());
        joins.push(tokio::spawn(async move {
            let names = net.names(&id);
            net.reserve_address(&id, &names).await
        }));
    }
    let mut got = HashMap::new();
    for (id, join) in ids.iter().zip(joins) {
        let (ip, fresh) = join.await.unwrap().unwrap();
        assert!(fresh, "{id} had no address before");
        got.insert(id.clone(), ip);
    }
    // Every address is distinct and on disk once its reservation returned.
    let distinct: std::collections::HashSet<_> = got.values().collect();
    assert_eq!(distinct.len(), ids.len());
    let path = dir.path().join("network").join("shoaltest0.ipam.json");
    let stored = IpamStore::open(&path, "10.77.0.0/24".parse().unwrap()).unwrap();
    for (id, ip) in &got {
        assert_eq!(stored.ipam().get(id), Some(*ip), "{id} on disk");
    }
    // A second reservation keeps the address; releases reach the disk too.
    let names = net.names("task0");
    assert_eq!(
        net.reserve_address("task0", &names).await.unwrap(),
        (got["task0"], false)
    );
    let mut joins = Vec::new();
    for id in &ids {
        let (net, id) = (net.clone(), id.clone());
        joins.push(tokio::spawn(async move { net.release_address(&id).await }));
    }
    for join in joins {
        join.await.unwrap().unwrap();
    }
    let stored = IpamStore::open(&path, "10.77.0.0/24".parse().unwrap()).unwrap();
    assert!(stored.ipam().is_empty());
    assert!(net.allocations().is_empty());
}

fn can_run_kernel_tests() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return false;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("skipped: nft is not installed");
        return false;
    }
    true
}

/// A namespace standing in for the host, removed on drop together with the task namespaces
/// handed out by `task_id`, so a failing test leaves nothing behind. (The bridge, veths and nft
/// rules live inside it and die with it.)
struct TestHost {
    path: PathBuf,
    tasks: Mutex<Vec<String>>,
}

impl TestHost {
    async fn new() -> TestHost {
        let name = format!("shoaltest-{}", &shoal_proto::new_id()[..8]);
        let path = netns::path_of(&name);
        netns::create(&path).await.expect("create test host netns");
        TestHost {
            path,
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// A fresh task id whose namespace this host removes on drop.
    fn task_id(&self) -> String {
        let id = shoal_proto::new_id();
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id.clone());
        id
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let paths = tasks.iter().map(|t| BridgeNetwork::netns_path(t));
        for path in paths.chain([self.path.clone()]) {
            if let Err(e) = netns::remove(&path) {
                eprintln!("removing {}: {e}", path.display());
            }
        }
    }
}

/// A bridge network `name` on `subnet` in `host`'s namespace, its bridge made.
async fn ensured(host: &TestHost, dir: &Path, name: &str, subnet: &str) -> Arc<BridgeNetwork> {
    let net = BridgeNetwork::new(dir, name, subnet.parse().expect("subnet"))
        .expect("open")
        .with_host_netns(host.path.clone());
    net.ensure().await.expect("ensure");
    Arc::new(net)
}

/// Detaches every task of `ids` at once, each on its own tokio task; all must succeed.
async fn detach_concurrently(net: &Arc<BridgeNetwork>, ids: &[String]) {
    let joins: Vec<_> = ids
        .iter()
        .map(|id| {
            let (net, id) = (net.clone(), id.clone());
            tokio::spawn(async move { net.detach(&id).await })
        })
        .collect();
    for join in joins {
        join.await.expect("join").expect("detach");
    }
}

/// `disable_ipv6` of interface `ifname` inside `netns`, as the kernel shows it.
async fn ipv6_disabled(netns: &Path, ifname: &str) -> Option<String> {
    let file = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    netns::on_thread(Some(netns.to_path_buf()), "test-sysctl", move || {
        std::fs::read_to_string(file)
            .ok()
            .map(|v| v.trim().to_string())
    })
    .await
    .expect("thread in the task namespace")
}

/// Binds a TCP listener on `ip` inside `netns` (a socket stays in the namespace it was made in).
async fn listen_in(netns: &Path, ip: Ipv4Addr) -> TcpListener {
    netns::on_thread(Some(netns.to_path_buf()), "test-listen", move || {
        TcpListener::bind((ip, 0))
    })
    .await
    .expect("thread")
    .expect("bind")
}

/// Connects from inside `netns` to `listener`, exchanges a few bytes, and says whether it worked.
async fn reachable(netns: &Path, listener: TcpListener) -> bool {
    let to: SocketAddr = listener.local_addr().expect("local addr");
    let server = std::thread::spawn(move || {
        listener.set_nonblocking(false).ok();
        let (mut s, _) = listener.accept().ok()?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).ok()?;
        s.write_all(b"pong").ok()?;
        Some(())
    });
    let ok = netns::on_thread(Some(netns.to_path_buf()), "test-connect", move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)?;
        Ok::<bool, std::io::Error>(&buf == b"pong")
    })
    .await
    .expect("thread")
    .unwrap_or(false);
    if ok {
        server.join().ok();
    }
    ok
}

/// `ip netns exec NS ping -c1 -W1 IP` (busybox's ping when iputils is absent); `None` when no ping exists.
fn ping(netns: &Path, ip: Ipv4Addr) -> Option<bool> {
    let name = netns.file_name()?.to_str()?;
    let has = |cmd: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let prefix: &[&str] = if has("ping") {
        &["ping"]
    } else if has("busybox") {
        &["busybox", "ping"]
    } else {
        return None;
    };
    let status = Command::new("ip")
        .args(["netns", "exec", name])
        .args(prefix)
        .args(["-c1", "-W1", &ip.to_string()])
        .output()
        .ok()?
        .status;
    Some(status.success())
}

async fn link_exists(host: &Path, name: &str) -> bool {
    let name = name.to_string();
    netns::on_thread(Some(host.to_path_buf()), "test-link", move || {
        link::block_on(move |h| async move { link::index_of(&h, &name).await })
    })
    .await
    .expect("thread")
    .expect("netlink")
    .is_some()
}

async fn nft_table_listing(host: &Path) -> Option<String> {
    netns::on_thread(Some(host.to_path_buf()), "test-nft", nft::list_table)
        .await
        .expect("thread")
        .expect("nft")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_two_tasks_reach_each_other_then_detach_and_clean_up() {
    if !can_run_kernel_tests() {
        return;
    }
    let host = TestHost::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let subnet: Ipv4Net = "10.88.0.0/16".parse().expect("literal");
    let net = BridgeNetwork::new(dir.path(), "shoal0", subnet)
        .expect("open")
        .with_host_netns(host.path.clone());

    assert!(matches!(
        net.attach(&host.task_id()).await,
        Err(NetworkError::BridgeMissing { .. })
    ));
    assert!(
        net.allocations().is_empty(),
        "failed attach released its address"
    );

    net.ensure().await.expect("ensure");
    net.ensure().await.expect("ensure is idempotent");
    let listing = nft_table_listing(&host.path)
        .await
        .expect("table ip shoal exists");
    assert!(listing.contains("ip saddr 10.88.0.0/16 oifname != \"shoal0\" masquerade"));

    let (ta, tb) = (host.task_id(), host.task_id());
    let a = net.attach(&ta).await.expect("attach a");
    let b = net.attach(&tb).await.expect("attach b");
    assert_ne!(a.ip, b.ip);
    assert_eq!(a.gateway, Ipv4Addr::new(10, 88, 0, 1));
    assert_eq!(a.netns, BridgeNetwork::netns_path(&ta));
    assert!(netns::is_netns(&a.netns) && netns::is_netns(&b.netns));
    assert_eq!(net.attach(&ta).await.expect("attach again"), a);
    // The task end has no IPv6 (it would flood the bridge with probes); `lo` keeps `::1`.
    if Path::new("/proc/sys/net/ipv6").exists() {
        assert_eq!(ipv6_disabled(&a.netns, "eth0").await.as_deref(), Some("1"));
        assert_eq!(ipv6_disabled(&a.netns, "lo").await.as_deref(), Some("0"));
    }

    // a -> b, a -> gateway, b -> a over TCP.
    assert!(
        reachable(&a.netns, listen_in(&b.netns, b.ip).await).await,
        "a reaches b"
    );
    assert!(
        reachable(&a.netns, listen_in(&host.path, a.gateway).await).await,
        "a reaches the gateway"
    );
    assert!(
        reachable(&b.netns, listen_in(&a.netns, a.ip).await).await,
        "b reaches a"
    );
    // And ICMP, when a ping binary is around.
    if let Some(ok) = ping(&a.netns, b.ip) {
        assert!(ok, "a pings b");
        assert_eq!(ping(&b.netns, b.gateway), Some(true), "b pings the gateway");
    }

    // A restarted agent (new BridgeNetwork on the same data dir) re-adopts a's attachment as is.
    let reopened = BridgeNetwork::new(dir.path(), "shoal0", subnet)
        .expect("reopen")
        .with_host_netns(host.path.clone());
    assert_eq!(reopened.allocations().len(), 2);
    assert_eq!(reopened.attach(&ta).await.expect("re-adopt"), a);
    assert!(
        reachable(&b.netns, listen_in(&a.netns, a.ip).await).await,
        "still reachable"
    );

    let a_veth = Names::of(&ta).veth;
    assert!(link_exists(&host.path, &a_veth).await);
    net.detach(&ta).await.expect("detach a");
    assert!(!link_exists(&host.path, &a_veth).await, "veth removed");
    assert!(!a.netns.exists(), "netns file removed");
    net.detach(&ta).await.expect("detach is idempotent");
    net.detach("never-attached")
        .await
        .expect("unknown task is fine");
    assert_eq!(net.allocations().len(), 1);

    net.cleanup_all().await.expect("cleanup");
    assert!(!b.netns.exists());
    assert!(!link_exists(&host.path, "shoal0").await, "bridge removed");
    assert!(!link_exists(&host.path, &Names::of(&tb).veth).await);
    assert_eq!(
        nft_table_listing(&host.path).await,
        None,
        "nft table removed"
    );
    assert!(net.allocations().is_empty());
    net.cleanup_all().await.expect("cleanup is idempotent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_rebuilds_a_half_built_attachment() {
    if !can_run_kernel_tests() {
        return;
    }
    let host = TestHost::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let net = BridgeNetwork::new(
        dir.path(),
        "br-test",
        "10.77.0.0/24".parse().expect("literal"),
    )
    .expect("open")
    .with_host_netns(host.path.clone());
    net.ensure().await.expect("ensure");

    let task = host.task_id();
    let first = net.attach(&task).await.expect("attach");
    // Simulate a crash that lost the veth but left the namespace file.
    let veth = Names::of(&task).veth;
    let host_path = host.path.clone();
    netns::on_thread(Some(host_path), "test-del", move || {
        link::block_on(move |h| async move { link::delete(&h, &veth).await })
    })
    .await
    .expect("thread")
    .expect("delete veth");

    let again = net.attach(&task).await.expect("re-attach");
    assert_eq!(again, first, "same address and namespace path");
    let other = net.attach(&host.task_id()).await.expect("attach other");
    assert!(reachable(&other.netns, listen_in(&again.netns, again.ip).await).await);

    net.cleanup_all().await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_detaches_remove_every_veth_in_batches_and_spare_the_others() {
    if !can_run_kernel_tests() {
        return;
    }
    let host = TestHost::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let net = ensured(&host, dir.path(), "br-reap", "10.76.0.0/24").await;
    let ids: Vec<String> = (0..12).map(|_| host.task_id()).collect();
    let kept = host.task_id();
    for id in ids.iter().chain([&kept]) {
        net.attach(id).await.expect("attach");
    }
    for id in ids.iter().chain([&kept]) {
        assert!(link_exists(&host.path, &net.veth_name(id)).await, "{id}");
    }

    detach_concurrently(&net, &ids).await;
    // Once its detach returned, a task's veth and namespace are gone; the other task's are not.
    for id in &ids {
        assert!(!link_exists(&host.path, &net.veth_name(id)).await, "{id}");
        assert!(!net.task_netns(id).exists(), "{id}");
    }
    assert!(link_exists(&host.path, &net.veth_name(&kept)).await);
    assert!(netns::is_netns(&net.task_netns(&kept)));
    assert_eq!(
        net.allocations()
            .into_iter()
            .map(|(t, _)| t)
            .collect::<Vec<_>>(),
        vec![kept.clone()]
    );
    // A batch of nothing (already gone) is fine.
    net.detach(&ids[0]).await.expect("detach again");
    net.cleanup_all().await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_deletes_the_veths_of_a_namespace_something_still_holds() {
    if !can_run_kernel_tests() {
        return;
    }
    let host = TestHost::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let net = ensured(&host, dir.path(), "br-held", "10.77.0.0/24").await;
    let ids: Vec<String> = (0..6).map(|_| host.task_id()).collect();
    for id in &ids {
        net.attach(id).await.expect("attach");
    }
    // An open fd keeps half of the namespaces alive after their files are unmounted: their veths
    // do not go with them and must be deleted after the wait.
    let held: Vec<std::fs::File> = ids[..3]
        .iter()
        .map(|id| std::fs::File::open(net.task_netns(id)).expect("open netns"))
        .collect();
    detach_concurrently(&net, &ids).await;
    for id in &ids {
        assert!(!link_exists(&host.path, &net.veth_name(id)).await, "{id}");
        assert!(!net.task_netns(id).exists(), "{id}");
    }
    assert!(net.allocations().is_empty());
    drop(held);
    net.cleanup_all().await.expect("cleanup");
}
