//! One `Config`, from command-line flags or `HUBBUB_*` environment variables,
//! validated once at start.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// `--snapshot-every`'s default, in log entries. A snapshot costs a pause of
/// applying proportional to the whole store (it is written while applies
/// wait), so it is taken rarely: 100 000 entries are at least 100 000
/// writes, more under load (an entry batches what queued meanwhile).
pub const SNAPSHOT_EVERY: u64 = 100_000;

#[derive(Parser, Debug)]
#[command(
    name = "hubbub",
    version,
    about = "A self-contained real-time chat server",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `hubbub` alone is `hubbub serve`.
    #[command(flatten)]
    pub serve: Config,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (the default).
    Serve(Box<Config>),
    /// Manage accounts in a data directory while the server is stopped
    /// (a running server holds the database lock: use `/api/admin/*` then).
    User(UserArgs),
    /// Manage a running cluster through one of its nodes' admin API.
    Cluster(ClusterArgs),
    /// Three cluster nodes on loopback with one generated CA and secret
    /// (an offline demo); Ctrl-C stops all three.
    ClusterDemo(DemoArgs),
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub action: ClusterAction,
    /// A running node's base URL.
    #[arg(
        long,
        env = "HUBBUB_URL",
        default_value = "https://127.0.0.1:8443",
        global = true
    )]
    pub url: String,
    /// That node's --admin-token.
    #[arg(
        long,
        env = "HUBBUB_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub admin_token: Option<String>,
    /// The CA to trust for an https URL (the generated one by default).
    #[arg(long, default_value = "certs/ca.pem", global = true)]
    pub ca: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum ClusterAction {
    /// Remove a node from the replicated log's members (never done
    /// automatically: for a node that is gone for good; stop it first).
    Remove { node: String },
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Where the nodes' data, the CA, the cluster secret and the admin token
    /// live; reused by the next run (the cluster comes back with its history).
    #[arg(long, default_value = "cluster-demo")]
    pub dir: PathBuf,
    /// Node i serves HTTPS on P+i-1 and its cluster address on P+100+i-1;
    /// 0 lets the kernel choose every port.
    #[arg(long, default_value_t = 8441)]
    pub base_port: u16,
}

impl DemoArgs {
    /// The HTTPS and cluster ports of node `i` (1-based); 0s with --base-port 0.
    pub fn ports(&self, i: u16) -> anyhow::Result<(u16, u16)> {
        if self.base_port == 0 {
            return Ok((0, 0));
        }
        let i = i.saturating_sub(1);
        let http = self.base_port.checked_add(i);
        let cluster = self.base_port.checked_add(100u16.saturating_add(i));
        match (http, cluster) {
            (Some(h), Some(c)) => Ok((h, c)),
            _ => anyhow::bail!(
                "--base-port {} leaves no room for three nodes (at most 65433)",
                self.base_port
            ),
        }
    }
}

#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(subcommand)]
    pub action: UserAction,
    #[arg(long, env = "HUBBUB_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// List accounts.
    List,
    /// Disable an account: its tokens stop working.
    Disable { name: String },
    /// Enable a disabled account.
    Enable { name: String },
}

impl Cli {
    /// The server configuration; `None` for a command that is not `serve`.
    pub fn into_config(self) -> Config {
        match self.command {
            Some(Command::Serve(c)) => *c,
            _ => self.serve,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "HUBBUB_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Where sled keeps its files and the JWT secret lives.
    #[arg(long, env = "HUBBUB_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Serve the web UI from this directory (development) instead of the copy embedded in the binary.
    #[arg(long, env = "HUBBUB_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// This node's name, shown in `welcome`.
    #[arg(long, env = "HUBBUB_NODE_ID", default_value = "node-1")]
    pub node_id: String,
    /// Per-connection rate limit: frames per second, sustained.
    #[arg(long, env = "HUBBUB_MSGS_PER_SEC", default_value_t = 10)]
    pub msgs_per_sec: u32,
    /// Per-connection rate limit: frames allowed in a burst.
    #[arg(long, env = "HUBBUB_BURST", default_value_t = 20)]
    pub burst: u32,
    /// Largest WebSocket frame in bytes; larger closes the connection with 1009.
    #[arg(long, env = "HUBBUB_MAX_FRAME", default_value_t = 8192)]
    pub max_frame: usize,
    /// Frames queued per session before it counts as too slow and is evicted (4002).
    #[arg(long, env = "HUBBUB_SESSION_QUEUE", default_value_t = 256)]
    pub session_queue: usize,
    /// Write-ahead queue capacity; full → `unavailable`.
    #[arg(long, env = "HUBBUB_STORAGE_QUEUE", default_value_t = 8192)]
    pub storage_queue: usize,
    /// Free MiB to keep on the data directory's filesystem: under it new
    /// messages are refused (`unavailable`) and `/readyz` is 503, until free
    /// space is back above 1.25 × this. 0 turns the guard off.
    #[arg(long, env = "HUBBUB_MIN_FREE_MB", default_value_t = 64)]
    pub min_free_mb: u64,
    /// Hub command queue capacity; full → session readers wait.
    #[arg(long, env = "HUBBUB_HUB_QUEUE", default_value_t = 8192)]
    pub hub_queue: usize,
    /// Seconds between server pings.
    #[arg(long, env = "HUBBUB_PING_SECS", default_value_t = 15)]
    pub ping_secs: u64,
    /// Seconds of silence after which a connection is closed.
    #[arg(long, env = "HUBBUB_IDLE_SECS", default_value_t = 45)]
    pub idle_secs: u64,
    /// Sessions one user may hold; beyond it the oldest is closed with 4001.
    #[arg(long, env = "HUBBUB_MAX_SESSIONS_PER_USER", default_value_t = 8)]
    pub max_sessions_per_user: usize,
    /// Rooms one multi-room connection (`/ws?multi=1`) may subscribe at once;
    /// a `subscribe` beyond is answered `too_many_rooms`, the connection kept.
    #[arg(long, env = "HUBBUB_MAX_ROOMS_PER_CONNECTION", default_value_t = 100)]
    pub max_rooms_per_connection: usize,
    /// Access-token lifetime in seconds.
    #[arg(long, env = "HUBBUB_ACCESS_TTL_SECS", default_value_t = 900)]
    pub access_ttl_secs: u64,
    /// Refresh-token lifetime in seconds.
    #[arg(long, env = "HUBBUB_REFRESH_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub refresh_ttl_secs: u64,
    /// JWT signing secret (at least 32 bytes). Default: generated once into DATA_DIR/jwt_secret.
    #[arg(long, env = "HUBBUB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Extra origins allowed to open WebSockets (exact scheme://host:port), repeatable or comma-separated.
    #[arg(long, env = "HUBBUB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origin: Vec<String>,
    /// Serve HTTPS/WSS (`on`, with a generated local CA unless --tls-cert is given) or plain HTTP (`off`, e.g. behind a TLS-terminating proxy; cookies stay `Secure`).
    #[arg(long, env = "HUBBUB_TLS", default_value = "on", value_parser = ["on", "off"])]
    pub tls: String,
    /// PEM certificate chain to serve instead of the generated one (reloaded on SIGHUP).
    #[arg(long, env = "HUBBUB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "HUBBUB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Extra host names (or IPs) for the generated certificate; repeatable or comma-separated.
    #[arg(long, env = "HUBBUB_TLS_HOSTNAMES", value_delimiter = ',')]
    pub tls_hostname: Vec<String>,
    /// Where the generated CA and server certificate live.
    #[arg(long, env = "HUBBUB_CERTS_DIR", default_value = "certs")]
    pub certs_dir: PathBuf,
    /// WebSocket upgrades per minute per client address (429 beyond).
    #[arg(long, env = "HUBBUB_UPGRADES_PER_MIN", default_value_t = 120)]
    pub upgrades_per_min: u32,
    /// Sign-ups per minute per client address.
    #[arg(long, env = "HUBBUB_SIGNUPS_PER_MIN", default_value_t = 10)]
    pub signups_per_min: u32,
    /// Log-in attempts per minute per client address.
    #[arg(long, env = "HUBBUB_LOGINS_PER_MIN", default_value_t = 30)]
    pub logins_per_min: u32,
    /// Log-in attempts per minute per username (against password guessing).
    #[arg(long, env = "HUBBUB_LOGINS_PER_USER_PER_MIN", default_value_t = 10)]
    pub logins_per_user_per_min: u32,
    /// Peers (address or CIDR block) whose `X-Forwarded-For` / `Forwarded` header names
    /// the client; repeatable or comma-separated. From any other peer those headers are ignored.
    #[arg(long, env = "HUBBUB_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxy: Vec<Cidr>,
    /// Refresh-token rotations per minute per client address.
    #[arg(long, env = "HUBBUB_REFRESHES_PER_MIN", default_value_t = 60)]
    pub refreshes_per_min: u32,
    /// Seconds between purges of expired and revoked refresh tokens (also run at start).
    #[arg(
        long,
        env = "HUBBUB_REFRESH_PURGE_SECS",
        default_value_t = 3600,
        hide = true
    )]
    pub refresh_purge_secs: u64,
    /// Open WebSocket connections in total (503 beyond).
    #[arg(long, env = "HUBBUB_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,
    /// Open WebSocket connections per client address (429 beyond).
    #[arg(
        long,
        env = "HUBBUB_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 1000
    )]
    pub max_connections_per_address: usize,
    /// Seconds a client gets for everything before its request head is in
    /// (TLS handshake, first byte, head), for each request body, and for the
    /// next head on an idle keep-alive connection; then it is closed (a late body gets 408).
    #[arg(long, env = "HUBBUB_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,
    /// Open HTTP connections not upgraded to WebSockets, in total (closed at once beyond).
    #[arg(long, env = "HUBBUB_MAX_HTTP_CONNECTIONS", default_value_t = 4096)]
    pub max_http_connections: usize,
    /// Open HTTP connections not upgraded to WebSockets, per client address (closed at once beyond).
    #[arg(
        long,
        env = "HUBBUB_MAX_HTTP_CONNECTIONS_PER_ADDRESS",
        default_value_t = 256
    )]
    pub max_http_connections_per_address: usize,
    /// Token for the admin endpoints (`/api/admin/*`); without it they answer 404.
    #[arg(long, env = "HUBBUB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Serve `/metrics` on this separate plain-HTTP address only (keeps it off
    /// the public port); without it `/metrics` is on the main port.
    #[arg(long, env = "HUBBUB_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer token `/metrics` requires (wherever it is served); without it `/metrics` is public.
    #[arg(long, env = "HUBBUB_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Host names (or IPs) clients use to reach this server besides loopback,
    /// the listen address, --tls-hostname, the served certificate's names and
    /// --allowed-origin hosts, e.g. the domain of a proxy in front; requests
    /// with any other `Host` get 400.
    #[arg(long, env = "HUBBUB_PUBLIC_HOSTS", value_delimiter = ',')]
    pub public_host: Vec<String>,
    /// Log format: `text` for people, `json` for machines.
    #[arg(long, env = "HUBBUB_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// sled page cache in MiB.
    #[arg(long, env = "HUBBUB_CACHE_MB", default_value_t = 64)]
    pub cache_mb: u64,
    /// glibc malloc arenas (0: glibc's default, 8 per core). Memory freed in
    /// one thread's arena stays mapped there, so with many arenas RSS drifts
    /// far above what is in use as history and its page cache churn.
    #[arg(long, env = "HUBBUB_MALLOC_ARENAS", default_value_t = 2)]
    pub malloc_arenas: u32,
    /// Cluster mode: gossip (UDP) and node links (TCP) on this address (port 0
    /// picks one; it is printed). Without it the node is alone.
    #[arg(long, env = "HUBBUB_CLUSTER_LISTEN")]
    pub cluster_listen: Option<SocketAddr>,
    /// The cluster address peers dial (default: the --cluster-listen address).
    #[arg(long, env = "HUBBUB_CLUSTER_ADVERTISE")]
    pub cluster_advertise: Option<SocketAddr>,
    /// Cluster addresses (host:port) of other nodes to start gossip from; any
    /// subset; none for the first node.
    #[arg(long, env = "HUBBUB_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// The cluster secret (at least 32 bytes), the same on every node.
    #[arg(long, env = "HUBBUB_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// A file holding the cluster secret (a trailing newline is ignored).
    #[arg(
        long,
        env = "HUBBUB_CLUSTER_SECRET_FILE",
        conflicts_with = "cluster_secret"
    )]
    pub cluster_secret_file: Option<PathBuf>,
    /// This node's public base URL (`https://host:port`) for clients
    /// (default: from --listen and the TLS mode).
    #[arg(long, env = "HUBBUB_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// The cluster forms once this many nodes see each other.
    #[arg(long, env = "HUBBUB_BOOTSTRAP_EXPECT", default_value_t = 3)]
    pub bootstrap_expect: usize,
    /// Cluster mode: write a snapshot of the store and compact the log every
    /// this many log entries (an entry is a batch of writes). Hidden: for
    /// tests and operators who measured; the default suits most.
    #[arg(long, env = "HUBBUB_SNAPSHOT_EVERY", default_value_t = SNAPSHOT_EVERY, hide = true)]
    pub snapshot_every: u64,
    /// Cluster mode, for tests: leave this node off this node's ring of
    /// homes, as if it had not heard the node join yet (two nodes with
    /// different views of the ring). Hidden: never useful in production.
    #[arg(long, env = "HUBBUB_RING_EXCLUDE", hide = true)]
    pub ring_exclude: Option<String>,
}

impl Config {
    /// Defaults, as `hubbub` with no flags (environment included).
    pub fn from_args<I: IntoIterator<Item = S>, S: Into<std::ffi::OsString> + Clone>(
        args: I,
    ) -> Result<Self, clap::Error> {
        Ok(Cli::try_parse_from(args)?.into_config())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.msgs_per_sec > 0 && self.burst > 0,
            "--msgs-per-sec and --burst must be positive"
        );
        anyhow::ensure!(
            (256..=1 << 20).contains(&self.max_frame),
            "--max-frame must be 256..=1048576"
        );
        anyhow::ensure!(
            self.session_queue >= 2 && self.storage_queue >= 1 && self.hub_queue >= 1,
            "queues must be positive"
        );
        anyhow::ensure!(
            self.malloc_arenas <= 1024,
            "--malloc-arenas must be at most 1024 (0: glibc's default)"
        );
        anyhow::ensure!(
            self.min_free_mb <= 1 << 30,
            "--min-free-mb must be at most 1073741824 (1 PiB)"
        );
        anyhow::ensure!(
            self.ping_secs > 0 && self.idle_secs > self.ping_secs,
            "--idle-secs must exceed --ping-secs"
        );
        anyhow::ensure!(
            self.max_sessions_per_user > 0,
            "--max-sessions-per-user must be positive"
        );
        anyhow::ensure!(
            (1..=10_000).contains(&self.max_rooms_per_connection),
            "--max-rooms-per-connection must be 1..=10000"
        );
        anyhow::ensure!(
            self.access_ttl_secs > 0 && self.refresh_ttl_secs > 0,
            "token lifetimes must be positive"
        );
        anyhow::ensure!(
            self.upgrades_per_min > 0
                && self.signups_per_min > 0
                && self.logins_per_min > 0
                && self.logins_per_user_per_min > 0
                && self.refreshes_per_min > 0,
            "rate limits must be positive"
        );
        anyhow::ensure!(
            self.trusted_proxy.iter().all(|c| c.prefix() > 0),
            "--trusted-proxy with a /0 block would trust every peer's forwarding headers"
        );
        anyhow::ensure!(
            self.refresh_purge_secs > 0,
            "--refresh-purge-secs must be positive"
        );
        anyhow::ensure!(
            self.max_connections > 0 && self.max_connections_per_address > 0,
            "connection caps must be positive"
        );
        anyhow::ensure!(
            (1..=3600).contains(&self.request_timeout_secs),
            "--request-timeout-secs must be 1..=3600"
        );
        anyhow::ensure!(
            self.max_http_connections > 0 && self.max_http_connections_per_address > 0,
            "HTTP connection caps must be positive"
        );
        if let Some(t) = &self.admin_token {
            anyhow::ensure!(
                t.len() >= 16,
                "--admin-token must be at least 16 characters"
            );
        }
        if let Some(t) = &self.metrics_token {
            anyhow::ensure!(
                t.len() >= 16,
                "--metrics-token must be at least 16 characters"
            );
        }
        for h in &self.public_host {
            anyhow::ensure!(
                !h.is_empty() && !h.contains(['/', ' ', '@']),
                "--public-host takes a host name or IP, without scheme or path: {h:?}"
            );
        }
        if let Some(s) = &self.jwt_secret {
            anyhow::ensure!(s.len() >= 32, "--jwt-secret must be at least 32 bytes");
        }
        self.validate_cluster()
    }

    /// The cluster flags: checked only with --cluster-listen (the secret's
    /// length once it is read: see [`Config::cluster_secret`]).
    fn validate_cluster(&self) -> anyhow::Result<()> {
        let Some(listen) = self.cluster_listen else {
            return Ok(());
        };
        // Gossip keys and log entries carry it: keep it plain.
        anyhow::ensure!(
            !self.node_id.is_empty()
                && self.node_id.len() <= 64
                && self
                    .node_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "--node-id must be 1..=64 letters, digits, '.', '_' or '-' in cluster mode"
        );
        anyhow::ensure!(
            self.cluster_secret.is_some() || self.cluster_secret_file.is_some(),
            "cluster mode (--cluster-listen) needs --cluster-secret or --cluster-secret-file"
        );
        anyhow::ensure!(
            !listen.ip().is_unspecified() || self.cluster_advertise.is_some(),
            "--cluster-listen on {listen} needs --cluster-advertise (the address peers dial)"
        );
        if let Some(a) = self.cluster_advertise {
            anyhow::ensure!(
                !a.ip().is_unspecified() && a.port() != 0,
                "--cluster-advertise must be a concrete address and port"
            );
        }
        anyhow::ensure!(
            (1..=5).contains(&self.bootstrap_expect),
            "--bootstrap-expect must be 1..=5"
        );
        anyhow::ensure!(
            self.snapshot_every >= 10,
            "--snapshot-every must be at least 10 entries"
        );
        if let Some(u) = &self.advertise_url {
            anyhow::ensure!(
                (u.starts_with("https://") || u.starts_with("http://"))
                    && !u.trim_end_matches('/').contains(['?', '#', ' ']),
                "--advertise-url must be a base URL such as https://host:port"
            );
        }
        Ok(())
    }

    /// The cluster secret from --cluster-secret or --cluster-secret-file;
    /// `None` without cluster mode.
    pub fn cluster_secret(&self) -> anyhow::Result<Option<Vec<u8>>> {
        use anyhow::Context;
        if self.cluster_listen.is_none() {
            return Ok(None);
        }
        let secret = match (&self.cluster_secret, &self.cluster_secret_file) {
            (Some(s), _) => s.as_bytes().to_vec(),
            (None, Some(f)) => {
                let mut b = std::fs::read(f)
                    .with_context(|| format!("reading --cluster-secret-file {}", f.display()))?;
                while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                    b.pop();
                }
                b
            }
            (None, None) => anyhow::bail!("cluster mode needs a cluster secret"),
        };
        anyhow::ensure!(
            secret.len() >= 32,
            "the cluster secret must be at least 32 bytes (got {})",
            secret.len()
        );
        Ok(Some(secret))
    }

    pub fn tls_on(&self) -> bool {
        self.tls == "on"
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_secs)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_secs)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address (`/32` or
/// `/128` implied). IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is treated as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address: host bits are zero.
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The block of `prefix` bits around `addr` (prefix capped at the address length).
    pub fn new(addr: IpAddr, prefix: u8) -> Self {
        let addr = addr.to_canonical();
        let prefix = prefix.min(if addr.is_ipv4() { 32 } else { 128 });
        let network = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Cidr { network, prefix }
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        addr.is_ipv4() == self.network.is_ipv4() && Cidr::new(addr, self.prefix) == *self
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an IP address or CIDR block (like 10.0.0.0/8)");
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        // `::ffff:10.0.0.0/104` is the IPv4 block 10.0.0.0/8.
        let shift = if addr.is_ipv6() && addr.to_canonical().is_ipv4() {
            96
        } else {
            0
        };
        let max = if addr.to_canonical().is_ipv4() {
            32
        } else {
            128
        };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .and_then(|p| p.checked_sub(shift))
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
        };
        Ok(Cidr::new(addr, prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_limit_flags() {
        let c = Config::from_args(["hubbub"]).unwrap();
        assert_eq!(
            (
                c.request_timeout_secs,
                c.max_http_connections,
                c.max_http_connections_per_address
            ),
            (10, 4096, 256)
        );
        for bad in [
            ["--request-timeout-secs", "0"],
            ["--max-http-connections", "0"],
            ["--max-http-connections-per-address", "0"],
        ] {
            let c = Config::from_args(["hubbub", bad[0], bad[1]]).unwrap();
            assert!(c.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cluster_flags() {
        let single = Config::from_args(["hubbub"]).unwrap();
        assert!(
            single.cluster_secret().unwrap().is_none(),
            "no cluster, no secret read"
        );
        let secret = "s".repeat(32);
        let ok = |extra: &[&str]| {
            let mut a = vec!["hubbub", "--cluster-listen", "127.0.0.1:0"];
            a.extend(extra);
            Config::from_args(a).unwrap()
        };
        let c = ok(&["--cluster-secret", &secret, "--seeds", "a:1,b:2"]);
        c.validate().unwrap();
        assert_eq!(c.seeds, ["a:1", "b:2"]);
        assert_eq!(c.bootstrap_expect, 3);
        assert_eq!(c.snapshot_every, SNAPSHOT_EVERY);
        let every = ok(&["--cluster-secret", &secret, "--snapshot-every", "50"]);
        every.validate().unwrap();
        assert_eq!(every.snapshot_every, 50);
        assert_eq!(c.cluster_secret().unwrap().unwrap(), secret.as_bytes());
        assert!(ok(&[]).validate().is_err(), "cluster mode without a secret");
        let short = ok(&["--cluster-secret", "short"]);
        short.validate().unwrap();
        assert!(short.cluster_secret().is_err(), "a short secret");
        let any = Config::from_args([
            "hubbub",
            "--cluster-listen",
            "0.0.0.0:7000",
            "--cluster-secret",
            &secret,
        ])
        .unwrap();
        assert!(
            any.validate().is_err(),
            "0.0.0.0 without --cluster-advertise"
        );
        for bad in [
            ["--bootstrap-expect", "0"],
            ["--snapshot-every", "9"],
            ["--node-id", "has space"],
            ["--advertise-url", "host:8443"],
        ] {
            let c = ok(&["--cluster-secret", &secret, bad[0], bad[1]]);
            assert!(c.validate().is_err(), "{bad:?}");
        }
        // Without cluster mode the node id is as free as before.
        let c = Config::from_args(["hubbub", "--node-id", "has space"]).unwrap();
        c.validate().unwrap();
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("secret");
        std::fs::write(&f, format!("{secret}\n")).unwrap();
        let c = ok(&["--cluster-secret-file", f.to_str().unwrap()]);
        c.validate().unwrap();
        assert_eq!(c.cluster_secret().unwrap().unwrap(), secret.as_bytes());
    }

    #[test]
    fn cluster_demo_flags() {
        let cli = Cli::try_parse_from(["hubbub", "cluster-demo"]).unwrap();
        let Some(Command::ClusterDemo(d)) = cli.command else {
            panic!("not the demo")
        };
        assert_eq!(d.dir, PathBuf::from("cluster-demo"));
        assert_eq!(
            (d.ports(1).unwrap(), d.ports(3).unwrap()),
            ((8441, 8541), (8443, 8543))
        );
        let cli = Cli::try_parse_from(["hubbub", "cluster-demo", "--base-port", "0"]).unwrap();
        let Some(Command::ClusterDemo(d)) = cli.command else {
            panic!("not the demo")
        };
        assert_eq!(d.ports(2).unwrap(), (0, 0));
        let high = DemoArgs {
            dir: "x".into(),
            base_port: 65_434,
        };
        assert!(high.ports(3).is_err());
    }

    #[test]
    fn defaults_and_flags() {
        let c = Config::from_args(["hubbub"]).unwrap();
        c.validate().unwrap();
        assert_eq!(c.max_sessions_per_user, 8);
        let c = Config::from_args([
            "hubbub",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--msgs-per-sec",
            "5",
            "--burst",
            "7",
        ])
        .unwrap();
        assert_eq!((c.listen.port(), c.msgs_per_sec, c.burst), (0, 5, 7));
        let c = Config::from_args(["hubbub", "--data-dir", "/tmp/x"]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert!(
            Config::from_args(["hubbub", "--max-frame", "1"])
                .unwrap()
                .validate()
                .is_err()
        );
    }

    #[test]
    fn cidr_blocks() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.255.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("::a01:1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(one.prefix(), 32);
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped, "10.0.0.0/8".parse().unwrap());
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().prefix(), 0);
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/x",
            "host/8",
            "::ffff:1.2.3.4/95",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let c = Config::from_args([
            "hubbub",
            "--trusted-proxy",
            "10.0.0.0/8,::1",
            "--trusted-proxy",
            "192.168.1.1",
        ])
        .unwrap();
        assert_eq!(c.trusted_proxy.len(), 3);
        c.validate().unwrap();
        assert!(Config::from_args(["hubbub", "--trusted-proxy", "nonsense"]).is_err());
        let all = Config::from_args(["hubbub", "--trusted-proxy", "::/0"]).unwrap();
        assert!(all.validate().is_err());
    }
}
