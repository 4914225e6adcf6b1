use std::process::ExitCode;

use clap::Parser;
use hubbub::config::{Cli, Command};
use hubbub::server::{EXIT_STORAGE_FAILED, StorageFailed};
use tracing_subscriber::EnvFilter;

/// With the opt-in feature `jemalloc`, jemalloc serves every Rust allocation:
/// about a quarter less CPU per stored message than glibc malloc (whose
/// arena and consolidation work shows high in the storage writer's profile),
/// but 20–35 % more RSS after a durable run, so it is not the default
/// (docs/BENCHMARKS.md, "durable"). `--malloc-arenas` then only tunes what C
/// code allocates with glibc.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit status: 0 after a signal, `EXIT_STORAGE_FAILED` (75) when storage
/// failed, 1 for any other error (printed like `anyhow` does).
fn main() -> ExitCode {
    // Everything hubbub creates (sled's files, which it makes with the umask
    // and may add at any time, the JWT secret, keys) is for this user only.
    // Stricter bits the caller set are kept.
    #[cfg(unix)]
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
    unsafe {
        let old = libc::umask(0o077);
        libc::umask(old | 0o077);
    }
    let cli = Cli::parse();
    // Before the runtime's threads exist: glibc fixes its arena limit when
    // the first thread besides main needs an arena.
    let arenas = match &cli.command {
        Some(Command::Serve(c)) => c.malloc_arenas,
        _ => cli.serve.malloc_arenas,
    };
    let arenas_capped = hubbub::server::limit_malloc_arenas(arenas);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cli, (arenas, arenas_capped))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<StorageFailed>().is_some() => {
            // The server task has logged the reason and what to do.
            ExitCode::from(EXIT_STORAGE_FAILED)
        }
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

/// `arenas`: `--malloc-arenas` and whether glibc took it (logged here, once
/// logging is set up).
async fn serve(cli: Cli, arenas: (u32, bool)) -> anyhow::Result<()> {
    // One crypto provider for the whole process (ring); rustls panics when it
    // has to guess between two.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // openraft logs every failed replication RPC to a node that is down (every
    // 500 ms) at ERROR, and ordinary election moments at WARN: hubbub reports
    // a dead peer itself (gossip, /api/admin/cluster, metrics).
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=off"));
    let json = match &cli.command {
        Some(Command::Serve(c)) => c.log_format == "json",
        _ => cli.serve.log_format == "json",
    };
    // Logs go to stderr: stdout's first line is the URL, for people and scripts.
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    } else {
        use std::io::IsTerminal;
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_env_filter(filter)
            .init();
    }
    if !arenas.1 {
        tracing::warn!(
            arenas = arenas.0,
            "could not limit the malloc arenas (--malloc-arenas; not glibc?)"
        );
    }
    if let Some(Command::User(args)) = cli.command {
        return hubbub::admin::run(args).await;
    }
    if let Some(Command::Cluster(args)) = cli.command {
        let token = args
            .admin_token
            .ok_or_else(|| anyhow::anyhow!("--admin-token (or HUBBUB_ADMIN_TOKEN) is required"))?;
        let hubbub::config::ClusterAction::Remove { node } = args.action;
        let answer = hubbub::cluster::cli::remove(&args.url, &token, &args.ca, &node).await?;
        println!("{answer}");
        return Ok(());
    }
    if let Some(Command::ClusterDemo(args)) = cli.command {
        return hubbub::demo::run(args).await;
    }
    let running = hubbub::server::start(cli.into_config()).await?;
    running.announce();
    #[cfg(unix)]
    if let Some(tls) = running.tls.clone() {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tls.reload_logged();
            }
        });
    }
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = running.storage_failed() => {}
    }
    running.shutdown().await
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
