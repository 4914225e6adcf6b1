//! WebSocket close codes from PROTOCOL.md.

/// Why the server closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal close (the client closed, or the session ended cleanly).
    Normal,
    /// 1001: the server is shutting down; reconnect.
    GoingAway,
    /// 1002: broken WebSocket framing (RFC 6455 §7.4.1): a stray or
    /// interleaved continuation, a fragmented or oversize control frame, a
    /// reserved opcode or bit, an unmasked client frame.
    ProtocolError,
    /// 1003: a binary frame.
    Unsupported,
    /// 1007: a text frame (or close reason) that is not valid UTF-8.
    InvalidData,
    /// 1008: the access token expired or was revoked.
    Policy,
    /// 1009: a frame over `max_frame`.
    TooBig,
    /// 4001: replaced by a newer session.
    Replaced,
    /// 4002: evicted, too slow to read.
    Evicted,
}

impl CloseCode {
    pub const ALL: [CloseCode; 9] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::Unsupported,
        CloseCode::InvalidData,
        CloseCode::Policy,
        CloseCode::TooBig,
        CloseCode::Replaced,
        CloseCode::Evicted,
    ];

    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::Unsupported => 1003,
            CloseCode::InvalidData => 1007,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Replaced => 4001,
            CloseCode::Evicted => 4002,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "bye",
            CloseCode::GoingAway => "server shutting down",
            CloseCode::ProtocolError => "websocket protocol error",
            CloseCode::Unsupported => "binary frames are not supported",
            CloseCode::InvalidData => "text frame is not valid UTF-8",
            CloseCode::Policy => "access token expired or revoked",
            CloseCode::TooBig => "frame too large",
            CloseCode::Replaced => "replaced by a newer session",
            CloseCode::Evicted => "too slow to read",
        }
    }
}
