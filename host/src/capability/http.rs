//! Outbound HTTP (`wasi:http`), through one choke point that enforces
//! `grants.http`.
//!
//! - The request's scheme, host and port must equal a granted origin; anything
//!   else is refused before any DNS lookup or socket.
//! - Every address the host name resolves to must be public: loopback,
//!   private, link-local (169.254.169.254 included), unique-local and
//!   unspecified addresses are refused unless the grant names that exact
//!   address.
//! - `Host` is a forbidden header for the guest; the host sets it from the
//!   request's authority, so a guest cannot aim a granted connection elsewhere.
//!
//! Each refusal is an `HTTP request denied` error for the plugin, a warning in
//! the log and a count in `plexus_capability_denied_total`.

use std::net::IpAddr;
use std::sync::Arc;

use http_body_util::BodyExt as _;
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use crate::capability::{ConnectorContext, PluginState};
use crate::config::Origin;

/// The hooks of one store: the connector's grants.
pub struct HttpGate {
    connector: Arc<ConnectorContext>,
}

impl HttpGate {
    pub(super) fn new(connector: Arc<ConnectorContext>) -> Self {
        HttpGate { connector }
    }
}

/// Where a granted request may go: the addresses the check approved, the
/// name TLS verifies, and whether it is TLS.
struct Approved {
    addrs: Vec<std::net::SocketAddr>,
    host: String,
    tls: bool,
}

/// The addresses `uri` may be sent to, or why it may not be requested.
async fn approve(grants: &[Origin], uri: &http::Uri) -> Result<Approved, String> {
    let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
    let Some(host) = uri
        .host()
        .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())
    else {
        return Err("request has no host".into());
    };
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let wanted = Origin::new(scheme, host, port);
    let Some(grant) = grants.iter().find(|g| **g == wanted) else {
        return Err(format!(
            "{}://{}:{} is not granted",
            wanted.scheme(),
            wanted.host(),
            wanted.port()
        ));
    };
    let granted_literal = grant.host().parse::<IpAddr>().ok();
    let addrs: Vec<IpAddr> = match wanted.host().parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match tokio::net::lookup_host((wanted.host(), wanted.port())).await {
            Ok(addrs) => addrs.map(|a| a.ip()).collect(),
            Err(e) => return Err(format!("cannot resolve {}: {e}", wanted.host())),
        },
    };
    if addrs.is_empty() {
        return Err(format!("{} resolves to no address", wanted.host()));
    }
    for ip in &addrs {
        if is_internal(*ip) && granted_literal != Some(*ip) {
            return Err(format!(
                "{} resolves to the internal address {ip}, which is granted only by name of the address itself",
                wanted.host()
            ));
        }
    }
    Ok(Approved {
        addrs: addrs
            .into_iter()
            .map(|ip| std::net::SocketAddr::new(ip, wanted.port()))
            .collect(),
        tls: wanted.scheme() == "https",
        host: wanted.host().to_owned(),
    })
}

/// Any address that is not an ordinary public unicast one: loopback,
/// private, link-local, shared (CGNAT), unique-local, unspecified,
/// multicast, benchmarking, documentation and reserved ranges, and the
/// IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4, Teredo),
/// which could carry an internal one.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 192 && b == 0 && c == 2)
                || (a == 198 && (b == 18 || b == 19))
                || (a == 198 && b == 51 && c == 100)
                || (a == 203 && b == 0 && c == 113)
                || a >= 240
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (s[0] & 0xfe00) == 0xfc00
                    || (s[0] & 0xffc0) == 0xfe80
                    // NAT64 (64:ff9b::/96 and 64:ff9b:1::/48)
                    || (s[0] == 0x64 && s[1] == 0xff9b)
                    // 6to4
                    || s[0] == 0x2002
                    // Teredo and documentation
                    || (s[0] == 0x2001 && (s[1] == 0 || s[1] == 0x0db8))
                    // discard-only
                    || (s[0] == 0x100 && s[1] == 0 && s[2] == 0 && s[3] == 0)
                    // IPv4-compatible (deprecated ::a.b.c.d)
                    || (s[..6].iter().all(|x| *x == 0))
            }
        },
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = Result<(), Error>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> ResponseFuture {
        let connector = self.connector.clone();
        Box::new(async move {
            let approved = match approve(&connector.grants.http, request.uri()).await {
                Ok(approved) => approved,
                Err(reason) => {
                    connector.denied(
                        "http",
                        &format!("{} {}: {reason}", request.method(), request.uri()),
                    );
                    return Err(Error::HttpRequestDenied);
                }
            };
            // To the checked addresses only: the name is not resolved again.
            let (response, io) = super::http_send::send(
                request,
                options,
                &approved.addrs,
                &approved.host,
                approved.tls,
            )
            .await?;
            Ok((
                response.map(|b| b.boxed_unsync()),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_gate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(list: &[&str]) -> Vec<Origin> {
        list.iter().map(|g| Origin::parse(g).unwrap()).collect()
    }

    #[tokio::test]
    async fn only_granted_origins_pass() {
        let g = grants(&["http://127.0.0.1:8080", "https://localhost"]);
        let approved = approve(&g, &"http://127.0.0.1:8080/x".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(approved.addrs, ["127.0.0.1:8080".parse().unwrap()]);
        assert!(!approved.tls);
        let r = approve(&g, &"http://127.0.0.1:8081/x".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert!(r.contains("is not granted"), "{r}");
        let r = approve(&g, &"http://10.1.2.3/".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert!(r.contains("is not granted"), "{r}");
        let r = approve(&g, &"https://localhost/".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert!(
            r.contains("internal address"),
            "a granted name that resolves to loopback: {r}"
        );
    }

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "0.1.2.3",
            "198.18.0.1",
            "198.19.255.1",
            "240.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.10",
            "64:ff9b::7f00:1",
            "64:ff9b:1::a00:1",
            "2002:7f00:1::1",
            "2001::1",
            "2001:db8::1",
            "::127.0.0.1",
            "ff02::1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
