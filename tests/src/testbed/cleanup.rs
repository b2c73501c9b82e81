//! Removing everything a testbed (live or stale) made.

use super::*;

/// Removes everything a testbed (live or stale) made. Returns what could not be removed.
pub(super) fn cleanup(prefix: &str, dir: &Path, procs: &[Proc]) -> Vec<String> {
    let mut problems = Vec::new();
    // 1. Our own children first (agents, managers, registry), so nothing restarts containers.
    for p in procs {
        if let Err(e) = p.kill() {
            problems.push(format!("{e:#}"));
        }
    }
    // 2. Shims and containers recorded by the agents' runtimes. A recorded pid may be stale and
    //    reused, so only kill what still looks like ours: a shim runs the agent binary; a container
    //    init runs in a pid namespace of its own.
    let self_pidns = ns_of(std::process::id() as i32, "pid").unwrap_or_default();
    let mut task_ids = BTreeSet::new();
    let mut node_ids = BTreeSet::new();
    let mut killed = Vec::new();
    for data_dir in agent_data_dirs(dir) {
        // The agent's cgroup parent is shoal/<node id>: removed below with the task cgroups.
        if let Ok(text) = fs::read_to_string(data_dir.join("agent.json")) {
            if let Some(id) = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["node_id"].as_str().map(str::to_string))
            {
                node_ids.insert(id);
            }
        }
        for c in runtime_containers(&data_dir).unwrap_or_default() {
            if let Some(shim) = c.shim_pid.filter(|p| {
                let exe = exe_name(*p);
                exe.starts_with("shoal-agent") || exe.starts_with("shoal-shim")
            }) {
                sigkill(shim);
                killed.push(shim);
            }
            if let Some(pid) = c.pid {
                let own_pidns = ns_of(pid, "pid").is_ok_and(|ns| ns != self_pidns);
                let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                if own_pidns || cgroup.contains(&c.task_id) {
                    sigkill(pid);
                    killed.push(pid);
                }
            }
            task_ids.insert(c.task_id);
        }
    }
    // 3. Anything still running in the testbed's namespaces or in a container netns of its tasks.
    let ours = |name: &str| {
        name.starts_with(&format!("{prefix}-"))
            || task_ids.iter().any(|t| name.contains(t.as_str()))
    };
    let namespaces: Vec<String> = netns_list()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| ours(n))
        .collect();
    for ns in &namespaces {
        if let Ok(pids) = ip_output(&["netns", "pids", ns]) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                sigkill(pid);
                killed.push(pid);
            }
        }
    }
    let _ = Testbed::wait_for(Duration::from_secs(10), "killed processes to go", || {
        Ok(killed.iter().all(|p| !pid_alive(*p)))
    });
    for pid in killed.iter().filter(|p| pid_alive(**p)) {
        problems.push(format!("process {pid} survived SIGKILL"));
    }
    // 4. Mounts under the testbed dir (overlay rootfs, tmpfs secrets…), deepest first; repeat for
    //    stacked mounts.
    let dir_str = dir.to_string_lossy().into_owned();
    for _ in 0..5 {
        let mut mounts: Vec<String> = mounts_containing(&dir_str)
            .unwrap_or_default()
            .into_iter()
            .filter(|m| Path::new(m).starts_with(dir))
            .collect();
        if mounts.is_empty() {
            break;
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    // 5. Cgroups of the tasks (empty now that their processes are gone), deepest first.
    let mut cgroups = Vec::new();
    if !task_ids.is_empty() || !node_ids.is_empty() {
        walk_dirs(Path::new("/sys/fs/cgroup"), 8, &mut |p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let parent_is_shoal = p
                .parent()
                .and_then(|d| d.file_name())
                .is_some_and(|d| d == "shoal");
            if task_ids.iter().any(|t| name.contains(t.as_str()))
                || (parent_is_shoal && node_ids.iter().any(|n| name == n.as_str()))
            {
                cgroups.push(p.to_path_buf());
            }
        });
    }
    cgroups.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for cg in cgroups {
        // A child cgroup removed first may already have taken this one with it in v1 hybrids.
        if let Err(e) = fs::remove_dir(&cg) {
            if e.kind() != io::ErrorKind::NotFound {
                problems.push(format!("cgroup {}: {e}", cg.display()));
            }
        }
    }
    // The agents' common parent (`shoal`) once nothing else uses it: rmdir fails on a
    // non-empty one (another testbed, a real agent), which is what should happen then.
    if !node_ids.is_empty() {
        if let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") {
            for c in controllers.flatten() {
                let _ = fs::remove_dir(c.path().join("shoal"));
            }
        }
        let _ = fs::remove_dir("/sys/fs/cgroup/shoal");
    }
    // 6. Namespaces: deleting a netns destroys its veths and bridges (and the switch's br0).
    for ns in &namespaces {
        if let Err(e) = ip(&["netns", "del", ns]) {
            problems.push(format!("{e:#}"));
        }
    }
    // 7. The directory.
    if dir.exists() {
        let leftover_mounts = mounts_containing(&dir_str).unwrap_or_default();
        if !leftover_mounts.is_empty() {
            problems.push(format!(
                "mounts still under {}: {leftover_mounts:?}",
                dir.display()
            ));
        } else if let Err(e) = fs::remove_dir_all(dir) {
            problems.push(format!("removing {}: {e}", dir.display()));
        }
    }
    problems
}

/// Cleans up testbeds whose test process died without running `Drop` (e.g. killed by a timeout).
pub(super) fn reap_stale() {
    let owner_alive = |prefix: &str| -> bool {
        // `sb<pid>x<n>`: anything not in that shape is not ours and counts as alive (left alone).
        let Some(rest) = prefix.strip_prefix(PREFIX_TAG) else {
            return true;
        };
        let Some((pid, n)) = rest.split_once('x') else {
            return true;
        };
        match (pid.parse::<i32>(), n.parse::<u32>()) {
            (Ok(pid), Ok(_)) => Path::new(&format!("/proc/{pid}")).exists(),
            _ => true,
        }
    };
    let mut stale = BTreeSet::new();
    if let Ok(entries) = fs::read_dir(testbed_root()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !owner_alive(&name) {
                stale.insert(name);
            }
        }
    }
    for ns in netns_list().unwrap_or_default() {
        if let Some((prefix, _)) = ns.split_once('-') {
            if !owner_alive(prefix) {
                stale.insert(prefix.to_string());
            }
        }
    }
    for prefix in stale {
        let problems = cleanup(&prefix, &testbed_root().join(&prefix), &[]);
        if !problems.is_empty() {
            eprintln!("reaping stale testbed {prefix}: {}", problems.join("; "));
        }
    }
}
