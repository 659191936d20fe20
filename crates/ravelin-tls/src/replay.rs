//! A stream that first replays bytes already read from it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `io` with `prefix` put back in front of it: reads return the prefix first, then what `io`
/// gives; writes go straight to `io`.
///
/// The [`TlsAcceptor`](crate::acceptor::TlsAcceptor) reads the ClientHello itself (to compute
/// its JA4) before rustls sees the connection, then hands rustls a `Rewind` so the handshake
/// starts from the first byte.
#[derive(Debug)]
pub struct Rewind<IO> {
    prefix: Vec<u8>,
    /// How much of `prefix` has been read back.
    consumed: usize,
    io: IO,
}

impl<IO> Rewind<IO> {
    /// `io`, reading `prefix` first.
    pub fn new(prefix: Vec<u8>, io: IO) -> Self {
        Self {
            prefix,
            consumed: 0,
            io,
        }
    }

    /// The underlying stream (the prefix not yet read back is lost).
    pub fn into_inner(self) -> IO {
        self.io
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this
            .prefix
            .get(this.consumed..)
            .filter(|rest| !rest.is_empty())
        {
            let n = rest.len().min(buf.remaining());
            if let Some(chunk) = rest.get(..n) {
                buf.put_slice(chunk);
            }
            this.consumed = this.consumed.saturating_add(n);
            if this.consumed >= this.prefix.len() {
                // Replayed in full: give the memory back for the connection's lifetime.
                this.prefix = Vec::new();
                this.consumed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn the_prefix_comes_back_first_then_the_stream() {
        let (mut near, far) = tokio::io::duplex(64);
        near.write_all(b" world").await.unwrap();
        drop(near);
        let mut rewind = Rewind::new(b"hello".to_vec(), far);
        let mut out = String::new();
        rewind.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    #[tokio::test]
    async fn small_reads_replay_the_prefix_in_pieces() {
        let (near, far) = tokio::io::duplex(64);
        drop(near);
        let mut rewind = Rewind::new(b"abcdef".to_vec(), far);
        let mut two = [0u8; 2];
        let mut seen = Vec::new();
        loop {
            let n = rewind.read(&mut two).await.unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&two[..n]);
        }
        assert_eq!(seen, b"abcdef");
    }

    #[tokio::test]
    async fn writes_go_to_the_stream() {
        let (mut near, far) = tokio::io::duplex(64);
        let mut rewind = Rewind::new(b"x".to_vec(), far);
        rewind.write_all(b"pong").await.unwrap();
        let mut got = [0u8; 4];
        near.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }
}
