//! The Docker Engine API, the swarm part of it: what the `docker` CLI (`service`, `node`,
//! `network`, `secret`, `config`, `stack`), docker-py, Portainer and the like send to a swarm
//! manager, served over TLS with the cluster's certificates (`--docker-api-addr`) or a unix
//! socket (`--docker-api-socket`).
//!
//! It is a gateway that only translates: every request becomes calls to this manager's own
//! `Control`/`ClusterAdmin` gRPC API, made with the manager's certificate, so reads get the same
//! read barrier, writes the same validation and forwarding to the leader, and users of shoalctl
//! and of the docker CLI see the same objects. What Shoal's core cannot do is refused with a 400
//! naming the field, never faked or silently dropped.
//!
//! Layout: `server` (listeners, TLS and the admin-certificate check, `/vX.Y` prefixes, headers),
//! `error` (docker's `{"message"}` errors), `filters` (docker's `filters=` query), one module per
//! route group, and `spec` (docker ⇄ Shoal service specs).

pub mod cert;
mod distribution;
pub mod error;
pub mod filters;
mod logs;
mod networks;
mod nodes;
mod secrets;
pub mod server;
mod services;
pub mod spec;
mod swarm;
mod system;
mod tasks;
pub mod time;

use std::sync::Arc;

use axum::Router;
use shoal_proto::v1::cluster_admin_client::ClusterAdminClient;
use shoal_proto::v1::control_client::ControlClient;
use tonic::transport::Channel;

pub use error::ApiError;

/// The newest API version served (docker 26.1's). CLIs negotiate down from it; CLI 29.0–29.2
/// refuse servers below 1.44, docker-py defaults to 1.45.
pub const MAX_API_VERSION: ApiVersion = ApiVersion(1, 45);

/// The oldest API version accepted in a `/vX.Y` prefix (swarm mode appeared in 1.24).
pub const MIN_API_VERSION: ApiVersion = ApiVersion(1, 24);

/// The API version a request was made at: its `/vX.Y` prefix, or [`MAX_API_VERSION`] for an
/// unversioned path. Put in each request's extensions by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl ApiVersion {
    /// Parses "1.41".
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let (major, minor) = s.split_once('.')?;
        Some(ApiVersion(major.parse().ok()?, minor.parse().ok()?))
    }
}

/// What every handler works with.
pub struct Ctx {
    /// This manager's own control API, dialled with its own certificate.
    pub control: ControlClient<Channel>,
    /// This manager's cluster-admin API (cluster status, the cluster's id and settings).
    pub cluster: ClusterAdminClient<Channel>,
    /// This manager's node id (`/info`'s `Swarm.NodeID`).
    pub node_id: String,
    /// This manager's advertised gRPC address (`/info`'s `Swarm.NodeAddr`).
    pub advertise_addr: String,
    /// Whether this manager leads now.
    pub leadership: tokio::sync::watch::Receiver<bool>,
}

impl Ctx {
    /// A control client (cheap: clones the channel).
    pub fn control(&self) -> ControlClient<Channel> {
        self.control
            .clone()
            .max_decoding_message_size(shoal_proto::limits::MAX_CONTROL_RESPONSE_BYTES)
            .max_encoding_message_size(shoal_proto::limits::MAX_CONTROL_REQUEST_BYTES)
    }

    /// A cluster-admin client.
    pub fn cluster(&self) -> ClusterAdminClient<Channel> {
        self.cluster.clone()
    }
}

/// The shared state of the routes.
pub type State = Arc<Ctx>;

/// Every route, unversioned (the server strips `/vX.Y` before routing).
pub fn router(ctx: State) -> Router {
    Router::new()
        .merge(system::routes())
        .merge(swarm::routes())
        .merge(nodes::routes())
        .merge(services::routes())
        .merge(tasks::routes())
        .merge(logs::routes())
        .merge(networks::routes())
        .merge(secrets::routes())
        .merge(distribution::routes())
        .fallback(|| async { ApiError::not_found("page not found") })
        .with_state(ctx)
}
