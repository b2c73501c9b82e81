//! shoal-netperf: a small TCP throughput and round-trip tool for the overlay benchmark, run inside
//! network namespaces (a host's, or a task's through `nsenter -n`).
//!
//! ```text
//! shoal-netperf server --listen 0.0.0.0:5201
//! shoal-netperf throughput --connect 10.1.0.3:5201 --seconds 5     # prints Gbit/s
//! shoal-netperf latency --connect 10.1.0.3:5201 --count 20000      # prints median µs
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "TCP throughput and round-trip measurements for Shoal's overlay benchmark")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serves throughput (sink) and latency (echo) clients, one thread per connection.
    Server {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:5201")]
        listen: String,
    },
    /// Sends as much as it can for `--seconds`; prints the received rate in Gbit/s.
    Throughput {
        /// The server's address.
        #[arg(long)]
        connect: String,
        /// How long to send.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Sends 1-byte messages one at a time and waits for each echo; prints the median round trip
    /// in microseconds.
    Latency {
        /// The server's address.
        #[arg(long)]
        connect: String,
        /// Round trips to make.
        #[arg(long, default_value_t = 20000)]
        count: usize,
    },
}

const CHUNK: usize = 128 * 1024;

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Server { listen } => server(&listen),
        Cmd::Throughput { connect, seconds } => {
            let gbps = throughput(&connect, Duration::from_secs_f64(seconds))?;
            println!("{gbps:.3}");
            Ok(())
        }
        Cmd::Latency { connect, count } => {
            let us = latency(&connect, count)?;
            println!("{us:.1}");
            Ok(())
        }
    }
}

fn connect(addr: &str) -> Result<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect {addr}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {addr}")),
        }
    }
}

fn server(listen: &str) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        std::thread::spawn(move || {
            if let Err(e) = serve(conn) {
                eprintln!("connection: {e:#}");
            }
        });
    }
    Ok(())
}

fn serve(mut conn: TcpStream) -> Result<()> {
    conn.set_nodelay(true)?;
    let mut mode = [0u8; 1];
    conn.read_exact(&mut mode)?;
    match mode[0] {
        b'T' => {
            let mut buf = vec![0u8; CHUNK];
            let mut total: u64 = 0;
            loop {
                let n = conn.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            conn.write_all(&total.to_be_bytes())?;
        }
        b'L' => {
            let mut b = [0u8; 1];
            loop {
                match conn.read(&mut b)? {
                    0 => break,
                    _ => conn.write_all(&b)?,
                }
            }
        }
        m => bail!("unknown mode {m}"),
    }
    Ok(())
}

fn throughput(addr: &str, dur: Duration) -> Result<f64> {
    let mut conn = connect(addr)?;
    conn.write_all(b"T")?;
    let buf = vec![0x5au8; CHUNK];
    let start = Instant::now();
    while start.elapsed() < dur {
        conn.write_all(&buf)?;
    }
    conn.shutdown(Shutdown::Write)?;
    let mut total = [0u8; 8];
    conn.read_exact(&mut total)?;
    let secs = start.elapsed().as_secs_f64();
    Ok(u64::from_be_bytes(total) as f64 * 8.0 / secs / 1e9)
}

fn latency(addr: &str, count: usize) -> Result<f64> {
    let mut conn = connect(addr)?;
    conn.set_nodelay(true)?;
    conn.write_all(b"L")?;
    let mut samples = Vec::with_capacity(count);
    let mut b = [0u8; 1];
    for _ in 0..count.max(1) {
        let t = Instant::now();
        conn.write_all(b"x")?;
        conn.read_exact(&mut b)?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    Ok(samples[samples.len() / 2])
}
