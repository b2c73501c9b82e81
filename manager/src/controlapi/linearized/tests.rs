use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tonic::Code;
use tower::Service as _;

use super::*;
use crate::test_support::{counted_service, counted_store, grpc_request};

#[tokio::test]
async fn a_control_call_without_a_certificate_gets_no_read_barrier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, counting) = counted_store(dir.path());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut linearized = Linearized::new(counted_service(calls.clone()), store);
    for path in [
        "/shoal.v1.Control/ListServices",
        "/shoal.v1.Control/CreateService",
    ] {
        let resp = linearized
            .call(grpc_request(path))
            .await
            .expect("infallible");
        let code = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(Code::from_i32);
        assert_eq!(code, Some(Code::Unauthenticated), "{path}");
    }
    assert_eq!(counting.barriers.load(Ordering::SeqCst), 0, "read barriers");
    assert_eq!(counting.proposals.load(Ordering::SeqCst), 0, "proposals");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "handler calls");
}
