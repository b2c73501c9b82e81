//! `shoal-shim`: the per-container shim as a binary of its own. It is the same code as
//! `shoal-agent shim`, but linked without the agent's gRPC, TLS and tokio machinery, so each of
//! the (many, long-lived) shims maps and relocates far less memory. The agent uses it when it is
//! installed next to `shoal-agent`, and falls back to `shoal-agent shim` otherwise.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(shoal_agent::runtime::shim_main(&args))
}
