//! One `Config`, from command-line flags or `HUBBUB_*` environment variables,
//! validated once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
    /// Log format: `text` for people, `json` for machines.
    #[arg(long, env = "HUBBUB_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// sled page cache in MiB.
    #[arg(long, env = "HUBBUB_CACHE_MB", default_value_t = 64)]
    pub cache_mb: u64,
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
            self.ping_secs > 0 && self.idle_secs > self.ping_secs,
            "--idle-secs must exceed --ping-secs"
        );
        anyhow::ensure!(
            self.max_sessions_per_user > 0,
            "--max-sessions-per-user must be positive"
        );
        anyhow::ensure!(
            self.access_ttl_secs > 0 && self.refresh_ttl_secs > 0,
            "token lifetimes must be positive"
        );
        anyhow::ensure!(
            self.upgrades_per_min > 0
                && self.signups_per_min > 0
                && self.logins_per_min > 0
                && self.logins_per_user_per_min > 0,
            "rate limits must be positive"
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
        if let Some(s) = &self.jwt_secret {
            anyhow::ensure!(s.len() >= 32, "--jwt-secret must be at least 32 bytes");
        }
        Ok(())
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
}
