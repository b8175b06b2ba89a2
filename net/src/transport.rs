//! Transports the connection loop runs over: plain TCP with monoio's owned-buffer I/O (io_uring
//! or epoll), and TLS through tokio-rustls over monoio's `into_poll_io` adapter (DESIGN.md:
//! monoio-rustls panics as an h2 client, so one TLS stack serves both roles).

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::io;

/// Byte-stream I/O with owned buffers (the buffer travels into the operation and back).
#[allow(async_fn_in_trait)] // Used generically on one thread; futures need not be Send.
pub trait Transport {
    /// Reads into the spare capacity of `buf` (the caller reserves it); returns bytes read (0 = EOF).
    async fn read_into(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut);
    /// Writes all of `buf`; the buffer comes back (cleared by the caller) for reuse.
    async fn write_all_from(&mut self, buf: BytesMut) -> (io::Result<()>, BytesMut);
    /// Shuts down the write side (best effort).
    async fn close(&mut self);
}

impl Transport for TcpStream {
    async fn read_into(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        // monoio reads into a BytesMut from its start; a slice from `len` appends instead.
        let (len, capacity) = (buf.len(), buf.capacity());
        let (result, slice) = self.read(buf.slice_mut(len..capacity)).await;
        (result, slice.into_inner())
    }

    async fn write_all_from(&mut self, buf: BytesMut) -> (io::Result<()>, BytesMut) {
        let (result, buf) = self.write_all(buf).await;
        (result.map(|_| ()), buf)
    }

    async fn close(&mut self) {
        let _ = AsyncWriteRent::shutdown(self).await;
    }
}

/// A TLS server stream over a monoio TCP stream.
pub type TlsStream = tokio_rustls::server::TlsStream<monoio::net::tcp::stream_poll::TcpStreamPoll>;

impl Transport for TlsStream {
    async fn read_into(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        use tokio::io::AsyncReadExt;
        let result = self.read_buf(&mut buf).await;
        (result, buf)
    }

    async fn write_all_from(&mut self, buf: BytesMut) -> (io::Result<()>, BytesMut) {
        use tokio::io::AsyncWriteExt;
        let mut result = self.write_all(&buf).await;
        if result.is_ok() {
            result = self.flush().await;
        }
        (result, buf)
    }

    async fn close(&mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = self.shutdown().await;
    }
}
