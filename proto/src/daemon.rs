//! The start shoal-agent and shoal-manager share once their command line is read.

use std::future::Future;

/// Logs to stderr (filtered by `RUST_LOG`, else by `log_level`), makes ring rustls's crypto
/// provider and runs `main` to its end on a multi-threaded runtime; `Err` when the runtime
/// cannot start.
pub fn run<F: Future>(log_level: &str, main: F) -> std::io::Result<F::Output> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // Only the first provider installed counts; a second attempt changes nothing.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // A burst (an agent starting 1,000 containers) grows the blocking pool to hundreds of
        // threads; each idle one keeps its touched stack resident until it ends, so they end
        // two seconds after their last job rather than tokio's default ten.
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .build()?;
    Ok(runtime.block_on(main))
}
