//! Sending a granted `wasi:http` request to exactly the addresses the grant
//! check approved.
//!
//! The check resolves the host name and refuses internal addresses; were the
//! request then sent by name, the name would be resolved a second time, and
//! a DNS server answering a public address first and an internal one next
//! (DNS rebinding) would walk past the check. Here the connection goes to the
//! checked addresses, while TLS still verifies the certificate for the
//! granted name (SNI) and `Host` still carries it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Longest wait for a connection, the first byte and between bytes, unless
/// the guest asks for less.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The response body, timing out when the peer goes quiet.
pub(super) struct ResponseBody {
    incoming: hyper::body::Incoming,
    between_bytes: tokio::time::Interval,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(err))) if err.is_timeout() => {
                Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(Error::from(err)))),
            Poll::Ready(Some(Ok(frame))) => {
                self.between_bytes.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.between_bytes.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}

/// The connection's remaining work, resolved once the exchange is over.
pub(super) type Io = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

/// Send `request` to one of `addrs` (in order), speaking TLS for `https`
/// with `host` as the name the certificate must carry.
pub(super) async fn send(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    addrs: &[SocketAddr],
    host: &str,
    tls: bool,
) -> Result<(http::Response<ResponseBody>, Io), Error> {
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let first_byte_timeout = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let between_bytes_timeout = options
        .and_then(|o| o.between_bytes_timeout)
        .unwrap_or(DEFAULT_TIMEOUT)
        .max(Duration::from_nanos(1));

    let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(addrs))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    let (mut sender, connection) = if tls {
        let name = rustls_pki_types::ServerName::try_from(host.to_owned())
            .map_err(Error::InvalidDnsNameError)?;
        let stream = tokio::time::timeout(connect_timeout, connector()?.connect(name, tcp))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Tls)?;
        let (sender, connection) = tokio::time::timeout(
            connect_timeout,
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)),
        )
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
        (
            sender,
            Box::pin(connection) as Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>,
        )
    } else {
        let (sender, connection) = tokio::time::timeout(
            connect_timeout,
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)),
        )
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
        (
            sender,
            Box::pin(connection) as Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>,
        )
    };

    // Origin form on the wire: the authority travels in `Host`.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;

    let mut connection = Some(connection);
    let response = {
        let send = tokio::time::timeout(first_byte_timeout, sender.send_request(request));
        tokio::pin!(send);
        // Drive the connection while waiting for the response.
        std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = send.as_mut().poll(cx) {
                return Poll::Ready(
                    result
                        .map_err(|_| Error::ConnectionReadTimeout)
                        .and_then(|r| r.map_err(Error::from)),
                );
            }
            if let Some(io) = connection.as_mut()
                && let Poll::Ready(result) = io.as_mut().poll(cx)
            {
                connection = None;
                if let Err(error) = result {
                    return Poll::Ready(Err(Error::from(error)));
                }
            }
            Poll::Pending
        })
        .await?
    };
    let mut between_bytes = tokio::time::interval(between_bytes_timeout);
    between_bytes.reset();
    let io: Io = Box::pin(async move {
        match connection {
            None => Ok(()),
            Some(io) => io.await.map_err(|e: hyper::Error| {
                if e.is_timeout() {
                    Error::HttpResponseTimeout
                } else {
                    Error::from(e)
                }
            }),
        }
    });
    Ok((
        response.map(|incoming| ResponseBody {
            incoming,
            between_bytes,
        }),
        io,
    ))
}

/// A TLS client trusting the public web's roots, built once.
fn connector() -> Result<tokio_rustls::TlsConnector, Error> {
    static CONNECTOR: std::sync::OnceLock<Option<tokio_rustls::TlsConnector>> =
        std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .ok()
            .map(|b| {
                let config = b.with_root_certificates(roots).with_no_client_auth();
                tokio_rustls::TlsConnector::from(Arc::new(config))
            })
        })
        .clone()
        .ok_or(Error::TlsProtocolError)
}
