//! The hubbub binary as a child process, for what needs its own process
//! (signals, exit codes, logs, resource limits): killed when dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::server::base_args_except;

/// The hubbub binary as a child process; killed when dropped, even on panic.
pub struct Proc {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct ChildGuard(Option<std::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `hubbub` with `args` (without the program name) and extra environment;
/// returns once it printed `hubbub listening on URL`. A server that prints
/// nothing within `FIRST_LINES` is killed and the test fails (no hang).
pub fn spawn_hubbub(args: &[String], env: &[(&str, &Path)]) -> Proc {
    spawn_hubbub_until(args, env, "hubbub listening on ").0
}

/// As [`spawn_hubbub`], but returns once a line starting with `last` was
/// printed, with every line up to it (the URL line first).
pub fn spawn_hubbub_until(
    args: &[String],
    env: &[(&str, &Path)],
    last: &str,
) -> (Proc, Vec<String>) {
    use std::io::{BufRead, BufReader};
    // Generous: a debug build on a loaded 2-core machine, generating a CA.
    const FIRST_LINES: Duration = Duration::from_secs(60);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hubbub"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env_remove("CAROOT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut guard = ChildGuard(Some(cmd.spawn().unwrap()));
    let stdout = guard.0.as_mut().unwrap().stdout.take().unwrap();
    // One thread reads stdout for the child's whole life: the lines up to
    // `last` go to `lines`, the rest is read and dropped (no test needs it),
    // so later prints never hit a closed or full pipe.
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let last_owned = last.to_owned();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut got = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let done = line.starts_with(&last_owned);
            got.push(line.trim_end().to_owned());
            if done {
                break;
            }
        }
        let _ = lines_tx.send(got);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    // On a panic here `guard` kills the child, which ends the reading thread.
    let got = lines
        .recv_timeout(FIRST_LINES)
        .unwrap_or_else(|_| panic!("hubbub printed no {last:?} line within {FIRST_LINES:?}"));
    let line = &got[0];
    let addr = line
        .rsplit("://")
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no address in {line:?}"));
    let proc = Proc {
        child: guard.0.take().unwrap(),
        addr,
    };
    (proc, got)
}

/// `base_args` for `data` without the program name, with `extra` replacing defaults.
pub fn proc_args(data: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = base_args_except(data, extra).into_iter().skip(1).collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}
