//! The WebSocket handshake of `/v1/ws`, and the upgraded socket split into the
//! halves a session uses.
//!
//! axum's `WebSocketUpgrade` hands over a socket that tungstenite both reads and
//! writes. A session here wants the write side for itself (a writer shard sends
//! on it directly, see [`super::writer`]), so the handshake is done here and
//! tungstenite only reads: what it would write (pong and close replies) comes back
//! through [`ReadSide`] into the outbox, so the socket keeps exactly one writer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::ApiError;
use super::writer::{frame_len, is_close_frame};
use crate::fanout::Outbox;

/// A validated upgrade request: the key to answer and the pending upgrade.
pub struct Handshake {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl Handshake {
    /// Checks an HTTP/1.1 upgrade request (RFC 6455, 4.2.1).
    pub fn check(request: &mut Request) -> Result<Self, ApiError> {
        let bad = |message: &str| ApiError::new(StatusCode::BAD_REQUEST, "bad_upgrade", message.to_string());
        if request.method() != Method::GET {
            return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "bad_upgrade", "a WebSocket upgrade is a GET"));
        }
        let headers = request.headers();
        if !header_has_token(headers, header::CONNECTION, "upgrade") {
            return Err(bad("Connection header did not include 'upgrade'"));
        }
        if !header_has_token(headers, header::UPGRADE, "websocket") {
            return Err(bad("`Upgrade` header did not include 'websocket'"));
        }
        if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
            return Err(bad("`Sec-WebSocket-Version` header did not include '13'"));
        }
        let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or_else(|| bad("`Sec-WebSocket-Key` header missing"))?;
        let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|_| bad("bad key"))?;
        let on_upgrade = request.extensions_mut().remove::<OnUpgrade>().ok_or_else(|| {
            ApiError::new(StatusCode::UPGRADE_REQUIRED, "bad_upgrade", "this connection cannot be upgraded")
        })?;
        Ok(Self { accept, on_upgrade })
    }

    /// The `101 Switching Protocols` answer, and the upgrade it completes.
    pub fn accept(self, protocol: Option<&'static str>) -> (Response, OnUpgrade) {
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        if let Some(protocol) = protocol {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
        }
        (response, self.on_upgrade)
    }
}

/// The read half a session gives tungstenite.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;

/// The write half of an upgraded socket.
pub enum WriteSide {
    /// Plain TCP: written directly by a writer shard.
    Direct(OwnedWriteHalf),
    /// Anything else (TLS): written by the session's task.
    Stream(WriteHalf<TokioIo<Upgraded>>),
}

/// Splits an upgraded connection. A plain TCP socket is taken back from hyper
/// whole (with any bytes hyper read past the request), so its write half can be
/// written without a task; others are split around a lock.
pub fn split(upgraded: Upgraded) -> (BoxRead, WriteSide) {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let (read, write) = parts.io.into_inner().into_split();
            let read: BoxRead = if parts.read_buf.is_empty() {
                Box::new(read)
            } else {
                Box::new(io::Cursor::new(parts.read_buf).chain(read))
            };
            (read, WriteSide::Direct(write))
        }
        Err(upgraded) => {
            let (read, write) = tokio::io::split(TokioIo::new(upgraded));
            (Box::new(read), WriteSide::Stream(write))
        }
    }
}

/// The socket as tungstenite sees it: reads come from the socket; writes (its
/// automatic pong replies) are queued in the outbox as ready frames, behind the
/// data already queued, one item per frame. Its reply to a client's close is
/// dropped wherever it sits in a write: the session sends its own close frame
/// when the reader ends, and a client must see only one.
///
/// Reads pass through a [`FrameScan`], which fails the read when a message
/// comes in too many frames ([`TOO_MANY_FRAGMENTS`]) or a text message stops
/// being UTF-8 ([`INVALID_UTF8`]), as soon as the bytes that show it arrive.
pub struct ReadSide {
    read: BoxRead,
    outbox: Arc<Outbox>,
    scan: FrameScan,
    /// A failure found in the middle of a read: the bytes before it went to
    /// tungstenite, the failure is the next read.
    failed: Option<&'static str>,
}

impl ReadSide {
    /// `max_fragments`: frames one message may arrive in (more: the read
    /// fails with [`TOO_MANY_FRAGMENTS`], which the session answers with 1009).
    pub fn new(read: BoxRead, outbox: Arc<Outbox>, max_fragments: u32) -> Self {
        Self { read, outbox, scan: FrameScan::new(max_fragments), failed: None }
    }
}

impl AsyncRead for ReadSide {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(failure) = self.failed.take() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, failure)));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.read).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && let Err(Stop { at, failure }) = self.scan.scan(&buf.filled()[before..])
        {
            if at == 0 {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, failure)));
            }
            // What came before (whole messages, a frame's header) is read as
            // usual, so that the client's earlier messages are served and a
            // header's own fault (reserved bits, size) is what is reported.
            buf.set_filled(before + at);
            self.failed = Some(failure);
        }
        polled
    }
}

/// The error text of a read that stopped a message in too many fragments.
pub const TOO_MANY_FRAGMENTS: &str = "a message in too many fragments";

/// The error text of a read that stopped a text message that is not UTF-8.
pub const INVALID_UTF8: &str = "invalid UTF-8 in a text message";

/// Where a scan stopped (bytes of the read before it are fine), and why.
#[derive(Debug, PartialEq, Eq)]
struct Stop {
    at: usize,
    failure: &'static str,
}

/// Follows the client's frame headers through the byte stream:
/// - it counts the frames of the message being assembled: tungstenite caps a
///   message's size, not the number of frames it comes in, and 100,000
///   one-byte continuation frames would otherwise be taken one by one for as
///   long as they come. Control frames (which may come between fragments) do
///   not count;
/// - it checks a text message's UTF-8 as its payload arrives, so that a
///   client is failed (1007) at the first byte that cannot be UTF-8 (RFC 6455,
///   8.1), not once the whole frame is in, which is when tungstenite checks it.
///   tungstenite checks it again, and alone judges frames this scan leaves
///   alone: those with reserved bits set or unmasked, which it fails with 1002.
#[derive(Debug)]
struct FrameScan {
    max: u32,
    /// Frames of the current message so far.
    frames: u32,
    /// Payload bytes of the current frame still to pass.
    skip: u64,
    /// A header not yet whole (at most 14 bytes: 2, 8 of length, 4 of mask).
    header: [u8; 14],
    header_len: usize,
    /// The message being assembled is text.
    text: bool,
    /// The current frame's payload is text to check, with this mask, the
    /// first payload byte being at this offset of it.
    check: Option<([u8; 4], u64)>,
    utf8: Utf8Check,
}

impl FrameScan {
    fn new(max: u32) -> Self {
        Self {
            max: max.max(1),
            frames: 0,
            skip: 0,
            header: [0; 14],
            header_len: 0,
            text: false,
            check: None,
            utf8: Utf8Check::default(),
        }
    }

    /// Takes the next bytes read.
    fn scan(&mut self, read: &[u8]) -> Result<(), Stop> {
        let mut bytes = read;
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len() as u64) as usize;
                if let Some((mask, offset)) = &mut self.check {
                    if !self.utf8.take(&bytes[..n], *mask, *offset) {
                        return Err(Stop { at: read.len() - bytes.len(), failure: INVALID_UTF8 });
                    }
                    *offset += n as u64;
                }
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let take = (self.header.len() - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
            let have = self.header_len + take;
            let Some((header_len, payload)) = Self::parse(&self.header[..have]) else {
                self.header_len = have;
                bytes = &bytes[take..];
                continue;
            };
            // The header was `header_len` of the `have` bytes: the rest is payload.
            let used = header_len - self.header_len;
            bytes = &bytes[used..];
            self.header_len = 0;
            self.skip = payload;
            let (fin, reserved, opcode) = (self.header[0] & 0x80 != 0, self.header[0] & 0x70, self.header[0] & 0x0f);
            let masked = self.header[1] & 0x80 != 0;
            self.check = None;
            if opcode < 8 {
                self.frames = if opcode == 0 { self.frames.saturating_add(1) } else { 1 };
                if self.frames > self.max {
                    return Err(Stop { at: 0, failure: TOO_MANY_FRAGMENTS });
                }
                if opcode != 0 {
                    self.text = opcode == 1;
                    self.utf8 = Utf8Check::default();
                }
                if self.text && reserved == 0 && masked {
                    let mask = self.header[header_len - 4..header_len].try_into().expect("four bytes");
                    self.check = Some((mask, 0));
                }
                if fin {
                    // A continuation after this is a protocol error, tungstenite's to report.
                    self.frames = 0;
                    self.text = false;
                }
            }
        }
        Ok(())
    }

    /// (header length, payload length) once the header is whole.
    fn parse(header: &[u8]) -> Option<(usize, u64)> {
        let second = *header.get(1)?;
        let mask = if second & 0x80 != 0 { 4 } else { 0 };
        let (len, extra) = match second & 0x7f {
            126 => (u64::from(u16::from_be_bytes(header.get(2..4)?.try_into().ok()?)), 2),
            127 => (u64::from_be_bytes(header.get(2..10)?.try_into().ok()?), 8),
            n => (u64::from(n), 0),
        };
        let header_len = 2 + extra + mask;
        (header.len() >= header_len).then_some((header_len, len))
    }
}

/// UTF-8 checked piece by piece, a character split anywhere between pieces.
/// (A message that ends in the middle of a character is tungstenite's to
/// find: it is whole by then, so there is nothing to find sooner.)
#[derive(Debug, Default)]
struct Utf8Check {
    /// The start of a character whose other bytes have not come yet.
    partial: [u8; 4],
    partial_len: usize,
}

impl Utf8Check {
    /// Takes payload bytes masked with `mask`, the first at `offset` of the
    /// frame's payload; false once the text cannot be UTF-8.
    fn take(&mut self, masked: &[u8], mask: [u8; 4], offset: u64) -> bool {
        let mut chunk = [0u8; 256];
        let mut at = offset;
        for piece in masked.chunks(chunk.len()) {
            let plain = &mut chunk[..piece.len()];
            for (i, (out, byte)) in plain.iter_mut().zip(piece).enumerate() {
                *out = byte ^ mask[((at + i as u64) % 4) as usize];
            }
            at += piece.len() as u64;
            if !self.feed(plain) {
                return false;
            }
        }
        true
    }

    /// Takes plain bytes; false once the text cannot be UTF-8.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        if self.partial_len > 0 {
            // Complete the pending character first (at most 3 more bytes).
            let want = match self.partial[0] {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                _ => 4,
            };
            let take = (want - self.partial_len).min(bytes.len());
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&bytes[..take]);
            self.partial_len += take;
            bytes = &bytes[take..];
            match std::str::from_utf8(&self.partial[..self.partial_len]) {
                Ok(_) => self.partial_len = 0,
                // Still a valid start of a character: wait for the rest.
                Err(error) if error.error_len().is_none() => return true,
                Err(_) => return false,
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => true,
            Err(error) if error.error_len().is_none() => {
                let rest = &bytes[error.valid_up_to()..];
                self.partial[..rest.len()].copy_from_slice(rest);
                self.partial_len = rest.len();
                true
            }
            Err(_) => false,
        }
    }
}

impl AsyncWrite for ReadSide {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // tungstenite hands over whole frames (a write here always takes all).
        let mut rest = buf;
        while !rest.is_empty() {
            let len = frame_len(rest).map_or(rest.len(), |len| len.min(rest.len()));
            let (frame, tail) = rest.split_at(len);
            if !is_close_frame(frame) {
                self.outbox.push_raw(Bytes::copy_from_slice(frame));
            }
            rest = tail;
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Engine;
    use crate::fanout::{Fanout, Item, OutboxConfig};
    use crate::model::Instruments;
    use tokio::io::AsyncWriteExt;

    /// A masked client frame header: FIN, opcode and payload length.
    fn header(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut h = vec![if fin { 0x80 } else { 0 } | opcode];
        match len {
            n if n < 126 => h.push(0x80 | n as u8),
            n if n < 65536 => {
                h.push(0x80 | 126);
                h.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                h.push(0x80 | 127);
                h.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    #[test]
    fn fragments_are_counted_per_message_through_any_split() {
        // Text start, three continuations (a ping between), FIN: 5 frames.
        let mut stream = Vec::new();
        stream.extend(header(false, 1, 3));
        stream.extend_from_slice(b"abc");
        for _ in 0..3 {
            stream.extend(header(false, 0, 70_000));
            stream.extend(std::iter::repeat_n(b'x', 70_000));
            stream.extend(header(true, 9, 0)); // a ping: not a fragment
        }
        stream.extend(header(true, 0, 1));
        stream.push(b'z');
        stream.extend(header(true, 2, 200)); // a whole binary message: 1 frame
        stream.extend(std::iter::repeat_n(b'y', 200));
        for limit in [5, 4] {
            for split in [1, 7, 13, 4096, stream.len()] {
                let mut counter = FrameScan::new(limit);
                let ok = stream.chunks(split).all(|chunk| counter.scan(chunk).is_ok());
                assert_eq!(ok, limit >= 5, "limit {limit}, read {split} bytes at a time");
            }
        }
    }

    /// A client frame masked with a key that changes every byte.
    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = header(first & 0x80 != 0, first & 0x0f, payload.len());
        frame[0] = first;
        let at = frame.len() - 4;
        frame[at..].copy_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    /// Where a scan of `stream`, read `split` bytes at a time, stops (offset
    /// in the stream), if it does.
    fn stops_at(stream: &[u8], split: usize) -> Option<(usize, &'static str)> {
        let mut scan = FrameScan::new(1024);
        let mut read = 0;
        for chunk in stream.chunks(split) {
            if let Err(Stop { at, failure }) = scan.scan(chunk) {
                return Some((read + at, failure));
            }
            read += chunk.len();
        }
        None
    }

    #[test]
    fn text_is_checked_for_utf8_as_it_arrives_through_any_split() {
        // "κόσμε" and a four-byte character, split inside characters across
        // three fragments with a ping between; then a binary message that is no text.
        let text = "κόσμε 𝄞 édité".as_bytes();
        let mut valid = masked(0x01, &text[..3]);
        valid.extend(masked(0x89, b"ping"));
        valid.extend(masked(0x00, &text[3..14]));
        valid.extend(masked(0x80, &text[14..]));
        valid.extend(masked(0x82, &[0xff, 0xfe, 0xc0]));
        for split in [1, 2, 3, 5, 64, valid.len()] {
            assert_eq!(stops_at(&valid, split), None, "valid, read {split} bytes at a time");
        }

        // U+110000 encoded as UTF-8 would (F4 90 80 80) in the second fragment:
        // stopped at its second byte, not when the frame or the message ends.
        let first = masked(0x01, "κόσμε".as_bytes());
        let second = masked(0x00, &[b'a', 0xf4, 0x90, 0x80, 0x80, b'b']);
        let mut invalid = first.clone();
        invalid.extend(&second);
        invalid.extend(masked(0x80, b"edited"));
        let payload_start = first.len() + 6;
        assert_eq!(stops_at(&invalid, invalid.len()), Some((payload_start, INVALID_UTF8)), "one read");
        assert_eq!(stops_at(&invalid, 1), Some((payload_start + 2, INVALID_UTF8)), "byte by byte");
        // The same in one frame, read in pieces: stopped before the frame is whole.
        let one_frame = masked(0x81, &[b'a', 0xf4, 0x90, 0x80, 0x80, b'b']);
        assert_eq!(stops_at(&one_frame[..one_frame.len() - 2], 1), Some((6 + 2, INVALID_UTF8)));

        // Frames tungstenite fails for other reasons are left to it (1002):
        // reserved bits set, or a continuation with nothing to continue.
        let bad = [0xed, 0xa0, 0x80];
        assert_eq!(stops_at(&masked(0x91, &bad), 1), None, "RSV1");
        let mut stray = masked(0x81, b"done");
        stray.extend(masked(0x80, &bad));
        assert_eq!(stops_at(&stray, 1), None, "continuation after the end");
    }

    /// The bytes before the payload that holds an invalid character reach
    /// tungstenite (earlier messages are served); the next read is the failure.
    #[tokio::test]
    async fn read_side_hands_over_what_came_before_a_failure() {
        use tokio::io::AsyncReadExt;
        let instruments = Instruments::new();
        let engine = Engine::new(&instruments, 10);
        let fanout = Fanout::new(Arc::new(instruments), engine.reader(), OutboxConfig::default());
        let mut stream = masked(0x81, b"fine");
        let good = stream.len();
        stream.extend(masked(0x81, &[b'x', 0xc0, 0xaf]));
        let reader = Box::new(io::Cursor::new(stream));
        let mut side = ReadSide::new(reader, fanout.outbox(crate::codec::Format::Json), 1024);
        let mut buf = vec![0u8; 1024];
        assert_eq!(side.read(&mut buf).await.unwrap(), good + 6, "the good message and the next one's header");
        let error = side.read(&mut buf).await.unwrap_err();
        assert_eq!(error.to_string(), INVALID_UTF8);
    }

    /// tungstenite may hand over its pong and its close reply in one write: the
    /// pong goes out, the close reply never does (the session sends its own).
    #[tokio::test]
    async fn read_side_queues_pongs_and_drops_close_replies_wherever_they_sit() {
        let instruments = Instruments::new();
        let engine = Engine::new(&instruments, 10);
        let fanout = Fanout::new(Arc::new(instruments), engine.reader(), OutboxConfig::default());
        let outbox = fanout.outbox(crate::codec::Format::Json);
        let mut side = ReadSide::new(Box::new(tokio::io::empty()), outbox.clone(), 1024);

        let pong = [0x8a, 2, b'h', b'i'];
        let mut close = Vec::new();
        super::super::writer::close_frame(&mut close, 1000, "");
        let mut write = pong.to_vec();
        write.extend_from_slice(&close);
        write.extend_from_slice(&pong);
        side.write_all(&write).await.unwrap();
        side.write_all(&close).await.unwrap();

        let mut items = Vec::new();
        fanout.drain(&outbox, &mut items);
        let raw: Vec<&[u8]> = items
            .iter()
            .map(|item| match item {
                Item::Raw(bytes) => &bytes[..],
                _ => panic!("only raw frames are queued"),
            })
            .collect();
        assert_eq!(raw, vec![&pong[..], &pong[..]]);
    }
}
