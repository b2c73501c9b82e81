use std::sync::atomic::{AtomicUsize, Ordering};

use shoal_proto::v1::store_action::Action;
use tower::Service as _;

use super::*;
use crate::test_support::{apply, counted_service, counted_store, grpc_request, manager};

#[tokio::test]
async fn the_raft_service_gives_strangers_the_small_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, counting) = counted_store(dir.path());
    let book = PeerBook::new(store, &[], vec![]);
    let managers = Arc::new(AtomicUsize::new(0));
    let others = Arc::new(AtomicUsize::new(0));
    let mut gate = RaftGate::new(
        counted_service(managers.clone()),
        counted_service(others.clone()),
        book,
    );
    for path in ["/shoal.v1.Raft/JoinManager", "/shoal.v1.Raft/Send"] {
        gate.call(grpc_request(path)).await.expect("infallible");
    }
    assert_eq!(managers.load(Ordering::SeqCst), 0);
    assert_eq!(others.load(Ordering::SeqCst), 2);
    assert_eq!(counting.barriers.load(Ordering::SeqCst), 0);
}

#[test]
fn a_raft_message_must_come_from_the_certificates_manager() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open store");
    // A joiner before its store caught up: the join response's managers, by their ids.
    let book = PeerBook::new(
        store.clone(),
        &[(1, "10.0.0.1:4242".into()), (2, "10.0.0.2:4242".into())],
        vec!["fp1".into(), "fp2".into()],
    );
    let mut one = SenderCheck::new(book.clone(), "fp1".into());
    assert_eq!(one.check(1), Ok(()));
    assert!(matches!(
        one.check(9),
        Err(SenderError::Mismatch { claimed: 9, .. })
    ));
    let mut stranger = SenderCheck::new(book.clone(), "nobody".into());
    assert_eq!(stranger.check(1), Err(SenderError::NotAManager));

    // The store knows better: fp1 is manager 1 only, and fp2 is no manager at all.
    apply(&store, 1, vec![Action::PutNode(manager("n1", "fp1", 1))]);
    assert_eq!(one.check(1), Ok(()));
    assert_eq!(
        one.check(2),
        Err(SenderError::Mismatch {
            claimed: 2,
            expected: vec![1]
        })
    );
    let mut two = SenderCheck::new(book.clone(), "fp2".into());
    assert_eq!(two.check(2), Err(SenderError::NotAManager));

    // Demoted: from the next message on, its stream is refused. (The stored record: a put
    // carries the version it read.)
    let stored = store.read(|s| s.node("n1").cloned()).expect("n1 is stored");
    apply(
        &store,
        2,
        vec![Action::PutNode(crate::node_record::demoted_node(&stored))],
    );
    assert_eq!(one.check(1), Err(SenderError::NotAManager));
}

#[tokio::test]
async fn a_peer_whose_listener_closes_just_after_its_stream_ended_is_gone() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    // A killed process's listening socket outlives its connections by a moment.
    let closer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(15)).await;
        drop(listener);
    });
    assert!(process_gone(&addr).await, "the listener closed 15 ms later");
    closer.await.expect("closer");
    // Nothing listens at all: gone at the first attempt.
    assert_eq!(probe(&addr).await, Probe::Refused);
    assert!(process_gone(&addr).await);
}

#[tokio::test]
async fn a_peer_that_keeps_listening_is_not_gone() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    assert!(!process_gone(&addr).await);
    drop(listener);
}
