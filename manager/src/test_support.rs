//! Stand-ins shared by the manager's unit tests: a store whose Raft calls are counted, a gRPC
//! server that counts its calls, and a store write applied as Raft would.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;

use crate::store::{Proposer, Store, StoreError};

/// An admin credential issued at 1 that never expires.
pub(crate) fn cred(fp: &str, holder: &str) -> AdminCredential {
    AdminCredential {
        fingerprint: fp.into(),
        holder: holder.into(),
        issued_at: 1,
        expires_at: 0,
    }
}

/// A proposer that only counts what it is asked: a read barrier or a proposal is work.
#[derive(Default)]
pub(crate) struct Counting {
    pub(crate) barriers: AtomicUsize,
    pub(crate) proposals: AtomicUsize,
}

impl Proposer for Counting {
    fn propose(
        &self,
        _req: StoreRequest,
    ) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>> {
        self.proposals.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }

    fn read_barrier(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>> {
        self.barriers.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
}

/// A store whose every Raft call is counted.
pub(crate) fn counted_store(dir: &std::path::Path) -> (Store, Arc<Counting>) {
    let store = Store::open(dir).expect("open store");
    let counting = Arc::new(Counting::default());
    store.set_proposer(counting.clone());
    (store, counting)
}

/// A stand-in for a generated gRPC server that counts the calls it gets.
pub(crate) fn counted_service(
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<
    http::Request<tonic::body::Body>,
    Response = http::Response<tonic::body::Body>,
    Error = std::convert::Infallible,
    Future = impl Future<
        Output = Result<http::Response<tonic::body::Body>, std::convert::Infallible>,
    > + Send,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |_req: http::Request<tonic::body::Body>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Ok(http::Response::new(tonic::body::Body::empty())) }
    })
}

/// A gRPC request for `path` with no body.
pub(crate) fn grpc_request(path: &str) -> http::Request<tonic::body::Body> {
    http::Request::builder()
        .uri(path)
        .body(tonic::body::Body::empty())
        .expect("a valid request")
}

/// Applies `actions` at Raft `index`, as a committed entry would be.
pub(crate) fn apply(store: &Store, index: u64, actions: Vec<Action>) {
    let req = StoreRequest {
        request_id: index,
        actions: actions
            .into_iter()
            .map(|a| StoreAction { action: Some(a) })
            .collect(),
    };
    store.apply(index, &req).expect("apply");
}

/// A manager node with certificate `fp` and Raft id `raft_id`.
pub(crate) fn manager(id: &str, fp: &str, raft_id: u64) -> Node {
    Node {
        id: id.into(),
        cert_fingerprint: fp.into(),
        manager_status: Some(ManagerStatus {
            raft_id,
            addr: format!("10.0.0.{raft_id}:4242"),
            ..Default::default()
        }),
        ..Default::default()
    }
}
