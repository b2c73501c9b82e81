//! A locked manager: the start that waits for the unlock key, serving only `ClusterAdmin.Unlock`
//! (and "locked" to every other call) until it arrives.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::v1::*;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::*;

/// At the start of a manager: loads the data key (creating it for a data dir from before
/// encryption at rest), waits to be unlocked when autolock sealed it, opens the store with it
/// (sealing whatever an older version left in clear) and keeps the key file in line with
/// autolock from then on. A locked manager stops waiting when `shutdown` turns true.
pub async fn open_store(
    data_dir: &Path,
    listen_addr: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> Result<Store, LockError> {
    let path = data_key_path(data_dir);
    let key = match read_data_key(&path)? {
        Some(StoredDataKey::Clear(key)) => key,
        Some(StoredDataKey::Sealed(sealed)) => {
            warn!(listen = %listen_addr, "this manager is locked (autolock): waiting for `shoalctl cluster unlock`");
            let key = serve_locked(data_dir, listen_addr, sealed, shutdown).await?;
            info!("unlocked: starting");
            key
        }
        None => {
            info!("no data key yet (a data dir from before encryption at rest): creating one and sealing the store and the raft log with it");
            create_data_key(data_dir)?
        }
    };
    // Opening with the key seals every value still in clear (see `Store::open_sealed`).
    let store = Store::open_sealed(&data_dir.join("store"), key.clone())?;
    tokio::spawn(keep_data_key_sealed(
        store.clone(),
        data_dir.to_path_buf(),
        key,
    ));
    Ok(store)
}

/// Serves `Unlock` (and "locked" to everything else) on `listen_addr` until the right unlock key
/// arrives (or `shutdown` turns true); returns the data key it opened.
pub(super) async fn serve_locked(
    data_dir: &Path,
    listen_addr: SocketAddr,
    sealed: SealedDataKey,
    mut shutdown: watch::Receiver<bool>,
) -> Result<DataKey, LockError> {
    let certs = data_dir.join("certs");
    let read = |name: &str| {
        let path = certs.join(name);
        std::fs::read_to_string(&path).map_err(|source| LockError::Cert { path, source })
    };
    let ca_pem = read("ca.pem")?;
    let identity = shoal_proto::pki::Identity {
        cert_pem: read("node.pem")?,
        key_pem: read("node-key.pem")?,
    };
    let (tx, mut rx) = watch::channel(None::<DataKey>);
    let admin = LockedAdmin {
        sealed,
        unlocked: Arc::new(tx),
    };
    let mut done = rx.clone();
    let server = tonic::transport::Server::builder()
        .tls_config(shoal_proto::pki::server_tls(&ca_pem, &identity))?
        .add_service(cluster_admin_server::ClusterAdminServer::new(admin))
        .add_service(Locked::<ControlName>::default())
        .add_service(Locked::<CaName>::default())
        .add_service(Locked::<DispatcherName>::default())
        .add_service(Locked::<RaftName>::default())
        .serve_with_shutdown(listen_addr, async move {
            let _ = done.wait_for(|k| k.is_some()).await;
        });
    tokio::select! {
        r = server => r?,
        _ = crate::serve::stopped(&mut shutdown) => return Err(LockError::StoppedLocked),
        // The graceful shutdown waits for open connections (other managers and agents retrying
        // keep some): once unlocked, give them a moment, then go on regardless.
        _ = async {
            let _ = rx.wait_for(|k| k.is_some()).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        } => warn!("connections to the locked server still open after 3 s: going on"),
    }
    let key = rx.borrow().clone();
    key.ok_or(LockError::StoppedLocked)
}

/// `ClusterAdmin` of a locked manager: only `Unlock` works.
pub(super) struct LockedAdmin {
    pub(super) sealed: SealedDataKey,
    pub(super) unlocked: Arc<watch::Sender<Option<DataKey>>>,
}

impl LockedAdmin {
    pub(super) fn unlock_with(
        &self,
        peer_has_cert: bool,
        unlock_key: &str,
    ) -> Result<DataKey, Status> {
        if !peer_has_cert {
            return Err(Status::unauthenticated(
                "no client certificate: unlock with the admin.conf of the cluster (shoalctl --config)",
            ));
        }
        self.sealed
            .unseal(unlock_key)
            .map_err(|_| Status::permission_denied("invalid unlock key"))
    }
}

fn locked<T>() -> Result<Response<T>, Status> {
    Err(Status::unavailable(LOCKED_MESSAGE))
}

#[tonic::async_trait]
impl cluster_admin_server::ClusterAdmin for LockedAdmin {
    async fn cluster_status(
        &self,
        _: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        locked()
    }
    async fn demote_manager(
        &self,
        _: Request<DemoteManagerRequest>,
    ) -> Result<Response<DemoteManagerResponse>, Status> {
        locked()
    }
    async fn promote_node(
        &self,
        _: Request<PromoteNodeRequest>,
    ) -> Result<Response<PromoteNodeResponse>, Status> {
        locked()
    }
    async fn list_admin_credentials(
        &self,
        _: Request<ListAdminCredentialsRequest>,
    ) -> Result<Response<ListAdminCredentialsResponse>, Status> {
        locked()
    }
    async fn revoke_admin_credential(
        &self,
        _: Request<RevokeAdminCredentialRequest>,
    ) -> Result<Response<RevokeAdminCredentialResponse>, Status> {
        locked()
    }
    async fn renew_admin_certificate(
        &self,
        _: Request<RenewAdminCertificateRequest>,
    ) -> Result<Response<RenewAdminCertificateResponse>, Status> {
        locked()
    }
    async fn get_cluster(
        &self,
        _: Request<GetClusterRequest>,
    ) -> Result<Response<GetClusterResponse>, Status> {
        locked()
    }
    async fn update_cluster(
        &self,
        _: Request<UpdateClusterRequest>,
    ) -> Result<Response<UpdateClusterResponse>, Status> {
        locked()
    }
    async fn rotate_ca(
        &self,
        _: Request<RotateCaRequest>,
    ) -> Result<Response<RotateCaResponse>, Status> {
        locked()
    }
    async fn unlock_key(
        &self,
        _: Request<UnlockKeyRequest>,
    ) -> Result<Response<UnlockKeyResponse>, Status> {
        locked()
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        // TLS verified any certificate against the cluster CA; the store (and with it the list
        // of revoked credentials) is sealed, so holding the unlock key is what counts here.
        let has_cert = request.peer_certs().is_some_and(|c| !c.is_empty());
        let remote = request.remote_addr();
        match self.unlock_with(has_cert, &request.get_ref().unlock_key) {
            Ok(key) => {
                info!(from = ?remote, "unlock key accepted");
                self.unlocked.send_replace(Some(key));
                Ok(Response::new(UnlockResponse {}))
            }
            Err(status) => {
                warn!(from = ?remote, "unlock refused: {}", status.message());
                Err(status)
            }
        }
    }
}

/// A gRPC service name for [`Locked`].
trait ServiceName {
    const NAME: &'static str;
}
#[derive(Clone, Default)]
struct ControlName;
impl ServiceName for ControlName {
    const NAME: &'static str = control_server::SERVICE_NAME;
}
#[derive(Clone, Default)]
struct CaName;
impl ServiceName for CaName {
    const NAME: &'static str = ca_server::SERVICE_NAME;
}
#[derive(Clone, Default)]
struct DispatcherName;
impl ServiceName for DispatcherName {
    const NAME: &'static str = dispatcher_server::SERVICE_NAME;
}
#[derive(Clone, Default)]
struct RaftName;
impl ServiceName for RaftName {
    const NAME: &'static str = raft_server::SERVICE_NAME;
}

/// A whole gRPC service of a locked manager: every method answers UNAVAILABLE "locked".
struct Locked<N>(PhantomData<fn() -> N>);

impl<N> Default for Locked<N> {
    fn default() -> Self {
        Locked(PhantomData)
    }
}

impl<N> Clone for Locked<N> {
    fn clone(&self) -> Self {
        Locked(PhantomData)
    }
}

impl<N: ServiceName> tonic::server::NamedService for Locked<N> {
    const NAME: &'static str = N::NAME;
}

impl<N, B> tower::Service<http::Request<B>> for Locked<N> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<B>) -> Self::Future {
        std::future::ready(Ok(Status::unavailable(LOCKED_MESSAGE).into_http()))
    }
}
