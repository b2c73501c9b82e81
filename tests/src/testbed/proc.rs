//! A process started inside a host, with its output captured.

use super::*;

pub(super) fn join_args(args: &[OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn read_all<R: Read + Send + 'static>(r: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    r.map(|mut r| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    })
}

pub(super) fn join_reader(h: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    h.and_then(|h| h.join().ok()).unwrap_or_default()
}

/// A process started by `Host::spawn`; clones share it.
#[derive(Clone)]
pub struct Proc {
    pub(super) inner: Arc<ProcInner>,
}

pub(super) struct ProcInner {
    pid: u32,
    pub(super) host: String,
    program: OsString,
    args: Vec<OsString>,
    child: Mutex<Child>,
    exit: Mutex<Option<ExitStatus>>,
}

impl Proc {
    pub(super) fn new(child: Child, host: &str, program: &OsStr, args: Vec<OsString>) -> Proc {
        Proc {
            inner: Arc::new(ProcInner {
                pid: child.id(),
                host: host.to_string(),
                program: program.to_owned(),
                args,
                child: Mutex::new(child),
                exit: Mutex::new(None),
            }),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// The program and arguments it was started with (to start it again the same way).
    pub fn command(&self) -> (&OsStr, &[OsString]) {
        (&self.inner.program, &self.inner.args)
    }

    /// Its exit status if it has exited (and reaps it), `None` while it runs.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        let mut exit = lock(&self.inner.exit);
        if exit.is_none() {
            *exit = lock(&self.inner.child).try_wait()?;
        }
        Ok(*exit)
    }

    /// Whether it is still running.
    pub fn is_running(&self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Waits for it to exit on its own, at most `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<ExitStatus> {
        let mut status = None;
        Testbed::wait_for(timeout, "process exit", || {
            status = self.try_wait()?;
            Ok(status.is_some())
        })?;
        status.ok_or_else(|| anyhow!("process {} did not exit", self.pid()))
    }

    /// SIGKILLs it (only it: not its process group, so an agent's shims survive) and reaps it.
    pub fn kill(&self) -> Result<()> {
        let mut exit = lock(&self.inner.exit);
        if exit.is_some() {
            return Ok(());
        }
        let mut child = lock(&self.inner.child);
        if let Some(status) = child.try_wait()? {
            *exit = Some(status);
            return Ok(());
        }
        child
            .kill()
            .with_context(|| format!("killing pid {}", self.inner.pid))?;
        *exit = Some(child.wait()?);
        Ok(())
    }
}
