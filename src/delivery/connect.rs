//! How the engine reaches an MX address, behind a trait: TCP in production, in-memory pipes in
//! the engine's tests (so the whole engine runs without sockets and under paused time).
//!
//! The engine bounds every connect by `--connect-timeout` itself and does everything after the
//! connection (greeting, EHLO, STARTTLS) over the returned stream, so a connector only has to
//! produce bytes in both directions.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Opens connections to MX addresses.
pub trait Connect: Send + Sync + 'static {
    /// The connected byte stream; STARTTLS, when used, wraps it.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Connects to `addr`, an address of the MX host `host` (for connectors that route by
    /// name; TCP ignores it). The engine applies the connect timeout around this future.
    fn connect(
        &self,
        host: &str,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// The real connector: a TCP connection with Nagle's algorithm off.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

impl Connect for TcpConnector {
    type Stream = TcpStream;

    async fn connect(&self, _host: &str, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(addr).await?;
        // Commands and replies are small and each waits for the other side: never delay them.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}
