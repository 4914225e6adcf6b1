//! Ciphertext buffers for `stream`: records appended to a growable buffer,
//! consumed bytes dropped from the front, each freed when empty.

use std::io::{self, IoSlice};

use rustls::server::ServerConnectionData;
use rustls::unbuffered::{EncryptError, WriteTraffic};

/// Plaintext accepted per write: four full records. Bounds the ciphertext
/// held when the peer does not read.
pub(super) const MAX_WRITE: usize = 4 * 16 * 1024;
/// Room for a TLS record's framing and tag (TLS 1.2 AES-GCM: 5 + 8 + 16;
/// TLS 1.3: 5 + 1 + 16), and for a key update rustls may put in front.
pub(super) const RECORD_OVERHEAD: usize = 64;

pub(super) fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Encrypts up to `MAX_WRITE` bytes of `bufs` as records appended to `out`.
/// Several slices are gathered behind the space for their records first
/// (one allocation), so a `writev` of small frames makes one record, not one
/// per slice.
pub(super) fn encrypt(
    w: &mut WriteTraffic<'_, ServerConnectionData>,
    bufs: &[IoSlice<'_>],
    out: &mut Vec<u8>,
) -> io::Result<usize> {
    let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_WRITE);
    let room = total + RECORD_OVERHEAD * (total / (16 * 1024) + 2);
    let start = out.len();
    out.resize(start + room + total, 0);
    let (cipher, gathered) = out[start..].split_at_mut(room);
    let mut at = 0;
    for b in bufs {
        let n = b.len().min(total - at);
        gathered[at..at + n].copy_from_slice(&b[..n]);
        at += n;
    }
    let r = w.encrypt(gathered, cipher);
    match r {
        Ok(n) => {
            out.truncate(start + n);
            Ok(total)
        }
        // `room` covers every record's overhead, so this is not expected;
        // if it happens, retry with the size rustls asks for.
        Err(EncryptError::InsufficientSize(s)) => {
            let plain = gathered.to_vec();
            out.truncate(start);
            append_with(out, s.required_size, |o| match w.encrypt(&plain, o) {
                Ok(n) => Ok(Ok(n)),
                Err(EncryptError::InsufficientSize(s)) => Ok(Err(s.required_size)),
                Err(other) => Err(invalid(other.to_string())),
            })?;
            Ok(total)
        }
        Err(other) => {
            out.truncate(start);
            Err(invalid(other.to_string()))
        }
    }
}

/// Runs `f` on `guess` new bytes at the end of `out`; if `f` asks for more
/// (`Ok(Err(size))`), once more on that many. Keeps what `f` wrote.
pub(super) fn append_with(
    out: &mut Vec<u8>,
    guess: usize,
    mut f: impl FnMut(&mut [u8]) -> io::Result<Result<usize, usize>>,
) -> io::Result<()> {
    let start = out.len();
    out.resize(start + guess, 0);
    let mut r = f(&mut out[start..]);
    if let Ok(Err(need)) = r {
        out.resize(start + need, 0);
        r = f(&mut out[start..]);
    }
    match r {
        Ok(Ok(n)) => {
            out.truncate(start + n);
            Ok(())
        }
        Ok(Err(need)) => {
            out.truncate(start);
            Err(invalid(format!(
                "rustls wants {need} bytes to write a record"
            )))
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Drops the first `n` bytes of `buf`; frees it when nothing is left.
pub(super) fn consume_front(buf: &mut Vec<u8>, n: usize) {
    if n == 0 {
        return;
    }
    if n >= buf.len() {
        *buf = Vec::new();
    } else {
        buf.drain(..n);
    }
}
