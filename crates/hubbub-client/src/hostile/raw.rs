//! WebSocket framing by hand, so a client can send what tungstenite refuses
//! to: invalid UTF-8 in text frames, stray continuations, reserved opcodes
//! and bits, unmasked or oversize frames. Server frames are read the same way.

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};

use crate::{Account, Endpoint, Io};

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Server frames larger than this are treated as a broken stream (history
/// pages and errors are far smaller).
const MAX_SERVER_FRAME: u64 = 16 << 20;

/// One client frame, exactly as it goes on the wire.
#[derive(Clone, Debug)]
pub struct RawFrame {
    pub fin: bool,
    /// The three RSV bits (must be 0 without extensions).
    pub rsv: u8,
    pub opcode: u8,
    /// Clients must mask; `false` sends the payload in the clear.
    pub masked: bool,
    pub payload: Vec<u8>,
    /// The length the header claims, when it lies (payload is then cut short).
    pub claimed_len: Option<u64>,
}

impl RawFrame {
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Self {
        RawFrame {
            fin: true,
            rsv: 0,
            opcode,
            masked: true,
            payload: payload.into(),
            claimed_len: None,
        }
    }

    pub fn text(payload: impl Into<Vec<u8>>) -> Self {
        Self::new(OP_TEXT, payload)
    }

    pub fn fin(mut self, fin: bool) -> Self {
        self.fin = fin;
        self
    }

    /// Appends the encoded frame to `out`, masked with `key`.
    pub fn encode(&self, key: [u8; 4], out: &mut Vec<u8>) {
        out.push(u8::from(self.fin) << 7 | (self.rsv & 7) << 4 | (self.opcode & 0xF));
        let mask_bit = u8::from(self.masked) << 7;
        let len = self.claimed_len.unwrap_or(self.payload.len() as u64);
        if len < 126 {
            out.push(mask_bit | len as u8);
        } else if len <= u64::from(u16::MAX) {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
        if self.masked {
            out.extend_from_slice(&key);
            out.extend(
                self.payload
                    .iter()
                    .zip(key.iter().cycle())
                    .map(|(b, k)| b ^ k),
            );
        } else {
            out.extend_from_slice(&self.payload);
        }
    }
}

/// A frame from the server (never masked, never fragmented by hubbub).
#[derive(Debug)]
pub enum ServerFrame {
    Text(String),
    Binary(Vec<u8>),
    /// Close code (1005 when the frame had none) and reason.
    Close(u16, String),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

/// A WebSocket over plain TCP or TLS, after the upgrade, with no checks of its own.
pub struct RawWs {
    rd: BufReader<ReadHalf<Box<dyn Io>>>,
    wr: WriteHalf<Box<dyn Io>>,
}

/// The reading half, to run beside the writing half.
pub struct RawReader(BufReader<ReadHalf<Box<dyn Io>>>);
/// The writing half.
pub struct RawWriter(WriteHalf<Box<dyn Io>>);

impl RawWs {
    /// Upgrades `GET path` with `acct`'s cookies; fails unless the answer is 101.
    pub async fn connect(ep: &Endpoint, path: &str, acct: &Account) -> anyhow::Result<Self> {
        let io = ep.connect().await?;
        let (rd, mut wr) = tokio::io::split(io);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Cookie: {}\r\n\r\n",
            ep.addr,
            acct.cookie_header()
        );
        wr.write_all(req.as_bytes())
            .await
            .context("upgrade write")?;
        let mut rd = BufReader::new(rd);
        let mut status = String::new();
        rd.read_line(&mut status).await.context("upgrade read")?;
        if status.split_whitespace().nth(1) != Some("101") {
            bail!("upgrade refused: {}", status.trim());
        }
        loop {
            let mut line = String::new();
            if rd.read_line(&mut line).await? == 0 {
                bail!("closed during the upgrade");
            }
            if line == "\r\n" {
                break;
            }
        }
        Ok(RawWs { rd, wr })
    }

    pub fn split(self) -> (RawReader, RawWriter) {
        (RawReader(self.rd), RawWriter(self.wr))
    }
}

impl RawWriter {
    /// Writes already encoded frames in one go.
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write_all(bytes).await?;
        self.0.flush().await
    }

    pub async fn shutdown(&mut self) {
        let _ = self.0.shutdown().await;
    }
}

impl RawReader {
    /// The next server frame; `Ok(None)` at a clean end of stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<ServerFrame>> {
        let mut head = [0u8; 2];
        match self.0.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let opcode = head[0] & 0xF;
        let mut len = u64::from(head[1] & 0x7F);
        if len == 126 {
            len = u64::from(self.0.read_u16().await?);
        } else if len == 127 {
            len = self.0.read_u64().await?;
        }
        if head[1] & 0x80 != 0 || len > MAX_SERVER_FRAME || head[0] & 0x80 == 0 {
            bail!("unexpected server frame header {head:02x?} len {len}");
        }
        let mut payload = vec![0u8; len as usize];
        self.0.read_exact(&mut payload).await?;
        Ok(Some(match opcode {
            OP_TEXT => ServerFrame::Text(String::from_utf8(payload).context("server text")?),
            OP_BINARY => ServerFrame::Binary(payload),
            OP_CLOSE => {
                let code = match payload.get(..2) {
                    Some(c) => u16::from_be_bytes([c[0], c[1]]),
                    None => 1005,
                };
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                ServerFrame::Close(code, reason.into_owned())
            }
            OP_PING => ServerFrame::Ping(payload),
            OP_PONG => ServerFrame::Pong(payload),
            other => bail!("server sent opcode {other}"),
        }))
    }
}
