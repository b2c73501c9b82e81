//! shoal-agent: joins a cluster and runs tasks. Internal modes (`shim`, `bench-run`) are dispatched
//! before any tokio runtime or thread exists: the shim forks and clones containers.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("shim") => std::process::exit(shoal_agent::runtime::shim_main(&args)),
        Some("bench-run") => {
            std::process::exit(shoal_agent::runtime::bench::bench_main(&args[2..]))
        }
        _ => {}
    }
    // The agent proper (`join`) is written elsewhere.
}
