//! Writing WebSocket frames: one connection's write side, and the writer shards
//! that write many connections in one loop.
//!
//! Per frame, the costly part of a fan-out is everything around the `send`: waking
//! the connection's task, polling its futures, going through a general-purpose
//! WebSocket sink. A shard instead takes every connection the engine touched,
//! drains each outbox, frames it into one warm scratch buffer and makes one
//! non-blocking `send` per connection. Only a connection whose socket cannot take
//! it all (a slow reader) falls back to its own task, which waits for the socket
//! to drain and hands the connection back to its shard when it has caught up.
//! Connections whose socket is not a plain TCP stream (TLS) are written by their
//! own task throughout ([`Connection::write_out`]).
//!
//! Server frames are never masked (RFC 6455, 5.1), so a frame is a 2–10 byte
//! header and the payload the fan-out already built.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::codec::Format;
use crate::fanout::{Fanout, Frame, Item, Outbox, frames};
use crate::latency::Transport;

const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;

/// Connections a shard writes before it lets other tasks run.
const SHARD_BUDGET: usize = 64;

/// Appends a final (unfragmented) frame header for a payload of `len` bytes.
pub fn frame_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// A close frame with `code` and `reason` (reasons here are short ASCII).
pub fn close_frame(out: &mut Vec<u8>, code: u16, reason: &str) {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    frame_header(out, OP_CLOSE, 2 + reason.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
}

/// A whole (unfragmented) text or binary frame carrying `payload`.
pub fn data_frame(binary: bool, payload: &[u8]) -> bytes::Bytes {
    let mut out = Vec::with_capacity(payload.len() + 10);
    frame_header(&mut out, if binary { OP_BINARY } else { OP_TEXT }, payload.len());
    out.extend_from_slice(payload);
    bytes::Bytes::from(out)
}

/// An empty ping frame.
pub fn ping_frame() -> bytes::Bytes {
    bytes::Bytes::from_static(&[0x80 | OP_PING, 0])
}

/// Whether `frame` is a close frame.
pub fn is_close_frame(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 0x0f == OP_CLOSE)
}

/// Payload length of the unmasked frame starting `bytes`, once its header is in.
pub fn payload_len(bytes: &[u8]) -> Option<usize> {
    match *bytes.get(1)? & 0x7f {
        126 => Some(usize::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?))),
        127 => usize::try_from(u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?)).ok(),
        n => Some(usize::from(n)),
    }
}

/// Whole length (header and payload) of the unmasked frame starting `bytes`,
/// once its header is in.
pub fn frame_len(bytes: &[u8]) -> Option<usize> {
    let header = match *bytes.get(1)? & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    payload_len(bytes)?.checked_add(header)
}

/// Appends drained items to `out` as WebSocket frames: text frames on a JSON
/// connection, binary on a protobuf one.
pub fn encode_frames(items: &[Item], format: Format, max_frame_bytes: usize, out: &mut Vec<u8>) {
    let opcode = match format {
        Format::Json => OP_TEXT,
        Format::Proto => OP_BINARY,
    };
    for frame in frames(items, format, max_frame_bytes) {
        if let Frame::Raw(bytes) = frame {
            out.extend_from_slice(bytes);
            continue;
        }
        let len = frame.payload_len(format);
        out.reserve(len + 10);
        frame_header(out, opcode, len);
        frame.write_payload(format, out);
    }
}

/// Drains `outbox` and appends what it held to `out` as frames, followed by a
/// close frame when a close was requested (queued data is dropped first when the
/// close is for a slow consumer: it is what the client could not take). Returns
/// the requested close.
pub fn fill(
    fanout: &Fanout,
    outbox: &Outbox,
    items: &mut Vec<Item>,
    max_frame_bytes: usize,
    out: &mut Vec<u8>,
) -> Option<(u16, &'static str)> {
    let close = fanout.drain(outbox, items);
    if close.is_none_or(|(code, _)| code != crate::codec::close::SLOW_CONSUMER) {
        let start = out.len();
        encode_frames(items, outbox.format(), max_frame_bytes, out);
        super::record_write(items, Transport::Ws, out.len() - start);
    }
    items.clear();
    if let Some((code, reason)) = close {
        close_frame(out, code, reason);
    }
    close
}

/// Where a connection's writing stands, as its task sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStatus {
    /// Everything queued has been written.
    Flowing,
    /// The socket is full: the task waits for it to drain.
    Backlogged,
    /// The close frame is written, or the socket failed: the session ends.
    Closed,
}

#[derive(Debug, Default)]
struct WriteState {
    /// Bytes the socket has not taken yet (only while backlogged).
    pending: Vec<u8>,
    backlogged: bool,
    /// A close frame is among what was written or is pending.
    close_queued: bool,
    /// The socket failed, or the session ended: nothing more is written.
    done: bool,
}

/// One connection's write side.
pub struct Connection {
    outbox: Arc<Outbox>,
    /// The plain TCP socket a shard writes without the task (absent for TLS).
    direct: Option<OwnedWriteHalf>,
    state: Mutex<WriteState>,
}

impl Connection {
    pub fn new(outbox: Arc<Outbox>, direct: Option<OwnedWriteHalf>) -> Arc<Self> {
        Arc::new(Self { outbox, direct, state: Mutex::new(WriteState::default()) })
    }

    pub fn status(&self) -> WriteStatus {
        let state = self.state.lock();
        if state.done || (state.close_queued && !state.backlogged) {
            WriteStatus::Closed
        } else if state.backlogged {
            WriteStatus::Backlogged
        } else {
            WriteStatus::Flowing
        }
    }

    /// The session is over: nothing more may be written.
    pub fn finish(&self) {
        self.state.lock().done = true;
    }

    /// A shard's turn at a direct connection: drain, frame into `out`, send.
    fn service(&self, fanout: &Fanout, max_frame_bytes: usize, scratch: &mut Scratch) {
        let Scratch { items, out } = scratch;
        let Some(socket) = &self.direct else { return };
        let mut state = self.state.lock();
        if state.done || state.close_queued {
            return;
        }
        if state.backlogged {
            drop(state);
            self.outbox.wake_task();
            return;
        }
        out.clear();
        let close = fill(fanout, &self.outbox, items, max_frame_bytes, out);
        state.close_queued = close.is_some();
        let written = send_now(socket, out);
        let wake_task = match written {
            Ok(n) if n == out.len() => close.is_some(),
            Ok(n) => {
                metrics::counter!("tickwire_ws_backlogged_total").increment(1);
                state.pending.extend_from_slice(&out[n..]);
                state.backlogged = true;
                true
            }
            Err(_) => {
                state.done = true;
                true
            }
        };
        drop(state);
        if wake_task {
            self.outbox.wake_task();
        }
    }

    /// The task's turn at a backlogged direct connection once its socket is
    /// writable: send what is pending, then whatever queued meanwhile; when all
    /// of it went out, the connection is back in its shard's hands.
    pub fn flush_backlog(&self, fanout: &Fanout, max_frame_bytes: usize) -> WriteStatus {
        let Some(socket) = &self.direct else { return WriteStatus::Closed };
        let mut state = self.state.lock();
        if state.done {
            return WriteStatus::Closed;
        }
        let mut items = Vec::new();
        loop {
            match send_now(socket, &state.pending) {
                Ok(n) if n == state.pending.len() => state.pending.clear(),
                Ok(n) => {
                    state.pending.drain(..n);
                    return WriteStatus::Backlogged;
                }
                Err(_) => {
                    state.done = true;
                    return WriteStatus::Closed;
                }
            }
            if state.close_queued {
                state.backlogged = false;
                return WriteStatus::Closed;
            }
            let mut pending = std::mem::take(&mut state.pending);
            let close = fill(fanout, &self.outbox, &mut items, max_frame_bytes, &mut pending);
            state.pending = pending;
            state.close_queued = close.is_some();
            if state.pending.is_empty() {
                state.backlogged = false;
                state.pending = Vec::new(); // hold no buffer while flowing
                return WriteStatus::Flowing;
            }
        }
    }

    /// Waits until the direct socket can take more.
    pub async fn writable(&self) -> io::Result<()> {
        match &self.direct {
            Some(socket) => socket.writable().await,
            None => std::future::pending().await,
        }
    }

    /// The task's whole write for a connection without a direct socket (TLS):
    /// drain, frame, and write it all to `sink`.
    pub async fn write_out<W: AsyncWrite + Unpin>(
        &self,
        fanout: &Fanout,
        max_frame_bytes: usize,
        sink: &mut W,
        scratch: &mut Scratch,
    ) -> WriteStatus {
        scratch.out.clear();
        let close = fill(fanout, &self.outbox, &mut scratch.items, max_frame_bytes, &mut scratch.out);
        if close.is_some() {
            self.state.lock().close_queued = true;
        }
        let written = async {
            sink.write_all(&scratch.out).await?;
            sink.flush().await
        };
        if written.await.is_err() {
            self.finish();
            return WriteStatus::Closed;
        }
        if close.is_some() { WriteStatus::Closed } else { WriteStatus::Flowing }
    }
}

/// Buffers reused from one write to the next: the drained items (swapped with
/// the outbox's queue, so neither side allocates again) and the framed bytes.
#[derive(Default)]
pub struct Scratch {
    items: Vec<Item>,
    out: Vec<u8>,
}

/// Sends as much of `bytes` as the socket takes now.
fn send_now(socket: &OwnedWriteHalf, bytes: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < bytes.len() {
        match socket.try_write(&bytes[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// Connections with something to write, and the shard task's wake-up.
#[derive(Default)]
struct Shard {
    dirty: Mutex<Vec<Arc<Connection>>>,
    wake: Notify,
}

impl Shard {
    fn push(&self, connection: Arc<Connection>) {
        let mut dirty = self.dirty.lock();
        let first = dirty.is_empty();
        dirty.push(connection);
        drop(dirty);
        if first {
            self.wake.notify_one();
        }
    }
}

/// The writer shards: one task per core, each writing the direct connections
/// assigned to it.
pub struct WriterShards {
    shards: Box<[Arc<Shard>]>,
    next: AtomicUsize,
}

impl WriterShards {
    /// Starts `count` shard tasks; they end when `sessions` is closed and empty.
    pub fn start(count: usize, fanout: &Arc<Fanout>, max_frame_bytes: usize, sessions: &TaskTracker) -> Self {
        let shards: Box<[Arc<Shard>]> = (0..count.max(1)).map(|_| Arc::new(Shard::default())).collect();
        for shard in &shards {
            tokio::spawn(run_shard(shard.clone(), fanout.clone(), max_frame_bytes, sessions.clone()));
        }
        Self { shards, next: AtomicUsize::new(0) }
    }

    /// Hands a direct connection's writing to a shard (round robin).
    pub fn attach(&self, connection: &Arc<Connection>) {
        let shard = self.shards[self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len()].clone();
        let weak = Arc::downgrade(connection);
        connection.outbox.set_notifier(Box::new(move || {
            if let Some(connection) = weak.upgrade() {
                shard.push(connection);
            }
        }));
    }
}

async fn run_shard(shard: Arc<Shard>, fanout: Arc<Fanout>, max_frame_bytes: usize, sessions: TaskTracker) {
    let mut batch: Vec<Arc<Connection>> = Vec::new();
    let mut scratch = Scratch { items: Vec::new(), out: Vec::with_capacity(64 << 10) };
    loop {
        tokio::select! {
            () = shard.wake.notified() => {}
            () = sessions.wait() => return,
        }
        loop {
            std::mem::swap(&mut *shard.dirty.lock(), &mut batch);
            if batch.is_empty() {
                break;
            }
            for (i, connection) in batch.drain(..).enumerate() {
                connection.service(&fanout, max_frame_bytes, &mut scratch);
                if i % SHARD_BUDGET == SHARD_BUDGET - 1 {
                    tokio::task::yield_now().await;
                }
            }
            if scratch.out.capacity() > 1 << 20 {
                scratch.out = Vec::with_capacity(64 << 10); // one huge frame need not stay resident
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_shortest_length_form() {
        for (len, expected) in [
            (0, vec![0x81, 0]),
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (65_535, vec![0x81, 126, 0xff, 0xff]),
            (65_536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let mut out = Vec::new();
            frame_header(&mut out, OP_TEXT, len);
            assert_eq!(out, expected, "len {len}");
        }
    }

    #[test]
    fn close_frames_carry_code_and_reason() {
        let mut out = Vec::new();
        close_frame(&mut out, 4008, "slow consumer");
        assert_eq!(&out[..4], &[0x88, 15, 0x0f, 0xa8]);
        assert_eq!(&out[4..], b"slow consumer");
        assert!(is_close_frame(&out));
        assert!(!is_close_frame(&ping_frame()));
    }

    #[test]
    fn frame_lengths_read_every_header_form() {
        for len in [0, 1, 125, 126, 65_535, 65_536] {
            let mut out = Vec::new();
            frame_header(&mut out, OP_BINARY, len);
            let header = out.len();
            assert_eq!(payload_len(&out), Some(len));
            assert_eq!(frame_len(&out), Some(header + len));
            assert_eq!(frame_len(&out[..header - 1]), None, "header not yet in");
        }
        assert_eq!(frame_len(&[0x81]), None);
    }
}
