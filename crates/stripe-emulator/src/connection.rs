//! TCP connections a handler can cut: how the emulator drops a request or loses a response.
//!
//! HTTP servers always answer; to make a client see a connection error instead, each accepted
//! stream carries a shared "cut" switch that handlers reach through axum's `ConnectInfo`. Once a
//! handler throws it, the next write fails, hyper abandons the connection without writing a byte
//! of the response, and the socket is closed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The switch for one connection, handed to handlers as `ConnectInfo<ConnectionCutter>`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionCutter {
    cut: Arc<AtomicBool>,
}

impl ConnectionCutter {
    /// After this, the connection closes instead of sending the response being prepared.
    pub(crate) fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

/// A `TcpListener` whose streams can be cut.
pub(crate) struct CuttableListener {
    listener: TcpListener,
}

impl CuttableListener {
    pub(crate) fn new(listener: TcpListener) -> CuttableListener {
        CuttableListener { listener }
    }
}

impl Listener for CuttableListener {
    type Io = CuttableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CuttableStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, address)) => {
                    // Small request/response pairs: Nagle's algorithm would only add delay.
                    let _ = stream.set_nodelay(true);
                    let stream = CuttableStream {
                        stream,
                        cutter: ConnectionCutter::default(),
                    };
                    return (stream, address);
                }
                // Running out of file descriptors and similar: wait instead of spinning.
                Err(error) => {
                    tracing::debug!(%error, "Accepting a connection failed; retrying.");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Connected<IncomingStream<'_, CuttableListener>> for ConnectionCutter {
    fn connect_info(stream: IncomingStream<'_, CuttableListener>) -> ConnectionCutter {
        stream.io().cutter.clone()
    }
}

/// A TCP stream that fails every read and write once its cutter is thrown.
pub(crate) struct CuttableStream {
    stream: TcpStream,
    cutter: ConnectionCutter,
}

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection cut by the emulator's fault injection",
    )
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.cutter.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.cutter.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.stream).poll_write(context, buffer)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.cutter.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cutter.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }
}
