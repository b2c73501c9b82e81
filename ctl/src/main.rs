//! shoalctl: the command line of a Shoal cluster, in the style of `docker service` / `docker node`.
//!
//! Every failure ends the same way: one line `Error: <message>` on stderr and exit code 1.

mod cli;
mod client;
mod commands;
mod compose;
mod docker_config;
mod output;

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_failure(e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => fail(&error_chain(&e)),
    }
}

/// Prints `Error: <message>` as one line and returns exit code 1.
fn fail(message: &str) -> ExitCode {
    eprintln!("Error: {}", one_line(message));
    ExitCode::from(1)
}

fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// An error and its causes as `outer: inner: root`, skipping causes the outer text already quotes.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if c.is_empty() || text.contains(&c) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&c);
    }
    text
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Help and version print normally (exit 0); anything else becomes one `Error:` line.
fn clap_failure(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // A bare noun (`shoalctl service`) prints its help, as docker does. A closed pipe
            // (`--help | head`) is not an error.
            let _ = output::print(&e.render().to_string());
            ExitCode::SUCCESS
        }
        _ => fail(&clap_message(&e)),
    }
}

/// The argument an error is about, as the user typed it: "--replicas" from "--replicas <N>".
fn flag_of(e: &clap::Error) -> Option<String> {
    match e.get(ContextKind::InvalidArg) {
        // "--privileged[=<BOOL>]" for a flag whose value is optional.
        Some(ContextValue::String(s)) => s.split([' ', '=', '[']).next().map(str::to_string),
        _ => None,
    }
}

/// One line for a parse error, naming the field.
fn clap_message(e: &clap::Error) -> String {
    let flag = flag_of(e).filter(|f| f.starts_with('-'));
    match e.kind() {
        ErrorKind::ValueValidation => {
            let reason = std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| "invalid value".into());
            match flag {
                Some(f) => format!("{f}: {reason}"),
                None => reason,
            }
        }
        ErrorKind::InvalidValue => {
            let value = match e.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(v)) => v.clone(),
                _ => String::new(),
            };
            let valid = match e.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(v)) => format!(" (possible values: {})", v.join(", ")),
                _ => String::new(),
            };
            let what = if value.is_empty() {
                "a value is required".to_string()
            } else {
                format!("invalid value {value:?}")
            };
            match flag {
                Some(f) => format!("{f}: {what}{valid}"),
                None => format!("{what}{valid}"),
            }
        }
        _ => {
            // clap's own message: its first lines up to the usage, minus the "error: " and tips.
            let rendered = e.render().to_string();
            let lines: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:"))
                .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
                .collect();
            let text = lines.join(" ");
            text.strip_prefix("error: ").unwrap_or(&text).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(args: &[&str]) -> String {
        match cli::Cli::try_parse_from(std::iter::once("shoalctl").chain(args.iter().copied())) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(e) => clap_message(&e),
        }
    }

    #[test]
    fn cluster_admin_commands_parse() {
        let parse = |args: &[&str]| {
            cli::Cli::try_parse_from(std::iter::once("shoalctl").chain(args.iter().copied()))
        };
        assert!(parse(&["cluster", "admin", "ls"]).is_ok());
        assert!(parse(&["cluster", "admin", "list", "--format", "json"]).is_ok());
        let revoke = parse(&["cluster", "admin", "revoke", "ab12", "--force"]).expect("parses");
        match revoke.command {
            cli::Command::Cluster(cli::ClusterCommand::Admin(cli::AdminCommand::Revoke(a))) => {
                assert_eq!(a.fingerprint_prefix, "ab12");
                assert!(a.force);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(parse_err(&["cluster", "admin", "revoke"]).contains("FINGERPRINT_PREFIX"));
    }

    #[test]
    fn parse_errors_are_one_line_naming_the_field() {
        assert_eq!(
            parse_err(&[
                "service",
                "create",
                "--name",
                "x",
                "--replicas",
                "-1",
                "busybox"
            ]),
            "--replicas: must be 0 or more"
        );
        assert_eq!(
            parse_err(&[
                "service",
                "create",
                "--name",
                "x",
                "--replicas=-1",
                "busybox"
            ]),
            "--replicas: must be 0 or more"
        );
        assert!(parse_err(&[
            "service",
            "create",
            "--name",
            "x",
            "--limit-memory",
            "lots",
            "i"
        ])
        .starts_with("--limit-memory: invalid size \"lots\": "));
        assert_eq!(
            parse_err(&["service", "create", "--name", "x", "--mode", "weird", "i"]),
            "--mode: invalid value \"weird\" (possible values: replicated, global)"
        );
        let missing = parse_err(&["service", "create", "busybox"]);
        assert!(missing.contains("--name"), "{missing}");
        assert!(!missing.contains('\n'));
        let unknown = parse_err(&["service", "ls", "--bogus"]);
        assert!(unknown.contains("--bogus"), "{unknown}");
        assert!(!unknown.contains('\n'));
        assert!(parse_err(&["service", "scale", "web=-1"]).contains("must be 0 or more"));
        assert!(parse_err(&["service", "logs", "--tail", "x", "web"]).starts_with("--tail: "));
    }

    #[test]
    fn confinement_errors_are_one_line_naming_the_flag() {
        #[rustfmt::skip]
        let cases: &[(&[&str], &str)] = &[
            (&["--cap-add", "FLY"], "--cap-add: unknown capability \"FLY\" (use names like NET_ADMIN or CAP_NET_ADMIN, or ALL)"),
            (&["--cap-drop", "RESET"], "--cap-drop: unknown capability \"RESET\" (use names like NET_ADMIN or CAP_NET_ADMIN, or ALL)"),
            (&["--device", "dev/fuse"], "--device: host path \"dev/fuse\" must be absolute (e.g. /dev/fuse)"),
            (&["--device", "/dev/fuse:fuse"], "--device: container path \"fuse\" must be absolute (e.g. /dev/fuse)"),
            (&["--device", "/dev/sda:/dev/xvda:rx"], "--device: permissions \"rx\" are not a combination of r, w and m (e.g. rwm, r)"),
            (&["--device", "/a:/b:r:x"], "--device: \"/a:/b:r:x\" is not HOST[:CONTAINER[:PERMS]] (e.g. /dev/fuse or /dev/sda:/dev/xvda:r)"),
            (&["--security-opt", "apparmor=unconfined"], "--security-opt: unsupported security option \"apparmor\": only no-new-privileges and seccomp are supported"),
            (&["--security-opt", "label=disable"], "--security-opt: unsupported security option \"label\": only no-new-privileges and seccomp are supported"),
            (&["--security-opt", "no-new-privileges=maybe"], "--security-opt: no-new-privileges takes true or false, not \"maybe\""),
            (&["--security-opt", "seccomp"], "--security-opt: seccomp needs a value: seccomp=default, seccomp=unconfined or seccomp=PATH.json"),
            (&["--ulimit", "nofile=2048:1024"], "--ulimit: nofile: soft limit 2048 is above the hard limit 1024"),
            (&["--ulimit", "files=1"], "--ulimit: unknown ulimit \"files\" (one of as, core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack)"),
            (&["--ulimit", "nofile"], "--ulimit: \"nofile\" is not NAME=SOFT[:HARD] (e.g. nofile=1024:2048)"),
            (&["--sysctl", "kernel.panic=1"], "--sysctl: kernel.panic is not a namespaced sysctl: it would change the whole node, not just the container (allowed: net.*, fs.mqueue.*, kernel.msg*, kernel.sem, kernel.shm*)"),
            (&["--sysctl", "net.core.somaxconn"], "--sysctl: \"net.core.somaxconn\" is not KEY=VALUE (e.g. net.core.somaxconn=1024)"),
            (&["--stop-signal", "SIGNOPE"], "--stop-signal: unknown signal \"SIGNOPE\" (e.g. SIGTERM, SIGQUIT, SIGUSR1 or a number)"),
            (&["--log-driver", "syslog"], "--log-driver: unsupported log driver \"syslog\" (only json-file is supported)"),
            (&["--log-opt", "compress=true"], "--log-opt: unknown option \"compress\" of the json-file log driver (use max-size or max-file)"),
            (&["--log-opt", "max-size=10x"], "--log-opt: \"10x\" is not a size (a number with an optional unit b, k, m or g, e.g. 10m)"),
            (&["--log-opt", "max-size=0"], "--log-opt: \"0\": max-size must be a positive size"),
            (&["--log-opt", "max-file=0"], "--log-opt: max-file must be at least 1"),
            (&["--entrypoint", "sh -c 'oops"], "--entrypoint: \"sh -c 'oops\" has an unterminated quote or a trailing backslash"),
            (&["--privileged=maybe"], "--privileged: invalid value \"maybe\" (possible values: true, false)"),
        ];
        for (flags, want) in cases {
            let mut args = vec!["service", "create", "--name", "x"];
            args.extend_from_slice(flags);
            args.push("busybox");
            assert_eq!(parse_err(&args), *want, "{flags:?}");
        }
        #[rustfmt::skip]
        let update_cases: &[(&[&str], &str)] = &[
            (&["--cap-add", "FLY"], "--cap-add: unknown capability \"FLY\" (use names like NET_ADMIN or CAP_NET_ADMIN, ALL or RESET)"),
            (&["--read-only=yes"], "--read-only: invalid value \"yes\" (possible values: true, false)"),
            (&["--ulimit-add", "nofile=x"], "--ulimit-add: nofile: \"x\" is not a number (-1 is unlimited)"),
            (&["--sysctl-add", "vm.swappiness=1"], "--sysctl-add: vm.swappiness is not a namespaced sysctl: it would change the whole node, not just the container (allowed: net.*, fs.mqueue.*, kernel.msg*, kernel.sem, kernel.shm*)"),
            (&["--device-add", "/dev/fuse:/dev/fuse:q"], "--device-add: permissions \"q\" are not a combination of r, w and m (e.g. rwm, r)"),
            (&["--stop-signal", "NOPE"], "--stop-signal: unknown signal \"NOPE\" (e.g. SIGTERM, SIGQUIT, SIGUSR1 or a number)"),
        ];
        for (flags, want) in update_cases {
            let mut args = vec!["service", "update"];
            args.extend_from_slice(flags);
            args.push("web");
            assert_eq!(parse_err(&args), *want, "{flags:?}");
        }
    }

    #[test]
    fn file_and_mount_errors_are_one_line_naming_the_flag() {
        #[rustfmt::skip]
        let cases: &[(&[&str], &str)] = &[
            (&["service", "create", "--name", "x", "--mount", "type=bind,dst=/x", "i"], "--mount: \"type=bind,dst=/x\": a bind mount needs source=HOSTPATH"),
            (&["service", "create", "--name", "x", "--secret", "source=pw,mode=rw", "i"], "--secret: mode \"rw\" is not an octal file mode (e.g. 0440)"),
            (&["service", "create", "--name", "x", "--config", "target=/x", "i"], "--config: \"target=/x\" has no source=NAME"),
            (&["service", "update", "--mount-add", "type=tmpfs,src=a,dst=/t", "web"], "--mount-add: \"type=tmpfs,src=a,dst=/t\": a tmpfs mount takes no source"),
            (&["stack", "deploy", "-c", "a.yml", "--resolve-image", "sometimes", "app"], "--resolve-image: invalid value \"sometimes\" (possible values: always, changed, never)"),
        ];
        for (args, want) in cases {
            assert_eq!(parse_err(args), *want, "{args:?}");
        }
    }

    #[test]
    fn help_and_version_are_not_errors() {
        for args in [
            &["--help"][..],
            &["--version"],
            &["service"],
            &["service", "create", "--help"],
        ] {
            let e =
                cli::Cli::try_parse_from(std::iter::once("shoalctl").chain(args.iter().copied()))
                    .expect_err("help");
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::DisplayHelp
                        | ErrorKind::DisplayVersion
                        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                ),
                "{args:?}: {:?}",
                e.kind()
            );
        }
    }

    #[test]
    fn chains_without_repeats() {
        let inner = std::io::Error::other("connection refused");
        let e =
            anyhow::Error::new(inner).context("cannot connect to manager at x: connection refused");
        assert_eq!(
            error_chain(&e),
            "cannot connect to manager at x: connection refused"
        );
        let e = anyhow::anyhow!("root").context("outer");
        assert_eq!(error_chain(&e), "outer: root");
        assert_eq!(one_line("a\n  b\n"), "a b");
    }
}
