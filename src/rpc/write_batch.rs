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
//! a socket write fails, every later write and flush fails too.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use tokio::io::AsyncWriteExt;

/// The most bytes gathered before the RPC system has to wait for the socket: the
/// back-pressure a plain buffered writer gives, with room for many small messages.
const GATHER_LIMIT: usize = 1 << 20;

#[derive(Default)]
struct Gathered {
    bytes: Vec<u8>,
    /// The sender task, waiting for bytes (or for the writer to go away).
    sender: Option<Waker>,
    /// The RPC system, waiting for room (or for the last bytes to leave, on close).
    writer: Option<Waker>,
    /// Why the socket stopped taking bytes, once it did.
    failed: Option<(io::ErrorKind, String)>,
    /// The writer was closed: send what is left, then shut down.
    closed: bool,
    /// The writer is gone (the RPC system ended or was dropped): nothing more will be
    /// waited for, so what is left is let go and the socket released now.
    dropped: bool,
    /// The sender holds taken bytes it has not yet written.
    sending: bool,
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
/// runs it). Closing it sends what is left and shuts the socket's write side down;
/// dropping it releases the socket at once (a peer that stopped reading cannot keep
/// it open).
pub(crate) struct BatchWriter {
    gathered: Rc<RefCell<Gathered>>,
}

/// Splits `socket` into the writer the RPC system uses and the task that sends what it
/// writes (spawn it on the same `LocalSet`; it ends once the writer is closed and its
/// bytes are sent, once the writer is dropped, or once the socket fails).
pub(crate) fn batch_writer<W>(socket: W) -> (BatchWriter, impl std::future::Future<Output = ()>)
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let gathered = Rc::new(RefCell::new(Gathered::default()));
    let sender = send_gathered(gathered.clone(), socket);
    (BatchWriter { gathered }, sender)
}

async fn send_gathered<W>(gathered: Rc<RefCell<Gathered>>, mut socket: W)
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut out = Vec::new();
    loop {
        // Wait for bytes, then let the tasks woken meanwhile run before taking them:
        // their replies join this write instead of needing one of their own.
        let waiting = std::future::poll_fn(|cx| {
            let mut g = gathered.borrow_mut();
            if g.dropped || g.closed || !g.bytes.is_empty() {
                Poll::Ready(())
            } else {
                g.sender = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        waiting.await;
        tokio::task::yield_now().await;
        let more = std::future::poll_fn(|cx| {
            let mut g = gathered.borrow_mut();
            if g.dropped {
                Poll::Ready(None)
            } else if !g.bytes.is_empty() {
                std::mem::swap(&mut out, &mut g.bytes);
                g.sending = true;
                // Room again for the RPC system.
                g.wake_writer();
                Poll::Ready(Some(true))
            } else if g.closed {
                Poll::Ready(Some(false))
            } else {
                g.sender = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        match more {
            None => return,
            Some(false) => {
                let _ = socket.shutdown().await;
                gathered.borrow_mut().wake_writer();
                return;
            }
            Some(true) => {}
        }
        let sent = {
            let write = socket.write_all(&out);
            tokio::pin!(write);
            let dropped = std::future::poll_fn(|cx| {
                let mut g = gathered.borrow_mut();
                if g.dropped {
                    Poll::Ready(())
                } else {
                    g.sender = Some(cx.waker().clone());
                    Poll::Pending
                }
            });
            tokio::select! {
                biased;
                sent = &mut write => sent,
                _ = dropped => return,
            }
        };
        let mut g = gathered.borrow_mut();
        g.sending = false;
        if let Err(e) = sent {
            g.failed = Some((e.kind(), e.to_string()));
            g.bytes = Vec::new();
            g.wake_writer();
            return;
        }
        // Keep the larger buffer for the next round; a rare huge message is let go.
        out.clear();
        if out.capacity() > GATHER_LIMIT {
            out = Vec::new();
        }
        if g.closed && g.bytes.is_empty() {
            g.wake_writer();
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
        if g.closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after close",
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
        if g.bytes.is_empty() && !g.sending {
            g.wake_sender();
            return Poll::Ready(Ok(()));
        }
        g.writer = Some(cx.waker().clone());
        g.wake_sender();
        Poll::Pending
    }
}

impl Drop for BatchWriter {
    fn drop(&mut self) {
        let mut g = self.gathered.borrow_mut();
        g.dropped = true;
        g.wake_sender();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::AsyncWriteExt as _;
    use tokio::io::AsyncReadExt;

    #[tokio::test(flavor = "current_thread")]
    async fn bytes_arrive_in_order_and_writes_in_one_turn_leave_together() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let (near, mut far) = tokio::io::duplex(1 << 16);
                let (mut writer, sender) = batch_writer(near);
                let sending = tokio::task::spawn_local(sender);
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
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_socket_fails_later_writes() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let (near, far) = tokio::io::duplex(64);
                drop(far);
                let (mut writer, sender) = batch_writer(near);
                let sending = tokio::task::spawn_local(sender);
                writer.write_all(b"hello").await.unwrap();
                sending.await.unwrap();
                let e = writer.write_all(b"again").await.unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
                assert!(writer.flush().await.is_err());
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_writer_releases_a_socket_its_peer_stopped_reading() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                // The peer never reads: the sender's write can never finish.
                let (near, _far) = tokio::io::duplex(16);
                let (mut writer, sender) = batch_writer(near);
                let sending = tokio::task::spawn_local(sender);
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
                tokio::time::timeout(std::time::Duration::from_secs(10), sending)
                    .await
                    .expect("the sender ends once its writer is dropped")
                    .unwrap();
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_buffer_waits_for_the_socket_instead_of_growing() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let (near, mut far) = tokio::io::duplex(1 << 16);
                let (mut writer, sender) = batch_writer(near);
                let sending = tokio::task::spawn_local(sender);
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
            })
            .await;
    }
}
