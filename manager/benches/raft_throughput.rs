//! Write throughput of a three-manager Raft group: three `RaftNode`s in this process, each with its
//! own sled log and store in a temp dir, talking over the real transport (gRPC `Raft.Send` streams
//! over mutual TLS on 127.0.0.1). Many concurrent writers propose one-action requests (a service
//! create) on the leader; the Raft task batches everything queued into one log append + fsync.
//!
//! `cargo bench -p shoal-manager --bench raft_throughput`; optional `SHOAL_BENCH_WRITERS=256`,
//! `SHOAL_BENCH_SECONDS=5`, `SHOAL_BENCH_SNAPSHOT_INTERVAL` (default: the managers' default,
//! `shoal_manager::raft::DEFAULT_SNAPSHOT_INTERVAL`). Also prints how many terms passed during the run (0 = no election
//! under load, false or otherwise).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use shoal_manager::membership::RaftService;
use shoal_manager::raft::{Dialer, GrpcTransport, PeerBook, MAX_RAFT_MESSAGE};
use shoal_manager::raft::{RaftConfig, RaftNode};
use shoal_manager::store::Store;
use shoal_proto::pki::{self, CertRole};
use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::{Service, ServiceSpec, StoreAction};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let writers = env("SHOAL_BENCH_WRITERS", 256);
    let seconds = env("SHOAL_BENCH_SECONDS", 5);
    let snapshot_interval = env(
        "SHOAL_BENCH_SNAPSHOT_INTERVAL",
        shoal_manager::raft::DEFAULT_SNAPSHOT_INTERVAL,
    );
    let dir = tempfile::tempdir()?;
    let ca = pki::generate_ca("bench")?;
    let ids: Vec<pki::Identity> = (1..=3)
        .map(|i| {
            pki::issue(
                &ca,
                &format!("m{i}"),
                CertRole::Manager,
                std::time::Duration::from_secs(86_400),
            )
        })
        .collect::<Result<_, _>>()?;
    let fps: Vec<String> = ids
        .iter()
        .map(|i| pki::fingerprint_pem(&i.cert_pem))
        .collect::<Result<_, _>>()?;
    // Free loopback ports, one per manager.
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        addrs.push(l.local_addr()?);
    }
    let peers: Vec<(u64, String)> = (0..3)
        .map(|i| (i as u64 + 1, addrs[i].to_string()))
        .collect();
    let mut stores = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let id = i as u64 + 1;
        let d = dir.path().join(format!("m{id}"));
        let store = Store::open(&d.join("store"))?;
        let tls = Arc::new(pki::client_config(
            &pki::Trust::Ca(ca.cert_pem.clone()),
            Some(&ids[i]),
        )?);
        let book = PeerBook::new(store.clone(), &peers, fps.clone());
        let node = RaftNode::start_with(
            RaftConfig {
                peers: peers.iter().filter(|(p, _)| *p != id).cloned().collect(),
                snapshot_interval,
                ..RaftConfig::new(id, d)
            },
            store.clone(),
            GrpcTransport::new(book.clone(), tls.clone()),
        )?;
        let svc = RaftService::new(
            node.clone(),
            store.clone(),
            book,
            Dialer::new(tls),
            format!("m{id}"),
            addrs[i].to_string(),
        );
        let server = tonic::transport::Server::builder()
            .tls_config(pki::server_tls(&ca.cert_pem, &ids[i]))?
            .add_service(
                shoal_proto::v1::raft_server::RaftServer::new(svc)
                    .max_decoding_message_size(MAX_RAFT_MESSAGE),
            );
        let addr = addrs[i];
        tokio::spawn(async move {
            if let Err(e) = server.serve(addr).await {
                eprintln!("server {addr}: {e}");
            }
        });
        stores.push(store);
        nodes.push(node);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        if let Some(i) = (0..3).find(|i| nodes[*i].status().is_leader) {
            break i;
        }
        if Instant::now() > deadline {
            return Err(anyhow!("no leader elected"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let term_before = nodes[leader].status().term;
    let store = stores[leader].clone();
    let done = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let store = store.clone();
        let done = done.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop_at {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let action = StoreAction {
                    action: Some(Action::CreateService(Service {
                        id: format!("s{n}"),
                        spec: Some(ServiceSpec {
                            name: format!("svc{n}"),
                            ..ServiceSpec::default()
                        }),
                        ..Service::default()
                    })),
                };
                if store.propose(vec![action]).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed();
    let n = done.load(Ordering::Relaxed);
    // Followers hold the same writes.
    let follower = (leader + 1) % 3;
    nodes[follower].read_barrier().await?;
    let replicated = stores[follower].read(|s| s.services().count());
    // A false election under load shows as a term change (pre-vote keeps a lost pre-vote from
    // moving the term).
    let term_after = nodes.iter().map(|n| n.status().term).max().unwrap_or(0);
    println!(
        "3 managers, {writers} concurrent writers, snapshot every {snapshot_interval} entries: {n} acknowledged writes in {elapsed:.2?} = {:.0} writes/s (follower holds {replicated}; term changes during the run: {})",
        n as f64 / elapsed.as_secs_f64(),
        term_after.saturating_sub(term_before)
    );
    for node in &nodes {
        node.shutdown().await;
    }
    Ok(())
}
