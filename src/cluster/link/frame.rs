//! The bytes of a link after the hello: length-prefixed binary frames.
//!
//! ```text
//! len: u32 BE (bytes after it, at most the configured max frame)
//! kind: u8
//! id: u64 BE                 request, response, refused only
//! code: u8                   refused only
//! body: the rest
//! ```
//!
//! Pure encoding and decoding; the reader in `conn` does the I/O.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

const REQUEST: u8 = 1;
const RESPONSE: u8 = 2;
const MESSAGE: u8 = 3;
const PING: u8 = 4;
const PONG: u8 = 5;
const REFUSED: u8 = 6;

/// Bytes before a frame's `len` counts: the length itself.
pub const LEN_BYTES: usize = 4;
/// The most a frame adds to its body after the length (kind and id).
pub const OVERHEAD: usize = 1 + 8;

/// Why a request was answered without running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseCode {
    /// The peer already runs its limit of requests from this link.
    Busy = 1,
    /// The handler's answer would exceed the frame limit.
    TooLarge = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Request { id: u64, body: Bytes },
    Response { id: u64, body: Bytes },
    Refused { id: u64, code: RefuseCode },
    Message { body: Bytes },
    Ping,
    Pong,
}

/// A frame that cannot be read: the link is dropped (`bad_frame`) or closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes over the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("malformed frame")]
    Malformed,
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
}

impl Frame {
    /// The frame as it goes on the wire, length included.
    pub fn encode(&self) -> Bytes {
        let body_len = match self {
            Frame::Request { body, .. } | Frame::Response { body, .. } => 9 + body.len(),
            Frame::Refused { .. } => 10,
            Frame::Message { body } => 1 + body.len(),
            Frame::Ping | Frame::Pong => 1,
        };
        let mut out = BytesMut::with_capacity(LEN_BYTES + body_len);
        // Callers check bodies against the frame limit (a u32) before they
        // encode; saturating keeps a violation a bad frame at the peer.
        out.put_u32(u32::try_from(body_len).unwrap_or(u32::MAX));
        match self {
            Frame::Request { id, body } => put_with_id(&mut out, REQUEST, *id, body),
            Frame::Response { id, body } => put_with_id(&mut out, RESPONSE, *id, body),
            Frame::Refused { id, code } => {
                out.put_u8(REFUSED);
                out.put_u64(*id);
                out.put_u8(*code as u8);
            }
            Frame::Message { body } => {
                out.put_u8(MESSAGE);
                out.put_slice(body);
            }
            Frame::Ping => out.put_u8(PING),
            Frame::Pong => out.put_u8(PONG),
        }
        out.freeze()
    }

    /// One frame from `payload` (what followed the length).
    pub fn decode(mut payload: Bytes) -> Result<Frame, FrameError> {
        if payload.is_empty() {
            return Err(FrameError::Malformed);
        }
        let kind = payload.get_u8();
        let with_id = matches!(kind, REQUEST | RESPONSE | REFUSED);
        let id = if with_id {
            if payload.len() < 8 {
                return Err(FrameError::Malformed);
            }
            payload.get_u64()
        } else {
            0
        };
        Ok(match kind {
            REQUEST => Frame::Request { id, body: payload },
            RESPONSE => Frame::Response { id, body: payload },
            REFUSED => {
                let code = match payload.as_ref() {
                    [1] => RefuseCode::Busy,
                    [2] => RefuseCode::TooLarge,
                    _ => return Err(FrameError::Malformed),
                };
                Frame::Refused { id, code }
            }
            MESSAGE => Frame::Message { body: payload },
            PING if payload.is_empty() => Frame::Ping,
            PONG if payload.is_empty() => Frame::Pong,
            _ => return Err(FrameError::Malformed),
        })
    }
}

fn put_with_id(out: &mut BytesMut, kind: u8, id: u64, body: &[u8]) {
    out.put_u8(kind);
    out.put_u64(id);
    out.put_slice(body);
}

/// Reads one frame; returns it and its size on the wire. The length is
/// checked before anything is allocated, so a peer cannot make this node
/// reserve more than `max` bytes.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<(Frame, usize), FrameError> {
    let len = r.read_u32().await? as usize;
    if len > max {
        return Err(FrameError::TooLong { len, max });
    }
    let mut buf = BytesMut::zeroed(len);
    r.read_exact(&mut buf).await?;
    Ok((Frame::decode(buf.freeze())?, LEN_BYTES + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(f: Frame) {
        let wire = f.encode();
        let len = u32::from_be_bytes([wire[0], wire[1], wire[2], wire[3]]) as usize;
        assert_eq!(len, wire.len() - LEN_BYTES);
        assert_eq!(Frame::decode(wire.slice(LEN_BYTES..)).unwrap(), f);
    }

    #[test]
    fn every_kind_round_trips() {
        roundtrip(Frame::Request {
            id: 7,
            body: Bytes::from_static(b"ask"),
        });
        roundtrip(Frame::Response {
            id: u64::MAX,
            body: Bytes::new(),
        });
        roundtrip(Frame::Refused {
            id: 3,
            code: RefuseCode::Busy,
        });
        roundtrip(Frame::Refused {
            id: 3,
            code: RefuseCode::TooLarge,
        });
        roundtrip(Frame::Message {
            body: Bytes::from_static(b"typing"),
        });
        roundtrip(Frame::Ping);
        roundtrip(Frame::Pong);
    }

    #[test]
    fn malformed_payloads_are_errors() {
        for bad in [
            &b""[..],
            b"\x00",
            b"\x07",
            b"\x01\x00\x00",
            b"\x04x",
            b"\x06\x00\x00\x00\x00\x00\x00\x00\x01\x09",
        ] {
            assert!(
                matches!(
                    Frame::decode(Bytes::copy_from_slice(bad)),
                    Err(FrameError::Malformed)
                ),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_length_over_the_limit_is_refused_before_reading_it() {
        let wire = Frame::Message {
            body: Bytes::from(vec![0u8; 100]),
        }
        .encode();
        let mut r = &wire[..];
        assert!(matches!(
            read_frame(&mut r, 50).await,
            Err(FrameError::TooLong { len: 101, max: 50 })
        ));
        let mut r = &wire[..];
        let (f, n) = read_frame(&mut r, 101).await.unwrap();
        assert_eq!(n, wire.len());
        assert!(matches!(f, Frame::Message { .. }));
    }
}
