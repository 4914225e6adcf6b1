//! `fill`: one room filled to `--messages` (closed loop, `--senders` senders
//! with `--window` unsaved each, like `history`'s pre-fill), in steps of
//! `--step` messages. After each step every socket is closed and, after a
//! short settle, the server's RSS (VmRSS) and the data directory's size (all
//! files, like `du`) are sampled: how memory and disk grow with history.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::durable::{PhaseCfg, PhaseStats, phase, share};
use crate::net::{self, Target};
use crate::stats::round3;
use crate::{Args, Outcome};

/// Time for the server to let go of closed sockets before RSS is read.
const SETTLE: Duration = Duration::from_secs(2);

pub async fn run(args: &Args, t: &Target) -> anyhow::Result<Outcome> {
    let total = args.messages as u64;
    let step = args.step.max(1);
    let room = args.room.clone().unwrap_or_else(|| "fill".to_string());
    let senders = args.senders.unwrap_or(8).max(1);
    let (accounts, _) = net::accounts(t, senders, args.concurrency).await?;
    let run = net::run_id();
    // Each sender's next sequence number: ids stay unique across steps.
    let mut seqs = vec![0u64; senders];
    let mut points = Vec::new();
    let mut filled = 0u64;
    let mut summary = format!("fill: room {room}, {senders} senders, {} B\n", args.size);
    points.push(sample(t, 0, 0.0));
    while filled < total {
        let n = step.min(total - filled);
        let start = Instant::now();
        let mut set = JoinSet::new();
        for (i, seq0) in seqs.iter().enumerate() {
            let account = accounts.get(i).cloned();
            let (ep, rb, path, size) =
                (t.ep.clone(), args.read_buffer, t.ws_path(&room), args.size);
            let c = PhaseCfg::closed_loop(args, run, i + 1, share(n, senders, i), None);
            let mut seq = *seq0;
            set.spawn(async move {
                let mut ws = net::join(&ep, false, &path, account.as_ref(), rb).await?;
                let make = move |q: u64| words(format!("fill {i}-{q} "), size, q);
                let st = phase(&mut ws, c, &mut seq, &make).await;
                anyhow::Ok((i, seq, st))
            });
        }
        let mut all = PhaseStats::default();
        while let Some(r) = set.join_next().await {
            let (i, seq, st) = r?.context("a fill sender")?;
            seqs[i] = seq;
            all.merge(&st);
        }
        let secs = start.elapsed().as_secs_f64();
        if all.saved < n {
            bail!(
                "fill step incomplete: {} of {n} saved ({} unavailable, {} rate limited, evicted: {})",
                all.saved,
                all.unavailable,
                all.rate_limited,
                all.closed
            );
        }
        filled += n;
        tokio::time::sleep(SETTLE).await;
        let p = sample(t, filled, n as f64 / secs);
        summary.push_str(&format!(
            "{filled:>9} msgs: RSS {:>7} KiB, disk {:>8} KiB ({} B/msg), {:.0} saved/s\n",
            p["rss_kib"],
            p["disk_kib"],
            p["disk_bytes_per_msg"],
            n as f64 / secs
        ));
        eprintln!("{}", p);
        points.push(p);
    }
    let results = json!({
        "room": room,
        "messages": total,
        "step": step,
        "senders": senders,
        "size": args.size,
        "points": points,
    });
    Ok((results, summary))
}

/// Chat-like content of `size` bytes: `head`, then words picked by a
/// xorshift seeded with `seq`. Not a run of one letter: sled's compression
/// would make that look far better than real text does.
fn words(head: String, size: usize, seq: u64) -> String {
    const WORDS: [&str; 32] = [
        "the", "a", "meeting", "is", "at", "noon", "can", "you", "send", "me", "that", "file",
        "thanks", "ok", "see", "tomorrow", "deploy", "failed", "again", "on", "staging", "why",
        "lunch", "later", "build", "green", "now", "review", "my", "pull", "request", "please",
    ];
    let mut s = head;
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while s.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
        s.push(' ');
    }
    s.truncate(size);
    s
}

/// One checkpoint: messages stored so far, server RSS, data-dir bytes.
fn sample(t: &Target, msgs: u64, rate: f64) -> Value {
    let rss = t.pid.and_then(net::rss_kib);
    let disk = t.data_dir.as_deref().and_then(|d| dir_bytes(d).ok());
    json!({
        "messages": msgs,
        "rss_kib": rss,
        "disk_kib": disk.map(|b| b / 1024),
        "disk_bytes_per_msg": match (disk, msgs) {
            (Some(b), m) if m > 0 => Some(b / m),
            _ => None,
        },
        "saved_per_sec": round3(rate).round(),
    })
}

/// Bytes on disk under `dir`, every file (allocated blocks, like `du`).
fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let md = e.metadata()?;
            if md.is_dir() {
                stack.push(e.path());
            } else {
                total += md.blocks() * 512;
            }
        }
    }
    if total == 0 {
        return Err(anyhow!("nothing under {}", dir.display()));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_fill_exactly_and_vary() {
        let a = words("fill 0-1 ".into(), 100, 1);
        let b = words("fill 0-2 ".into(), 100, 2);
        assert_eq!(a.len(), 100);
        assert!(a.starts_with("fill 0-1 "));
        assert_ne!(a[9..], b[9..]);
    }

    #[test]
    fn dir_bytes_counts_nested_files() {
        let d = std::env::temp_dir().join(format!("hubbub-fill-test-{}", std::process::id()));
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub").join("f"), vec![1u8; 10_000]).unwrap();
        let n = dir_bytes(&d).unwrap();
        let _ = std::fs::remove_dir_all(&d);
        assert!(n >= 10_000, "{n}");
    }
}
