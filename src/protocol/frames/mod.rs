//! Frames on the wire: parsing what clients send (`client`), encoding what
//! the server sends (`server`), and `Frame`, the encoded bytes shared by
//! every recipient. Parsing is strict about types and lenient about extra
//! fields (`room`, `sender`, `ts` sent by a client are ignored: the session
//! supplies them).

mod client;
mod server;
#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use client::*;
pub use server::*;

/// An encoded server frame: JSON text, reference-counted so one broadcast is
/// serialized once and shared by every recipient's queue (a clone is a
/// reference-count bump, never a copy). Always valid UTF-8: it is built only
/// from a `String`, so the session writer hands it to the WebSocket library
/// as text without checking it again.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    pub fn as_str(&self) -> &str {
        // Built only from `String`s (see `From<String>`), so always UTF-8;
        // the fallback is never taken and needs no unsafe.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The UTF-8 bytes, borrowed: for copying them somewhere without
    /// `as_str`'s UTF-8 check (which costs as much as the copy).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The UTF-8 bytes, shared (no copy).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Frame {
    fn from(s: String) -> Self {
        Frame(Bytes::from(s))
    }
}

impl From<&'static str> for Frame {
    fn from(s: &'static str) -> Self {
        Frame(Bytes::from_static(s.as_bytes()))
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}
