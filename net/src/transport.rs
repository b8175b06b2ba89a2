//! Transports the connection loop runs over: plain TCP with monoio's owned-buffer I/O (io_uring
//! or epoll), and TLS through tokio-rustls over monoio's `into_poll_io` adapter (docs/architecture.md:
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

/// A connection's stream with its type erased, for protocols that take a connection over after
/// an HTTP/1.1 upgrade (WebSocket).
pub enum AnyIo {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream>),
}

/// Streams that can be handed to an upgraded protocol.
pub trait IntoAnyIo {
    /// Erases the stream's type.
    fn into_any_io(self) -> AnyIo;
}

impl IntoAnyIo for TcpStream {
    fn into_any_io(self) -> AnyIo {
        AnyIo::Tcp(self)
    }
}

impl IntoAnyIo for TlsStream {
    fn into_any_io(self) -> AnyIo {
        AnyIo::Tls(Box::new(self))
    }
}

/// The read half of an [`AnyIo`].
pub enum ReadHalf {
    /// Plain TCP.
    Tcp(monoio::io::OwnedReadHalf<TcpStream>),
    /// TLS.
    Tls(tokio::io::ReadHalf<Box<TlsStream>>),
}

/// The write half of an [`AnyIo`].
pub enum WriteHalf {
    /// Plain TCP.
    Tcp(monoio::io::OwnedWriteHalf<TcpStream>),
    /// TLS.
    Tls(tokio::io::WriteHalf<Box<TlsStream>>),
}

impl AnyIo {
    /// Splits the stream so one task can read while another writes.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            AnyIo::Tcp(s) => {
                use monoio::io::Splitable;
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            AnyIo::Tls(s) => {
                let (r, w) = tokio::io::split(s);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }
}

impl ReadHalf {
    /// Reads into the spare capacity of `buf`; returns bytes read (0 = EOF).
    pub async fn read_into(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        match self {
            ReadHalf::Tcp(r) => {
                let (len, capacity) = (buf.len(), buf.capacity());
                let (result, slice) = r.read(buf.slice_mut(len..capacity)).await;
                (result, slice.into_inner())
            }
            ReadHalf::Tls(r) => {
                use tokio::io::AsyncReadExt;
                let mut buf = buf;
                let result = r.read_buf(&mut buf).await;
                (result, buf)
            }
        }
    }
}

impl WriteHalf {
    /// Writes all of `buf`; the buffer comes back for reuse.
    pub async fn write_all_from(&mut self, buf: BytesMut) -> (io::Result<()>, BytesMut) {
        match self {
            WriteHalf::Tcp(w) => {
                let (result, buf) = w.write_all(buf).await;
                (result.map(|_| ()), buf)
            }
            WriteHalf::Tls(w) => {
                use tokio::io::AsyncWriteExt;
                let mut result = w.write_all(&buf).await;
                if result.is_ok() {
                    result = w.flush().await;
                }
                (result, buf)
            }
        }
    }

    /// Shuts down the write side (best effort).
    pub async fn close(&mut self) {
        match self {
            WriteHalf::Tcp(w) => {
                let _ = AsyncWriteRent::shutdown(w).await;
            }
            WriteHalf::Tls(w) => {
                use tokio::io::AsyncWriteExt;
                let _ = w.shutdown().await;
            }
        }
    }
}
