//! DANE over real protocol exchanges on loopback: TLS handshakes against a
//! tokio-rustls server presenting rcgen certificates, with the client configuration built from
//! TLSA records, and the whole path from a DNSSEC-signed zone (the sandbox's signed DNS server,
//! validated by hickory from its private root) to the handshake.

use std::net::SocketAddr;
use std::sync::Arc;

use mailmerge::mx::DnsOptions;
use mailmerge::sandbox::dns::loopback;
use mailmerge::sandbox::dnssec::{SignedDnsServer, SignedZones};
use mailmerge::sandbox::tls::{Identity, TestCa, self_signed};
use mailmerge::tls_policy::dane::{DaneResolver, Tlsa, TlsaLookup, client_config};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const HOST: &str = "mx.dane.test";

/// A TLS server on loopback for one connection: it presents `identity` and sends "hello".
async fn tls_server(identity: &Identity) -> SocketAddr {
    let acceptor = TlsAcceptor::from(identity.server_config().unwrap());
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        // A client that rejects the certificate ends the handshake: that is not our failure.
        if let Ok(mut tls) = acceptor.accept(tcp).await {
            let _ = tls.write_all(b"hello").await;
            let _ = tls.shutdown().await;
        }
    });
    addr
}

/// Connects to `host` at `addr` with `config` and reads the greeting; the error text on failure.
async fn handshake(
    addr: SocketAddr,
    host: &str,
    config: Arc<ClientConfig>,
) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_string()).unwrap();
    let mut tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut got = String::new();
    tls.read_to_string(&mut got)
        .await
        .map_err(|e| e.to_string())?;
    Ok(got)
}

#[tokio::test]
async fn dane_ee_record_lets_the_handshake_through() {
    let identity = self_signed(&[HOST]).unwrap();
    let record = Tlsa::from_certificate(3, 1, 1, &identity.chain[0]).unwrap();
    let addr = tls_server(&identity).await;
    let got = handshake(addr, HOST, client_config(&[record], HOST).unwrap()).await;
    assert_eq!(got.as_deref(), Ok("hello"));
}

#[tokio::test]
async fn a_mismatching_record_fails_the_handshake_naming_dane() {
    let identity = self_signed(&[HOST]).unwrap();
    let other = self_signed(&[HOST]).unwrap();
    let record = Tlsa::from_certificate(3, 1, 1, &other.chain[0]).unwrap();
    let addr = tls_server(&identity).await;
    let err = handshake(addr, HOST, client_config(&[record], HOST).unwrap())
        .await
        .unwrap_err();
    assert!(err.contains("DANE"), "{err}");
}

#[tokio::test]
async fn dane_ta_record_accepts_a_chain_to_that_ca_for_the_host_only() {
    let ca = TestCa::new().unwrap();
    let record = Tlsa::from_certificate(2, 0, 1, &ca.root()).unwrap();
    let good = ca.issue(&[HOST]).unwrap();
    let addr = tls_server(&good).await;
    let got = handshake(
        addr,
        HOST,
        client_config(std::slice::from_ref(&record), HOST).unwrap(),
    )
    .await;
    assert_eq!(got.as_deref(), Ok("hello"));

    let wrong_name = ca.issue(&["other.dane.test"]).unwrap();
    let addr = tls_server(&wrong_name).await;
    let err = handshake(addr, HOST, client_config(&[record], HOST).unwrap())
        .await
        .unwrap_err();
    assert!(
        err.contains("DANE") && err.contains("not valid for"),
        "{err}"
    );
}

/// From DNS to the handshake: the TLSA records a validating resolver finds in the signed zone
/// are what the handshake is checked against.
#[tokio::test]
async fn signed_tlsa_records_decide_the_handshake() {
    let identity = self_signed(&[HOST]).unwrap();
    let impostor = self_signed(&["mx2.dane.test"]).unwrap();
    let mut zones = SignedZones::new();
    zones
        .signed_zone("dane.test")
        .mx("dane.test", 10, HOST)
        .addr(HOST, loopback(1))
        .tlsa(
            HOST,
            25,
            &Tlsa::from_certificate(3, 1, 1, &identity.chain[0]).unwrap(),
        )
        .addr("mx2.dane.test", loopback(1))
        // mx2 publishes the first host's key, but presents its own.
        .tlsa(
            "mx2.dane.test",
            25,
            &Tlsa::from_certificate(3, 1, 1, &identity.chain[0]).unwrap(),
        );
    let dns = SignedDnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), &zones)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let anchor = dir.path().join("root.key");
    dns.write_trust_anchor(&anchor).unwrap();
    let resolver = DaneResolver::new(
        &DnsOptions {
            server: Some(dns.addr()),
            ..DnsOptions::default()
        },
        Some(&anchor),
    )
    .unwrap();
    resolver.available().await.unwrap();

    let TlsaLookup::Secure(records) = resolver.tlsa(HOST, 25).await else {
        panic!("expected secure TLSA records for {HOST}");
    };
    let addr = tls_server(&identity).await;
    let got = handshake(addr, HOST, client_config(&records, HOST).unwrap()).await;
    assert_eq!(got.as_deref(), Ok("hello"));

    let TlsaLookup::Secure(records) = resolver.tlsa("mx2.dane.test", 25).await else {
        panic!("expected secure TLSA records for mx2.dane.test");
    };
    let addr = tls_server(&impostor).await;
    let err = handshake(
        addr,
        "mx2.dane.test",
        client_config(&records, "mx2.dane.test").unwrap(),
    )
    .await
    .unwrap_err();
    assert!(err.contains("DANE"), "{err}");
}
