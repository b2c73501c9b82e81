//! `shoal-agent bench-run --rootfs DIR [--root R]`: one create + start + wait + delete of `/bin/true`
//! in a container whose only layer is DIR, for start-latency comparisons with runc and crun.
//! `--netns PATH` joins that network namespace instead of creating one (to measure netns cost).

use std::path::PathBuf;

use super::{ContainerConfig, Runtime};

/// Runs the benchmark container once; returns its exit code (or 125 on a runtime error).
pub fn bench_main(args: &[String]) -> i32 {
    let mut rootfs = None;
    let mut root = PathBuf::from("/run/shoal-bench");
    let mut netns = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match (arg.as_str(), it.clone().next()) {
            ("--rootfs", Some(v)) => {
                rootfs = Some(PathBuf::from(v));
                it.next();
            }
            ("--root", Some(v)) => {
                root = PathBuf::from(v);
                it.next();
            }
            ("--netns", Some(v)) => {
                netns = Some(PathBuf::from(v));
                it.next();
            }
            _ => {}
        }
    }
    let Some(rootfs) = rootfs else {
        eprintln!("usage: shoal-agent bench-run --rootfs DIR [--root R] [--netns PATH]");
        return 125;
    };
    match run_once(rootfs, root, netns) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench-run: {e}");
            125
        }
    }
}

fn run_once(
    rootfs: PathBuf,
    root: PathBuf,
    netns: Option<PathBuf>,
) -> Result<i32, Box<dyn std::error::Error>> {
    let rootfs = std::fs::canonicalize(&rootfs)?;
    let runtime = Runtime::new(&root, "shoal-bench")?;
    let id = format!("bench-{}-{}", std::process::id(), shoal_proto::now_ns());
    let cfg = ContainerConfig {
        id: id.clone(),
        layers: vec![rootfs],
        args: vec!["/bin/true".into()],
        env: vec!["PATH=/bin".into()],
        netns,
        ..Default::default()
    };
    runtime.start(&cfg)?;
    let wait = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?
        .block_on(runtime.wait(&id));
    runtime.delete(&id)?;
    Ok(wait?)
}
