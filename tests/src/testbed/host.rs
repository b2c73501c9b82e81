//! A testbed host: a network namespace on the switch, and the processes started in it.

use super::*;

/// One host of a testbed: a network namespace with `eth0` on the switch.
#[derive(Clone)]
pub struct Host {
    pub(super) name: String,
    pub(super) netns: String,
    pub(super) ip: Ipv4Addr,
    pub(super) switch_ns: String,
    pub(super) switch_port: String,
    pub(super) dir: PathBuf,
    pub(super) procs: Arc<Mutex<Vec<Proc>>>,
}

impl Host {
    /// The host's short name (as given to `add_host`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace's name (`<prefix>-<name>`, a file in /run/netns).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The host's address on the switch.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The path of the host's network namespace (`/run/netns/<prefix>-<name>`).
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }

    /// A directory for this host's data (`<testbed>/<name>`), created on first use.
    pub fn dir(&self) -> Result<PathBuf> {
        let d = self.dir.join(&self.name);
        fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// Starts `program` inside this host's network namespace, stdout and stderr appended to
    /// `<testbed>/logs/<log_file>`.
    pub fn spawn<I, S>(&self, program: impl AsRef<OsStr>, args: I, log_file: &str) -> Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn_env(program, args, &[], log_file)
    }

    /// Like `spawn`, with extra environment variables (not written to the log: they may be
    /// secrets, such as `SHOAL_JOIN_TOKEN`).
    pub fn spawn_env<I, S>(
        &self,
        program: impl AsRef<OsStr>,
        args: I,
        env: &[(&str, &str)],
        log_file: &str,
    ) -> Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let log_path = self.dir.join("logs").join(log_file);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        writeln!(
            log,
            "=== [{}] {} {}",
            self.name,
            program.to_string_lossy(),
            join_args(&args)
        )?;
        let (mut cmd, _ns) = self.command(program)?;
        cmd.args(&args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().with_context(|| {
            format!(
                "starting {} in host {}",
                program.to_string_lossy(),
                self.name
            )
        })?;
        let proc = Proc::new(child, &self.name, program, args);
        lock(&self.procs).push(proc.clone());
        Ok(proc)
    }

    /// Runs `program` inside this host's network namespace and waits for it (at most `RUN_TIMEOUT`).
    pub fn run<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_timeout(program, args, RUN_TIMEOUT)
    }

    /// Like `run`, with an explicit timeout; on timeout the command is killed and this fails.
    pub fn run_timeout<I, S>(
        &self,
        program: impl AsRef<OsStr>,
        args: I,
        timeout: Duration,
    ) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let what = format!(
            "[{}] {} {}",
            self.name,
            program.to_string_lossy(),
            join_args(&args)
        );
        let (mut cmd, _ns) = self.command(program)?;
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        let stdout = read_all(child.stdout.take());
        let stderr = read_all(child.stderr.take());
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if start.elapsed() >= timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{what}: still running after {timeout:?}, killed");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(Output {
            status,
            stdout: join_reader(stdout),
            stderr: join_reader(stderr),
        })
    }

    /// Like `run_timeout`, with `input` written to the program's stdin (then closed): for
    /// secrets that must never be on a command line, such as `cluster unlock`'s key.
    pub fn run_input<I, S>(
        &self,
        program: impl AsRef<OsStr>,
        args: I,
        input: &[u8],
        timeout: Duration,
    ) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let what = format!(
            "[{}] {} {} (with input)",
            self.name,
            program.to_string_lossy(),
            join_args(&args)
        );
        let (mut cmd, _ns) = self.command(program)?;
        cmd.args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        let stdout = read_all(child.stdout.take());
        let stderr = read_all(child.stderr.take());
        if let Some(mut stdin) = child.stdin.take() {
            // A program that exits without reading gives EPIPE: its output says why.
            let _ = stdin.write_all(input);
        }
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if start.elapsed() >= timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{what}: still running after {timeout:?}, killed");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(Output {
            status,
            stdout: join_reader(stdout),
            stderr: join_reader(stderr),
        })
    }

    /// Kills (SIGKILL) every process `spawn` started on this host and reaps it.
    pub fn kill_all(&self) -> Result<()> {
        let procs: Vec<Proc> = lock(&self.procs)
            .iter()
            .filter(|p| p.inner.host == self.name)
            .cloned()
            .collect();
        for p in procs {
            p.kill()?;
        }
        Ok(())
    }

    /// Cuts the host off the switch (its switch-side veth goes down).
    pub fn partition(&self) -> Result<()> {
        ip(&[
            "-n",
            &self.switch_ns,
            "link",
            "set",
            &self.switch_port,
            "down",
        ])
    }

    /// Plugs the host back into the switch.
    pub fn heal(&self) -> Result<()> {
        ip(&[
            "-n",
            &self.switch_ns,
            "link",
            "set",
            &self.switch_port,
            "up",
        ])
    }

    /// A command that will run in this host's network namespace (and only that namespace); the
    /// returned file is the namespace handle and must live until the command is spawned.
    fn command(&self, program: &OsStr) -> Result<(Command, File)> {
        let ns_path = Path::new(NETNS_DIR).join(&self.netns);
        let ns = File::open(&ns_path).with_context(|| format!("opening {}", ns_path.display()))?;
        let fd = ns.as_raw_fd();
        let parent = nix::unistd::getpid().as_raw();
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.dir);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        // SAFETY: the closure runs in the forked child before exec. It only makes async-signal-safe
        // system calls (prctl, getppid, setns) and builds io::Errors from raw errno values, which does
        // not allocate. `fd` is valid there because the parent keeps `ns` open until spawn returns
        // (the caller holds the returned File), and it is O_CLOEXEC so the program does not inherit it.
        unsafe {
            cmd.pre_exec(move || {
                // Die with the test thread that started us: a test killed by a timeout must not
                // leave managers and agents running.
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok((cmd, ns))
    }
}
