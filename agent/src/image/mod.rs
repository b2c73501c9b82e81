//! Images: registry pulls, `docker save` / OCI archive imports, a content-addressed blob store and
//! unpacked layers shared between images.
//!
//! Layout under the store's root:
//! - `blobs/sha256/<hex>`: manifests, configs and layer blobs, each verified before it lands here;
//! - `layers/<diff id hex>/`: each layer unpacked once (into `tmp/`, then renamed), overlay-ready;
//! - `images/<escaped reference>.json`: what a reference resolves to;
//! - `tmp/`: work in progress, emptied on open.

mod archive;
mod auth;
mod error;
pub mod manifest;
mod pull;
mod reference;
mod store;
pub mod unpack;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use auth::{credentials_for, normalize_server, RegistryMirror};
pub use error::ImageError;
pub use reference::{normalize, ImageRef, DEFAULT_REGISTRY, DEFAULT_TAG};
pub use store::ImageStore;

/// A locally available image, ready to become a container's root file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Normalized reference (`docker.io/library/busybox:latest`), or the config digest of an
    /// untagged imported image.
    pub reference: String,
    /// Digest of what the reference resolved to (the index digest for multi-platform images).
    pub digest: String,
    /// How to run it.
    pub config: ImageConfig,
    /// Unpacked layer directories, lowest first (overlayfs lists them the other way round).
    pub layers: Vec<PathBuf>,
}

/// The run settings of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as `KEY=value`.
    pub env: Vec<String>,
    /// `WorkingDir` ("" = `/`).
    pub working_dir: String,
    /// `User` ("" = root).
    pub user: String,
    /// `Healthcheck` (the Dockerfile's HEALTHCHECK); `None` when the image has none. Records
    /// written before it existed read as `None`.
    #[serde(default)]
    pub healthcheck: Option<ImageHealthcheck>,
}

/// The image config's `Healthcheck`, as docker writes it (durations in nanoseconds; 0 = unset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageHealthcheck {
    /// `Test`: `[]` inherit, `["NONE"]`, `["CMD", arg...]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    /// `Interval`.
    pub interval_ns: i64,
    /// `Timeout`.
    pub timeout_ns: i64,
    /// `StartPeriod`.
    pub start_period_ns: i64,
    /// `StartInterval`.
    pub start_interval_ns: i64,
    /// `Retries`.
    pub retries: i32,
}
