//! How the engine reaches an MX address, behind a trait: TCP in production, in-memory pipes in
//! the engine's tests (so the whole engine runs without sockets and under paused time).
//!
//! The engine bounds every connect by `--connect-timeout` itself and does everything after the
//! connection (greeting, EHLO, STARTTLS) over the returned stream, so a connector only has to
//! produce bytes in both directions. With a source-IP pool (`--source-ip`) the engine also
//! chooses the local address: [`Connect::connect_from`] binds it before connecting, and a bind
//! failure is told apart from a connect failure, because it is the source that is unusable,
//! not the MX.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

use super::source_ip::SourceIp;

/// Why [`Connect::connect_from`] gave no stream.
#[derive(Debug)]
pub enum ConnectError {
    /// The source address could not be bound on this host: skip that source, not the MX.
    Bind(io::Error),
    /// The connection itself failed: the MX address is the problem.
    Connect(io::Error),
}

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

    /// Connects to `addr` from the local address `from` (a `--source-ip` of the pool), or from
    /// whatever address the OS picks when `None`. Connectors without local addresses (the
    /// in-memory test connector) keep this default, which ignores `from`.
    fn connect_from(
        &self,
        host: &str,
        addr: SocketAddr,
        from: Option<&SourceIp>,
    ) -> impl Future<Output = Result<Self::Stream, ConnectError>> + Send {
        let _ = from;
        async move {
            self.connect(host, addr)
                .await
                .map_err(ConnectError::Connect)
        }
    }
}

/// The real connector: a TCP connection with Nagle's algorithm off, bound to the chosen source
/// address when there is one.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

impl Connect for TcpConnector {
    type Stream = TcpStream;

    async fn connect(&self, host: &str, addr: SocketAddr) -> io::Result<TcpStream> {
        self.connect_from(host, addr, None)
            .await
            .map_err(|(ConnectError::Bind(e) | ConnectError::Connect(e))| e)
    }

    async fn connect_from(
        &self,
        _host: &str,
        addr: SocketAddr,
        from: Option<&SourceIp>,
    ) -> Result<TcpStream, ConnectError> {
        let stream = match from {
            None => TcpStream::connect(addr)
                .await
                .map_err(ConnectError::Connect)?,
            Some(source) => {
                let socket = if source.addr.is_ipv4() {
                    TcpSocket::new_v4()
                } else {
                    TcpSocket::new_v6()
                }
                .map_err(ConnectError::Bind)?;
                // Port 0: the OS picks a free local port on the chosen address.
                socket
                    .bind(SocketAddr::new(source.addr, 0))
                    .map_err(ConnectError::Bind)?;
                socket.connect(addr).await.map_err(ConnectError::Connect)?
            }
        };
        // Commands and replies are small and each waits for the other side: never delay them.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_the_source_address_and_reports_an_unbindable_one_as_a_bind_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = listener.local_addr().unwrap();
        let from = SourceIp::parse("127.0.0.10").unwrap();
        let stream = TcpConnector.connect_from("mx", to, Some(&from)).await;
        let (_, peer) = listener.accept().await.unwrap();
        assert!(stream.is_ok());
        assert_eq!(peer.ip(), from.addr);
        let nowhere = SourceIp::parse("2001:db8::1").unwrap();
        let failed = TcpConnector.connect_from("mx", to, Some(&nowhere)).await;
        assert!(matches!(failed, Err(ConnectError::Bind(_))), "{failed:?}");
    }
}
