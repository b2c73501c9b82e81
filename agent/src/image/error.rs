//! Errors of the image module.

use std::path::PathBuf;

/// Everything that can go wrong while naming, pulling, importing or unpacking an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image reference does not follow docker's grammar.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as the user wrote it.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A blob's content does not hash to the digest that names it.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Which blob (manifest, config, layer ...).
        what: String,
        /// The digest the manifest or reference announced.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// A digest string is not `sha256:<64 lowercase hex>`.
    #[error("unsupported digest {digest:?}")]
    UnsupportedDigest {
        /// The digest as found.
        digest: String,
    },
    /// The registry answered with an error, or could not be reached.
    #[error("registry error while fetching {what} of {reference}: {source}")]
    Registry {
        /// The normalized reference being pulled.
        reference: String,
        /// What was being fetched.
        what: String,
        /// The client's error.
        #[source]
        source: Box<oci_client::errors::OciDistributionError>,
    },
    /// The registry refused the pull: credentials were missing, wrong or not enough.
    #[error("{}", unauthorized_message(registry, *credentials_sent))]
    Unauthorized {
        /// The normalized reference being pulled.
        reference: String,
        /// The registry that refused (`host[:port]`).
        registry: String,
        /// Whether credentials were sent (they were then refused).
        credentials_sent: bool,
    },
    /// An identity token could not be exchanged for an access token.
    #[error("identity token for {registry}: {reason}")]
    TokenExchange {
        /// The registry (`host[:port]`).
        registry: String,
        /// What went wrong (never the token).
        reason: String,
    },
    /// A `--registry-mirror` is not an `http(s)://host[:port]` URL.
    #[error("invalid registry mirror {mirror:?}: {reason}")]
    InvalidMirror {
        /// The mirror as given.
        mirror: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A manifest, index or config could not be parsed.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which document.
        what: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A manifest list has no linux/amd64 entry.
    #[error("no linux/amd64 manifest in the index of {reference}")]
    NoMatchingPlatform {
        /// The reference whose index was searched.
        reference: String,
    },
    /// A layer uses a compression we cannot read (e.g. zstd).
    #[error("unsupported layer format for {digest}: {reason}")]
    UnsupportedLayer {
        /// The layer blob's digest.
        digest: String,
        /// What was found instead of tar or gzip.
        reason: String,
    },
    /// A tar entry would be written outside the layer directory, or through a symlink.
    #[error("unsafe path {path:?} in layer: {reason}")]
    UnsafePath {
        /// The entry's path inside the tar.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON document could not be encoded or decoded.
    #[error("json {path}: {source}")]
    Json {
        /// The file or document concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// An archive given to `import_archive` is neither a `docker save` nor an OCI layout tar.
    #[error("archive {path}: {reason}")]
    Archive {
        /// The archive's path.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
}

/// docker's wording, plus what to do about it when nothing was sent.
fn unauthorized_message(registry: &str, credentials_sent: bool) -> String {
    if credentials_sent {
        format!("unauthorized: incorrect username or password for {registry}")
    } else {
        format!(
            "unauthorized: authentication required (no credentials were sent for {registry}; use shoalctl login and --with-registry-auth)"
        )
    }
}

impl ImageError {
    /// Builds an `Io` error from an operation name and a path.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io { op, path, source }
    }
}
