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
/// nothing within `FIRST_LINE` is killed and the test fails (no hang).
pub fn spawn_hubbub(args: &[String], env: &[(&str, &Path)]) -> Proc {
    use std::io::{BufRead, BufReader};
    // Generous: a debug build on a loaded 2-core machine, generating a CA.
    const FIRST_LINE: Duration = Duration::from_secs(60);
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
    // One thread reads stdout for the child's whole life: the first line goes
    // to `first`, the rest is read and dropped (no test needs it), so later
    // prints never hit a closed or full pipe.
    let (first_tx, first) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = first_tx.send(reader.read_line(&mut line).map(|_| line));
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    // On a panic here `guard` kills the child, which ends the reading thread.
    let line = first
        .recv_timeout(FIRST_LINE)
        .unwrap_or_else(|_| panic!("hubbub printed no address within {FIRST_LINE:?}"))
        .unwrap();
    let addr = line
        .trim()
        .rsplit("://")
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no address in {line:?}"));
    Proc {
        child: guard.0.take().unwrap(),
        addr,
    }
}

/// `base_args` for `data` without the program name, with `extra` replacing defaults.
pub fn proc_args(data: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = base_args_except(data, extra).into_iter().skip(1).collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}
