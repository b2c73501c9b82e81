//! Linearizable control calls: the read barrier in front of the `Control` service, and the
//! forwarding of the calls only the leader can serve.

use std::future::Future;
use std::pin::Pin;

use shoal_proto::v1::*;
use tonic::{Code, Status};

use crate::auth::{self, probe_of, Caller};
use crate::raft::forward::{forward_to_leader, Dialer};
use crate::raft::RaftNode;
use crate::store::Store;

/// Wraps a gRPC service so that every call first passes a read barrier ([`Store::linearize`]):
/// whatever manager shoalctl reaches, its reads see every write acknowledged before them. When
/// no leader answers in time the call fails with "no quorum" without reaching the service.
/// Calls whose streams only the leader can serve (they come from agents' sessions) are
/// forwarded to it as they are.
#[derive(Clone)]
pub struct Linearized<S> {
    inner: S,
    store: Store,
    leader_only: Option<(RaftNode, Dialer)>,
}

/// The Control calls that only the leader serves: log streams and volume answers come from
/// agents' sessions, which only the leader holds.
const LEADER_ONLY_PATHS: [&str; 4] = [
    "/shoal.v1.Control/ServiceLogs",
    "/shoal.v1.Control/ListVolumes",
    "/shoal.v1.Control/RemoveVolume",
    "/shoal.v1.Control/PruneVolumes",
];

impl<S> Linearized<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, store: Store) -> Linearized<S> {
        Linearized {
            inner,
            store,
            leader_only: None,
        }
    }

    /// Forwards `service logs` and `volume ls|rm|prune` to the leader when this manager does
    /// not lead.
    pub fn forward_logs(mut self, raft: RaftNode, dialer: Dialer) -> Linearized<S> {
        self.leader_only = Some((raft, dialer));
        self
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Linearized<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Linearized<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone is the ready one (tower's usual swap), the original stays for later calls.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let store = self.store.clone();
        let forward = self.leader_only.clone().filter(|(raft, _)| {
            LEADER_ONLY_PATHS.contains(&req.uri().path()) && !raft.status().is_leader
        });
        Box::pin(async move {
            if let Some((raft, dialer)) = forward {
                // Authenticate here: the leader sees this manager's certificate, not the admin's.
                if let Err(s) = admin_of_http(&store, &req) {
                    return Ok(s.into_http());
                }
                return Ok(forward_to_leader(&raft, &dialer, req).await);
            }
            // Nobody gets a read barrier (a Raft round) before they are authenticated.
            if let Err(s) = admitted_before_barrier(&store, &req) {
                return Ok(s.into_http());
            }
            if let Err(e) = store.linearize().await {
                // Refused before the handler ran: nothing was proposed, so a client may safely
                // send even a write to another manager.
                let mut status = Status::from(e);
                status.metadata_mut().insert(
                    shoal_proto::config::NOTHING_PROPOSED_KEY,
                    tonic::metadata::MetadataValue::from_static("true"),
                );
                return Ok(status.into_http());
            }
            inner.call(req).await
        })
    }
}

/// Checks that an HTTP-level request carries the admin certificate.
fn admin_of_http(store: &Store, req: &http::Request<tonic::body::Body>) -> Result<(), Status> {
    auth::require_admin(store, &probe_of(req))
}

/// Whether a control call may have its read barrier: refused at once without a client
/// certificate, or with a worker node's; an admin's or a manager's passes. A certificate our CA
/// signed that this manager's store does not know yet (one issued a moment ago on the leader)
/// passes too: the TLS handshake verified it, and after the barrier the handler checks it again
/// against an up-to-date store.
fn admitted_before_barrier<B>(store: &Store, req: &http::Request<B>) -> Result<(), Status> {
    match auth::caller(store, &probe_of(req)) {
        Ok(Caller::Admin)
        | Ok(Caller::Node {
            role: NodeRole::RoleManager,
            ..
        }) => Ok(()),
        Ok(Caller::Node { .. }) => Err(Status::permission_denied(
            "this call needs the admin certificate (admin.conf)",
        )),
        Err(s) if s.code() == Code::PermissionDenied => Ok(()),
        Err(s) => Err(s),
    }
}

#[cfg(test)]
mod tests;
