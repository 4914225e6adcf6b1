//! `hubbub-bench`: the load generator of hubbub.
//!
//! `hubbub-bench SCENARIO [flags]` speaks the real protocol (HTTP sign-up or
//! log-in, cookies, JSON frames) or, with `--raw`, drives a plain broadcast
//! server (no auth, no welcome: every text frame goes to every client).
//! Every scenario is bounded in count and time, only targets loopback, and
//! prints one JSON line of results on stdout and a human summary on stderr.

mod cluster;
mod durable;
mod fanout;
mod fill;
mod fuzz;
mod hidden;
mod history;
mod idle;
mod multi;
mod net;
mod sender;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N receivers in one room, S senders at a total rate R: deliveries/s, loss, evictions, latency.
    Fanout,
    /// Many rooms of K members with a sender in each.
    Rooms,
    /// N idle connections: server RSS per connection and the connect rate.
    Idle,
    /// send → `saved` receipt latency at rate R, then the max durable msgs/s.
    Durable,
    /// Pre-fill a room with M messages, then join→history and paging latency.
    History,
    /// A room with H private messages between two users among a few public
    /// ones: a third user's join→history and `before` page latency.
    HistoryHidden,
    /// Hostile frames over N connections, each answer checked against PROTOCOL.md,
    /// while a well-behaved pair chats: frames/s, outcomes, latency, RSS.
    Fuzz,
    /// Three nodes (and a single node as the baseline): see `--what`.
    Cluster,
    /// Fill one room to M messages in steps: server RSS and data-dir size per step.
    Fill,
    /// N users, each ONE multi-room connection in K of R rooms, a sender per
    /// room at a total rate R: deliveries/s, loss, evictions, latency, CPU.
    MultiRooms,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "hubbub-bench",
    about = "Load generator for hubbub (loopback only)"
)]
pub struct Args {
    pub scenario: Scenario,
    /// Server to target (loopback only): http://127.0.0.1:PORT (ws:// accepted).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Start target/release/hubbub on a free port with a temp data dir and high rate limits.
    #[arg(long)]
    pub spawn: bool,
    /// The hubbub binary for --spawn (default: next to this binary, then target/release/hubbub).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Extra flag for the spawned server, repeatable (e.g. --server-arg=--session-queue=512).
    #[arg(long, allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
    /// Data dir for --spawn, kept afterwards (default: a temp dir, removed).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// PID of the server under --url, for RSS figures.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Plain broadcast server: no auth, no welcome, every text frame is broadcast.
    #[arg(long)]
    pub raw: bool,
    /// WebSocket path in --raw mode.
    #[arg(long, default_value = "/")]
    pub raw_path: String,
    /// Use https/wss: with --spawn the server runs TLS with its generated CA;
    /// with --url, trust --ca.
    #[arg(long)]
    pub tls: bool,
    /// CA certificate (PEM) to trust with --tls, e.g. certs/ca.pem.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Seconds of load (fanout, rooms, each durable phase).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Receivers (fanout, default 1000) or connections (idle, default 10000).
    #[arg(long, short = 'n')]
    pub connections: Option<usize>,
    /// Idle connections opened (and kept) before the RSS baseline (default N/5).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Senders (fanout default 1, durable default 100, history pre-fill default 8).
    #[arg(long, short = 's')]
    pub senders: Option<usize>,
    /// Offered msgs/s in total, 0 = as fast as possible (fanout default 1000, rooms 10 per room, durable 5000).
    #[arg(long, short = 'r')]
    pub rate: Option<f64>,
    /// Content bytes per message.
    #[arg(long, short = 'b', default_value_t = 100)]
    pub size: usize,
    /// Rooms (rooms scenario; the pool of multi-rooms and idle --rooms-per-conn).
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Multi-room connections (`multi=1`) subscribed to K rooms each out of
    /// `--rooms` (idle: off = one single-room connection per room slot;
    /// multi-rooms default 10).
    #[arg(long)]
    pub rooms_per_conn: Option<usize>,
    /// Members per room (rooms scenario default 10, idle default 100).
    #[arg(long)]
    pub room_size: Option<usize>,
    /// idle: messages of history put in each room (one sender) before the
    /// idle connections join it, so that every join replays them (default 0).
    #[arg(long = "history", default_value_t = 0)]
    pub history_fill: usize,
    /// WebSocket sessions per account (the server allows 8 by default; --spawn raises it).
    #[arg(long)]
    pub sessions_per_user: Option<usize>,
    /// Messages to pre-fill (history).
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: usize,
    /// Messages per step of `fill` (RSS and disk are sampled after each).
    #[arg(long, default_value_t = 250_000)]
    pub step: u64,
    /// Unsaved messages in flight per sender in closed-loop phases (durable max, history pre-fill).
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Private messages between two other users (history-hidden).
    #[arg(long, default_value_t = 100_000)]
    pub hidden: u64,
    /// Latency samples (history joins and latest pages).
    #[arg(long, default_value_t = 300)]
    pub samples: usize,
    /// Pages walked backwards with `before` (history).
    #[arg(long, default_value_t = 500)]
    pub pages: usize,
    /// Room for the history scenario (default hist-M; an already filled room is reused).
    #[arg(long)]
    pub room: Option<String>,
    /// Which durable phases: rate, max, or both.
    #[arg(long, default_value = "both")]
    pub phase: String,
    /// Concurrent connects and log-ins.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// tungstenite read buffer per client connection, bytes.
    #[arg(long, default_value_t = 4096)]
    pub read_buffer: usize,
    /// fanout and rooms against hubbub: connect without `batch=1`, one WebSocket frame
    /// per message (by default the receivers opt in and split frames on `\n`).
    #[arg(long)]
    pub no_batch: bool,
    /// Hard cap on the whole run, seconds.
    #[arg(long, default_value_t = 900)]
    pub max_secs: u64,
    /// Raw WebSocket frames the fuzz sends in total.
    #[arg(long, default_value_t = 1_000_000)]
    pub frames: u64,
    /// Seed of the fuzz's case generator (the same seed repeats the same cases per connection).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Cluster measurement: latency, saved, max, fanout, failover, detection, gossip, kick, move.
    #[arg(long, default_value = "latency")]
    pub what: String,
    /// kill -9s in the cluster's failover and detection measurements, SIGTERMs in its move.
    #[arg(long, default_value_t = 10)]
    pub kills: usize,
    /// Rounds of the cluster's kick measurement (a session replaced from another node).
    #[arg(long, default_value_t = 20)]
    pub kicks: usize,
    /// Seconds of idle over which the cluster's gossip bytes/s are measured.
    #[arg(long, default_value_t = 60)]
    pub gossip_secs: u64,
    /// Free text copied into the JSON (e.g. a round number).
    #[arg(long, default_value = "")]
    pub label: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let nofile = net::raise_nofile_limit().context("raising RLIMIT_NOFILE")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        let cap = Duration::from_secs(args.max_secs);
        match tokio::time::timeout(cap, run(args, nofile)).await {
            Ok(r) => r,
            Err(_) => bail!("run exceeded --max-secs"),
        }
    })
}

async fn run(args: Args, nofile: u64) -> anyhow::Result<()> {
    if args.raw && !matches!(args.scenario, Scenario::Fanout | Scenario::Idle) {
        bail!(
            "--raw supports fanout and idle only (a plain broadcast server has no rooms or storage)"
        );
    }
    if args.raw && args.spawn {
        bail!("--spawn starts hubbub; start the raw peer yourself and pass --url and --server-pid");
    }
    let mut args = args;
    if matches!(
        args.scenario,
        Scenario::History | Scenario::HistoryHidden | Scenario::Fill
    ) && args.spawn
        && !args.server_arg.iter().any(|a| a.contains("session-queue"))
    {
        // Pre-fill senders share the room, so each gets every sender's burst
        // back; a deeper session queue keeps them from being evicted (4002).
        args.server_arg
            .extend(["--session-queue".into(), "4096".into()]);
    }
    if args.scenario == Scenario::Fuzz
        && args.spawn
        && !args.server_arg.iter().any(|a| a.contains("max-frame"))
    {
        // Room for 10 000-deep nesting inside one frame.
        args.server_arg
            .extend(["--max-frame".into(), "65536".into()]);
    }
    if args.scenario == Scenario::Cluster {
        return finish(
            &args,
            nofile,
            std::time::Instant::now(),
            None,
            cluster::run(&args).await,
        );
    }
    let target = net::Target::open(&args).await?;
    let started = std::time::Instant::now();
    let result = match args.scenario {
        Scenario::Fanout | Scenario::Rooms => fanout::run(&args, &target).await,
        Scenario::Idle => idle::run(&args, &target).await,
        Scenario::Durable => durable::run(&args, &target).await,
        Scenario::History => history::run(&args, &target).await,
        Scenario::HistoryHidden => hidden::run(&args, &target).await,
        Scenario::Fuzz => fuzz::run(&args, &target).await,
        Scenario::Fill => fill::run(&args, &target).await,
        Scenario::MultiRooms => multi::run(&args, &target).await,
        Scenario::Cluster => Err(anyhow::anyhow!("cluster runs start their own nodes")),
    };
    let server_rss_kib = target.pid.and_then(net::rss_kib);
    target.close().await;
    finish(&args, nofile, started, server_rss_kib, result)
}

/// Prints the JSON line (stdout) and the summary (stderr) of a run.
fn finish(
    args: &Args,
    nofile: u64,
    started: std::time::Instant,
    server_rss_kib: Option<u64>,
    result: anyhow::Result<Outcome>,
) -> anyhow::Result<()> {
    let (results, summary) = result?;
    let line = json!({
        "scenario": format!("{:?}", args.scenario).to_lowercase(),
        "target": if args.raw { "raw" } else { "hubbub" },
        // fanout and rooms receivers ask hubbub for batch=1 unless --no-batch.
        "batch": !args.raw
            && !args.no_batch
            && matches!(args.scenario, Scenario::Fanout | Scenario::Rooms | Scenario::MultiRooms),
        "spawned": args.spawn,
        "label": args.label,
        "nofile_limit": nofile,
        "elapsed_s": stats::round3(started.elapsed().as_secs_f64()),
        "server_rss_kib_end": server_rss_kib,
        "results": results,
    });
    println!("{line}");
    eprintln!("{summary}");
    Ok(())
}

/// What every scenario returns: the JSON results and a human summary.
pub type Outcome = (Value, String);
