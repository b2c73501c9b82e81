//! `shoal-loadgen`: many simulated agents in one process, for measuring the manager at scale.
//!
//! ```text
//! shoal-loadgen --manager 127.0.0.1:4242 --token SHLTKN-1-... --agents 1000 [--data-dir D]
//! ```
//! Each simulated node joins like a real agent (its own key, CSR and certificate, so its own TLS
//! connection: the manager knows a node by its client certificate), opens one dispatcher session,
//! heartbeats, and answers every new task of its assignment set with ACCEPTED, STARTING and
//! RUNNING in one status message, without starting anything. A task whose desired state becomes
//! SHUTDOWN is reported SHUTDOWN. With `--data-dir`, identities are kept there and reused by the
//! next run, which then skips joining.
//!
//! Stdout, for a driving benchmark: `ready N` once all N sessions are established, then
//! `tasks HELD RUNNING` whenever the total of assigned tasks or of those reported running changes
//! (checked every 10 ms). Runs until killed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use shoal_proto::pki::{self, Identity, Trust};
use shoal_proto::token::JoinToken;
use shoal_proto::v1::ca_client::CaClient;
use shoal_proto::v1::dispatcher_client::DispatcherClient;
use shoal_proto::v1::*;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

/// Simulated agents for the 1,000-node benchmark.
#[derive(Parser)]
#[command(name = "shoal-loadgen", about)]
struct Cli {
    /// Manager address, IP:PORT.
    #[arg(long)]
    manager: String,
    /// Worker join token.
    #[arg(long)]
    token: String,
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Joins and session set-ups in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Hostnames are PREFIX-0001, PREFIX-0002, ...
    #[arg(long, default_value = "sim")]
    hostname_prefix: String,
    /// Keep node identities here and reuse them on the next run.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// A simulated node's identity, as a real agent keeps it.
struct SimNode {
    hostname: String,
    node_id: String,
    ca_pem: String,
    identity: Identity,
}

/// Totals over all simulated nodes, printed for the benchmark.
#[derive(Default)]
struct Totals {
    established: AtomicUsize,
    /// Tasks currently in some node's assignment set.
    held: AtomicI64,
    /// Held tasks this process reported RUNNING and not yet SHUTDOWN.
    running: AtomicI64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let token = JoinToken::parse(&cli.token)?;
    let totals = Arc::new(Totals::default());
    let gate = Arc::new(Semaphore::new(cli.concurrency.max(1)));
    let cli = Arc::new(cli);
    let token = Arc::new(token);
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel::<String>();
    for i in 1..=cli.agents {
        let hostname = format!("{}-{i:04}", cli.hostname_prefix);
        let (cli, token, totals, gate) = (cli.clone(), token.clone(), totals.clone(), gate.clone());
        let failed = failed_tx.clone();
        tokio::spawn(async move {
            if let Err(e) = sim_node(&cli, &token, &hostname, &totals, &gate).await {
                let _ = failed.send(format!("{hostname}: {e:#}"));
            }
        });
    }
    drop(failed_tx);

    let mut announced = false;
    let mut last = (-1, -1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            f = failed_rx.recv() => match f {
                Some(msg) => bail!("simulated node failed: {msg}"),
                None => bail!("every simulated node stopped"),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let established = totals.established.load(Ordering::Relaxed);
        let mut out = std::io::stdout().lock();
        if !announced && established >= cli.agents {
            writeln!(out, "ready {established}")?;
            announced = true;
        }
        let now = (
            totals.held.load(Ordering::Relaxed),
            totals.running.load(Ordering::Relaxed),
        );
        if announced && now != last {
            writeln!(out, "tasks {} {}", now.0, now.1)?;
            last = now;
        }
        out.flush()?;
    }
}

/// One simulated node: join (or load), then sessions until a permanent refusal.
async fn sim_node(
    cli: &Cli,
    token: &JoinToken,
    hostname: &str,
    totals: &Totals,
    gate: &Semaphore,
) -> Result<()> {
    let permit = gate.acquire().await?;
    let dir = cli.data_dir.as_ref().map(|d| d.join(hostname));
    let node = match dir.as_deref().map(load).transpose()?.flatten() {
        Some(node) => node,
        None => {
            let node = join(&cli.manager, token, hostname).await?;
            if let Some(dir) = &dir {
                save(dir, &node)?;
            }
            node
        }
    };
    let config = Arc::new(pki::client_config(
        &Trust::Ca(node.ca_pem.clone()),
        Some(&node.identity),
    )?);
    let mut permit = Some(permit);
    let mut counted = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = session(
            cli,
            &node,
            config.clone(),
            totals,
            &mut permit,
            &mut counted,
        )
        .await;
        match result {
            Ok(never) => match never {},
            Err(SessionEnd::Refused(s)) => bail!("{}: {}", node.node_id, s.message()),
            Err(SessionEnd::Lost(e)) => {
                eprintln!("{hostname}: session lost ({e:#}); reconnecting");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Gets a certificate for a fresh key, as `shoal-agent join` does.
async fn join(manager: &str, token: &JoinToken, hostname: &str) -> Result<SimNode> {
    let config = pki::client_config(&Trust::Pinned(token.ca_fingerprint.clone()), None)?;
    let channel = pki::connect(manager, Arc::new(config)).await?;
    let (csr_pem, key_pem) = pki::generate_csr(hostname)?;
    let resp = CaClient::new(channel)
        .issue_certificate(IssueCertificateRequest {
            token: token.to_string(),
            csr_pem,
            node_id: String::new(),
            hostname: hostname.to_string(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("join refused: {}", s.message()))?
        .into_inner();
    if pki::fingerprint_pem(&resp.ca_cert_pem)? != token.ca_fingerprint {
        bail!("the manager sent a CA that does not match the join token");
    }
    Ok(SimNode {
        hostname: hostname.to_string(),
        node_id: resp.node_id,
        ca_pem: resp.ca_cert_pem,
        identity: Identity {
            cert_pem: resp.cert_pem,
            key_pem,
        },
    })
}

const FILES: [&str; 4] = ["node-id", "ca.pem", "node.pem", "node-key.pem"];

fn load(dir: &Path) -> Result<Option<SimNode>> {
    if !dir.join(FILES[0]).exists() {
        return Ok(None);
    }
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    Ok(Some(SimNode {
        hostname: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        node_id: read(FILES[0])?.trim().to_string(),
        ca_pem: read(FILES[1])?,
        identity: Identity {
            cert_pem: read(FILES[2])?,
            key_pem: read(FILES[3])?,
        },
    }))
}

fn save(dir: &Path, node: &SimNode) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // The node id goes last: its presence marks a complete identity.
    let contents = [
        &node.ca_pem,
        &node.identity.cert_pem,
        &node.identity.key_pem,
        &node.node_id,
    ];
    for (name, text) in FILES[1..].iter().chain(&FILES[..1]).zip(contents) {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Why a session ended.
enum SessionEnd {
    /// The cluster refused the node for good.
    Refused(tonic::Status),
    /// The connection or stream broke; try again.
    Lost(anyhow::Error),
}

impl From<tonic::Status> for SessionEnd {
    fn from(s: tonic::Status) -> Self {
        if s.code() == tonic::Code::PermissionDenied {
            SessionEnd::Refused(s)
        } else {
            SessionEnd::Lost(s.into())
        }
    }
}

impl From<pki::PkiError> for SessionEnd {
    fn from(e: pki::PkiError) -> Self {
        SessionEnd::Lost(e.into())
    }
}

/// What this node did with one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reported {
    Running,
    Shutdown,
}

/// Removes a node's tasks from the totals when its session ends, however it ends.
struct Held<'a> {
    totals: &'a Totals,
    tasks: HashMap<String, Reported>,
}

impl Held<'_> {
    fn running(&self) -> i64 {
        self.tasks
            .values()
            .filter(|r| **r == Reported::Running)
            .count() as i64
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.totals
            .held
            .fetch_sub(self.tasks.len() as i64, Ordering::Relaxed);
        self.totals
            .running
            .fetch_sub(self.running(), Ordering::Relaxed);
    }
}

fn update(task_id: &str, state: TaskState, message: &str) -> TaskStatusUpdate {
    TaskStatusUpdate {
        task_id: task_id.to_string(),
        status: Some(TaskStatus {
            state: state as i32,
            timestamp: shoal_proto::now_ns(),
            message: message.to_string(),
            ..Default::default()
        }),
    }
}

/// One session: register, then answer assignments and heartbeat until the stream breaks.
async fn session(
    cli: &Cli,
    node: &SimNode,
    config: Arc<rustls::ClientConfig>,
    totals: &Totals,
    permit: &mut Option<tokio::sync::SemaphorePermit<'_>>,
    counted: &mut bool,
) -> Result<Infallible, SessionEnd> {
    let channel = pki::connect(&cli.manager, config).await?;
    let (out_tx, out_rx) = mpsc::channel::<AgentMessage>(64);
    let register = AgentMessage {
        msg: Some(agent_message::Msg::Register(AgentRegister {
            description: Some(NodeDescription {
                hostname: node.hostname.clone(),
                resources: Some(Resources {
                    nano_cpus: 4_000_000_000,
                    memory_bytes: 8 << 30,
                }),
                os: "linux".into(),
                architecture: std::env::consts::ARCH.into(),
                agent_version: format!("shoal-loadgen {}", env!("CARGO_PKG_VERSION")),
                ..Default::default()
            }),
        })),
    };
    let lost = || SessionEnd::Lost(anyhow::anyhow!("the session's send queue closed"));
    out_tx.send(register).await.map_err(|_| lost())?;
    let mut inbound = DispatcherClient::new(channel)
        .session(ReceiverStream::new(out_rx))
        .await?
        .into_inner();
    let period = match inbound.message().await?.and_then(|m| m.msg) {
        Some(manager_message::Msg::Session(s)) => {
            Duration::from_nanos(s.heartbeat_period_ns.max(100_000_000) as u64)
        }
        _ => {
            return Err(SessionEnd::Lost(anyhow::anyhow!(
                "the manager did not establish the session"
            )))
        }
    };
    // Established: let the next node set up, and count this one once.
    permit.take();
    if !*counted {
        *counted = true;
        totals.established.fetch_add(1, Ordering::Relaxed);
    }
    let mut held = Held {
        totals,
        tasks: HashMap::new(),
    };
    let mut heartbeat = tokio::time::interval(period / 2);
    heartbeat.tick().await; // the first tick is immediate; registering was our first sign of life
    loop {
        let assignments = tokio::select! {
            msg = inbound.message() => match msg?.and_then(|m| m.msg) {
                Some(manager_message::Msg::Assignments(a)) => a,
                Some(_) => continue, // logs requests: simulated tasks have no output
                None => return Err(SessionEnd::Lost(anyhow::anyhow!("the manager closed the session"))),
            },
            _ = heartbeat.tick() => {
                let beat = AgentMessage { msg: Some(agent_message::Msg::Heartbeat(AgentHeartbeat {})) };
                out_tx.send(beat).await.map_err(|_| lost())?;
                continue;
            }
        };
        let (held_before, running_before) = (held.tasks.len() as i64, held.running());
        let mut updates = Vec::new();
        let mut current = HashMap::with_capacity(assignments.tasks.len());
        for task in &assignments.tasks {
            let wants_shutdown = task.desired_state > TaskState::TaskRunning as i32;
            let reported = match (held.tasks.get(&task.id), wants_shutdown) {
                (None, false) => {
                    updates.push(update(&task.id, TaskState::TaskAccepted, "accepted"));
                    updates.push(update(&task.id, TaskState::TaskStarting, "starting"));
                    updates.push(update(&task.id, TaskState::TaskRunning, "started"));
                    Reported::Running
                }
                (Some(Reported::Running) | None, true) => {
                    updates.push(update(&task.id, TaskState::TaskShutdown, "shutdown"));
                    Reported::Shutdown
                }
                (Some(r), _) => *r,
            };
            current.insert(task.id.clone(), reported);
        }
        // Tasks missing from the set are forgotten, as the real worker removes them.
        held.tasks = current;
        totals
            .held
            .fetch_add(held.tasks.len() as i64 - held_before, Ordering::Relaxed);
        totals
            .running
            .fetch_add(held.running() - running_before, Ordering::Relaxed);
        if !updates.is_empty() {
            let msg = AgentMessage {
                msg: Some(agent_message::Msg::Status(AgentTaskStatus { updates })),
            };
            out_tx.send(msg).await.map_err(|_| lost())?;
        }
    }
}
