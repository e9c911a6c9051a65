//! Batched socket writes for the RPC system.
//!
//! capnp-futures flushes after every message, so through a plain buffered writer each
//! call, return and finish message costs its own `write` syscall: under load that was
//! a quarter of a client's CPU time. Here the RPC system writes into a shared buffer
//! that always accepts at once (up to a bound), and a separate task on the same event
//! loop moves whatever has gathered to the socket in one `write`. Messages produced in
//! the same turn of the event loop, or while the socket was busy, leave together.
//!
//! Invariant: bytes reach the socket in the order they were written, none twice; once
//! a socket write fails, every later write and flush fails too. When the RPC system
//! ends (capnp-futures drops its writer without closing it, right after queueing a
//! last `Abort` message), what it wrote is still sent, for up to [`DRAIN_LIMIT`];
//! only [`Abandon::abandon`] lets unsent bytes go.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// The most bytes gathered before the RPC system has to wait for the socket: the
/// back-pressure a plain buffered writer gives, with room for many small messages.
const GATHER_LIMIT: usize = 1 << 20;

/// The largest buffer kept between writes (a rare large message's buffer is let go,
/// so an idle connection holds little memory).
const KEPT_CAPACITY: usize = 64 << 10;

/// How long the bytes left when the writer goes away may take to leave (a peer that
/// stopped reading cannot hold the socket open longer).
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Gathered {
    bytes: Vec<u8>,
    /// The sender task, waiting for bytes (or for the writer to go away).
    sender: Option<Waker>,
    /// The RPC system, waiting for room (or for the last bytes to leave, on close).
    writer: Option<Waker>,
    /// Why the socket stopped taking bytes, once it did.
    failed: Option<(io::ErrorKind, String)>,
    /// The writer was closed or dropped: send what is left (within `DRAIN_LIMIT`),
    /// then shut down.
    closed: bool,
    /// The connection was given up: what is left is let go and the socket released
    /// now.
    abandoned: bool,
    /// The sender holds taken bytes it has not yet written.
    sending: bool,
    /// The sender has ended (the socket is shut down or released).
    finished: bool,
}

impl Gathered {
    fn error(&self) -> Option<io::Error> {
        self.failed
            .as_ref()
            .map(|(kind, message)| io::Error::new(*kind, message.clone()))
    }

    fn wake_sender(&mut self) {
        if let Some(w) = self.sender.take() {
            w.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

/// The RPC system's end: an `AsyncWrite` whose writes gather in memory and whose flush
/// returns at once (the sender task sends what gathered as soon as the event loop
/// runs it). Closing or dropping it sends what is left and then shuts the socket's
/// write side down.
pub(crate) struct BatchWriter {
    gathered: Rc<RefCell<Gathered>>,
}

/// Gives a connection up without waiting for its unsent bytes (see
/// [`Abandon::abandon`]).
#[derive(Clone)]
pub(crate) struct Abandon {
    gathered: Rc<RefCell<Gathered>>,
}

impl Abandon {
    /// Lets the unsent bytes go and makes the sender release the socket now, even if
    /// the peer stopped reading.
    pub(crate) fn abandon(&self) {
        let mut g = self.gathered.borrow_mut();
        g.abandoned = true;
        g.wake_sender();
    }
}

/// Splits `socket` into the writer the RPC system uses, a handle that abandons the
/// connection, and the task that sends what the writer writes (spawn it on the same
/// `LocalSet`; it ends once the writer is closed or dropped and its bytes are sent or
/// `DRAIN_LIMIT` passed, once the connection is abandoned, or once the socket fails).
pub(crate) fn batch_writer<W>(
    socket: W,
) -> (BatchWriter, Abandon, impl std::future::Future<Output = ()>)
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let gathered = Rc::new(RefCell::new(Gathered::default()));
    let sender = send_gathered(gathered.clone(), socket);
    let abandon = Abandon {
        gathered: gathered.clone(),
    };
    (BatchWriter { gathered }, abandon, sender)
}

async fn send_gathered<W>(gathered: Rc<RefCell<Gathered>>, socket: W)
where
    W: tokio::io::AsyncWrite + Unpin,
{
    send_until_done(&gathered, socket).await;
    let mut g = gathered.borrow_mut();
    g.finished = true;
    g.sending = false;
    g.wake_writer();
}

async fn send_until_done<W>(gathered: &Rc<RefCell<Gathered>>, mut socket: W)
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut out = Vec::new();
    // Set once the writer is closed or gone: the last bytes must leave by then.
    let mut drain_by: Option<tokio::time::Instant> = None;
    loop {
        // Wait for bytes, then let the tasks woken meanwhile run before taking them:
        // their replies join this write instead of needing one of their own.
        let waiting = std::future::poll_fn(|cx| {
            let mut g = gathered.borrow_mut();
            if g.abandoned || g.closed || !g.bytes.is_empty() {
                Poll::Ready(())
            } else {
                g.sender = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        waiting.await;
        if !gathered.borrow().closed {
            tokio::task::yield_now().await;
        }
        let more = {
            let mut g = gathered.borrow_mut();
            if g.closed && drain_by.is_none() {
                drain_by = Some(tokio::time::Instant::now() + DRAIN_LIMIT);
            }
            if g.abandoned {
                None
            } else if !g.bytes.is_empty() {
                std::mem::swap(&mut out, &mut g.bytes);
                g.sending = true;
                // Room again for the RPC system.
                g.wake_writer();
                Some(true)
            } else if g.closed {
                Some(false)
            } else {
                // Woken with nothing to do (the bytes were taken already).
                continue;
            }
        };
        match more {
            None => return,
            Some(false) => {
                let at = drain_by.unwrap_or_else(tokio::time::Instant::now);
                tokio::select! {
                    _ = socket.shutdown() => {}
                    _ = tokio::time::sleep_until(at) => {}
                }
                return;
            }
            Some(true) => {}
        }
        let sent = {
            let write = socket.write_all(&out);
            tokio::pin!(write);
            loop {
                let deadline = async {
                    match drain_by {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                // Ready(true): abandoned; Ready(false): closed just now (the drain
                // limit starts).
                let given_up = std::future::poll_fn(|cx| {
                    let mut g = gathered.borrow_mut();
                    if g.abandoned {
                        Poll::Ready(true)
                    } else if g.closed && drain_by.is_none() {
                        Poll::Ready(false)
                    } else {
                        g.sender = Some(cx.waker().clone());
                        Poll::Pending
                    }
                });
                tokio::select! {
                    biased;
                    sent = &mut write => break sent,
                    abandoned = given_up => {
                        if abandoned {
                            return;
                        }
                        drain_by = Some(tokio::time::Instant::now() + DRAIN_LIMIT);
                    }
                    _ = deadline => return,
                }
            }
        };
        let mut g = gathered.borrow_mut();
        g.sending = false;
        if let Err(e) = sent {
            g.failed = Some((e.kind(), e.to_string()));
            g.bytes = Vec::new();
            return;
        }
        out.clear();
        if out.capacity() > KEPT_CAPACITY {
            out = Vec::new();
        }
    }
}

impl futures::io::AsyncWrite for BatchWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut g = self.gathered.borrow_mut();
        if let Some(e) = g.error() {
            return Poll::Ready(Err(e));
        }
        if g.closed || g.abandoned {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after the connection was closed",
            )));
        }
        // Over the limit, wait for the sender to take the bytes (a single larger
        // message is still taken whole into an empty buffer).
        if !g.bytes.is_empty() && g.bytes.len() + buf.len() > GATHER_LIMIT {
            g.writer = Some(cx.waker().clone());
            g.wake_sender();
            return Poll::Pending;
        }
        g.bytes.extend_from_slice(buf);
        g.wake_sender();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The sender sends what gathered as soon as it runs: flushing here would bring
        // back one syscall per message.
        match self.gathered.borrow().error() {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut g = self.gathered.borrow_mut();
        g.closed = true;
        if let Some(e) = g.error() {
            return Poll::Ready(Err(e));
        }
        if g.abandoned || g.finished {
            return Poll::Ready(Ok(()));
        }
        // Done once the sender has sent everything and shut the socket down (it wakes
        // this writer as it returns).
        g.writer = Some(cx.waker().clone());
        g.wake_sender();
        Poll::Pending
    }
}

impl Drop for BatchWriter {
    fn drop(&mut self) {
        let mut g = self.gathered.borrow_mut();
        g.closed = true;
        g.wake_sender();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::AsyncWriteExt as _;
    use tokio::io::AsyncReadExt;

    /// Runs `test` on a current-thread runtime inside a `LocalSet`, as the RPC does.
    fn on_local_set(test: impl std::future::Future<Output = ()>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, test);
    }

    /// A batch writer over `socket` with its sender already spawned.
    fn started(
        socket: tokio::io::DuplexStream,
    ) -> (BatchWriter, Abandon, tokio::task::JoinHandle<()>) {
        let (writer, abandon, sender) = batch_writer(socket);
        (writer, abandon, tokio::task::spawn_local(sender))
    }

    #[test]
    fn bytes_arrive_in_order_and_writes_in_one_turn_leave_together() {
        on_local_set(async {
            let (near, mut far) = tokio::io::duplex(1 << 16);
            let (mut writer, _abandon, sending) = started(near);
            for i in 0..100u8 {
                writer.write_all(&[i; 10]).await.unwrap();
                writer.flush().await.unwrap();
            }
            // Nothing ran the sender yet: all 100 messages wait in one buffer.
            assert_eq!(writer.gathered.borrow().bytes.len(), 1000);
            writer.close().await.unwrap();
            let mut got = Vec::new();
            far.read_to_end(&mut got).await.unwrap();
            sending.await.unwrap();
            let want: Vec<u8> = (0..100u8).flat_map(|i| [i; 10]).collect();
            assert_eq!(got, want);
        });
    }

    #[test]
    fn a_failed_socket_fails_later_writes() {
        on_local_set(async {
            let (near, far) = tokio::io::duplex(64);
            drop(far);
            let (mut writer, _abandon, sending) = started(near);
            writer.write_all(b"hello").await.unwrap();
            sending.await.unwrap();
            let e = writer.write_all(b"again").await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
            assert!(writer.flush().await.is_err());
        });
    }

    #[test]
    fn a_dropped_writer_still_sends_its_last_bytes() {
        on_local_set(async {
            let (near, mut far) = tokio::io::duplex(1 << 16);
            let (mut writer, _abandon, sending) = started(near);
            // As capnp-futures ends: a last message, then the writer is dropped
            // without a close.
            writer.write_all(b"abort: why").await.unwrap();
            drop(writer);
            sending.await.unwrap();
            let mut got = Vec::new();
            far.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"abort: why");
        });
    }

    #[test]
    fn a_peer_that_stopped_reading_cannot_hold_the_socket() {
        on_local_set(async {
            for abandon_it in [false, true] {
                // The peer never reads: the sender's write can never finish.
                let (near, _far) = tokio::io::duplex(16);
                let (mut writer, abandon, sending) = started(near);
                writer.write_all(&[1u8; 1024]).await.unwrap();
                // Let the sender take the bytes and block on the full socket.
                for _ in 0..1000 {
                    if writer.gathered.borrow().sending {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                assert!(writer.gathered.borrow().sending);
                drop(writer);
                if abandon_it {
                    // Abandoned: it ends within a few turns, no timer involved.
                    abandon.abandon();
                    for _ in 0..100 {
                        if sending.is_finished() {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                    assert!(sending.is_finished(), "an abandoned sender ends at once");
                }
                tokio::time::timeout(DRAIN_LIMIT * 10, sending)
                    .await
                    .expect("a dropped writer's sender ends within the drain limit")
                    .unwrap();
            }
        });
    }

    #[test]
    fn a_full_buffer_waits_for_the_socket_instead_of_growing() {
        on_local_set(async {
            let (near, mut far) = tokio::io::duplex(1 << 16);
            let (mut writer, _abandon, sending) = started(near);
            let chunk = vec![7u8; 1 << 16];
            let reader = tokio::task::spawn_local(async move {
                let mut got = 0usize;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = far.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return got;
                    }
                    got += n;
                }
            });
            for _ in 0..64 {
                writer.write_all(&chunk).await.unwrap();
                assert!(writer.gathered.borrow().bytes.len() <= GATHER_LIMIT);
            }
            writer.close().await.unwrap();
            sending.await.unwrap();
            assert_eq!(reader.await.unwrap(), 64 << 16);
        });
    }
}
