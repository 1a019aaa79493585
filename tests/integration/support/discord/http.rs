//! REST over HTTP on the shared hyper test server (`support/http.rs`): one handler for
//! the API, the CDN (`/cdn/attachments/...`) and CONNECT. A CONNECT (to `discord.com:443`)
//! is answered 200, then the tunnel is TLS with a test certificate for `discord.com`, and
//! the same handler serves the HTTP inside it.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsAcceptor;

use super::super::http::{self as server, Body, Handler, RemoteAddr, TestServer};
use super::Shared;
use super::rest::{Req, Resp};

/// Larger request bodies get a 413 before the API sees them (its upload cap is lower).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// A test server on a free port of 127.0.0.1 that serves the fake's REST side.
pub(super) fn start(shared: Arc<Shared>) -> TestServer {
    TestServer::start_boxed(handler(shared, tls_acceptor()))
}

fn handler(shared: Arc<Shared>, tls: TlsAcceptor) -> Handler {
    Arc::new(move |req| Box::pin(answer(req, shared.clone(), tls.clone())))
}

async fn answer(
    mut req: Request<Incoming>,
    shared: Arc<Shared>,
    tls: TlsAcceptor,
) -> Response<Body> {
    if req.method() == Method::CONNECT {
        // `https://discord.com` through the fake as a proxy: once hyper has sent the 200,
        // the connection is the client's TLS.
        let upgrade = hyper::upgrade::on(&mut req);
        let RemoteAddr(peer) = *req.extensions().get::<RemoteAddr>().expect("the peer");
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else {
                return;
            };
            let Ok(stream) = tls.accept(TokioIo::new(upgraded)).await else {
                return;
            };
            server::serve(stream, peer, handler(shared, tls)).await;
        });
        return Response::new(server::empty());
    }
    if let Some(rest) = req.uri().path().strip_prefix("/cdn/attachments/") {
        return cdn(rest, &shared);
    }
    let (head, body) = req.into_parts();
    let Ok(body) = server::read_body(body, MAX_BODY).await else {
        return response(Resp::error(413, 40005, "Request entity too large"));
    };
    let query = head
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let headers = head
        .headers
        .iter()
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (k.as_str().to_string(), v)
        })
        .collect();
    let req = Req {
        method: head.method.as_str().to_string(),
        path: head.uri.path().to_string(),
        query,
        headers,
        body: body.to_vec(),
    };
    response(shared.change(|st| st.answer(&req)))
}

/// Discord's CDN: `{channel}/{attachment id}/{filename}`, the bytes as uploaded.
fn cdn(path: &str, shared: &Shared) -> Response<Body> {
    let id = path.split('/').nth(1).and_then(|i| i.parse::<u64>().ok());
    let bytes = id.and_then(|id| {
        let st = shared.lock();
        st.messages
            .iter()
            .flat_map(|m| m.attachments.iter())
            .find(|a| a.id == id)
            .map(|a| a.bytes.clone())
    });
    match bytes {
        Some(b) => server::response(200, "application/octet-stream", b),
        None => Response::builder()
            .status(404)
            .body(server::empty())
            .expect("response"),
    }
}

/// An answer as Discord sends it: JSON, or no body (204).
fn response(resp: Resp) -> Response<Body> {
    let mut r = Response::builder().status(resp.status);
    let body = match &resp.body {
        Some(v) => {
            r = r.header("content-type", "application/json");
            server::full(v.to_string())
        }
        None => server::empty(),
    };
    for (k, v) in &resp.headers {
        r = r.header(k, v);
    }
    r.body(body).expect("response")
}

fn tls_acceptor() -> TlsAcceptor {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![
        CertificateDer::from_pem_slice(LEAF_PEM.as_bytes()).expect("leaf pem"),
        CertificateDer::from_pem_slice(CA_PEM.as_bytes()).expect("CA pem"),
    ];
    let key = PrivateKeyDer::from_pem_slice(LEAF_KEY_PEM.as_bytes()).expect("key pem");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("TLS config");
    TlsAcceptor::from(Arc::new(config))
}

// ---------------------------------------------------------------------------------------
// The test certificate of the CONNECT tunnel: a CA and a leaf for discord.com (test-only
// keys, valid 2020-2120).

pub(super) const CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----
MIIBcDCCARagAwIBAgICEAAwCgYIKoZIzj0EAwIwHjEcMBoGA1UEAwwTRmFrZURp
c2NvcmQgdGVzdCBDQTAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEwMTAwMDAwMFow
HjEcMBoGA1UEAwwTRmFrZURpc2NvcmQgdGVzdCBDQTBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABPrZxVBm5I8/YuEXBAWW7c4C6oXYXc6x6CUhcJNcWJVUTvjcToDh
1+bCZpInbrlW5bdVGyVrcwQkH9rUxvElJJ2jQjBAMA8GA1UdEwEB/wQFMAMBAf8w
DgYDVR0PAQH/BAQDAgEGMB0GA1UdDgQWBBQCygobvoHLLoh+H5lWWjNw6prpQjAK
BggqhkjOPQQDAgNIADBFAiAiRrvE5brGUN0EyYvss4OEq/CQ+w6dFwamd8syOfAT
9wIhAOJSGxQi3anWT0Tp2OpwTJ6kVyphn4LLWeFhOqX4eoap
-----END CERTIFICATE-----
";
const LEAF_PEM: &str = "\
-----BEGIN CERTIFICATE-----
MIIBtTCCAVugAwIBAgICEAEwCgYIKoZIzj0EAwIwHjEcMBoGA1UEAwwTRmFrZURp
c2NvcmQgdGVzdCBDQTAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEwMTAwMDAwMFow
FjEUMBIGA1UEAwwLZGlzY29yZC5jb20wWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AAQfq4UleYMZdjxElZAyDHiXoluHqR6ZOg5xbiGfT0BTvlXhVxNSr4PmasTWPV6y
wx2NSUdtraSdSRnGxqIevafPo4GOMIGLMAwGA1UdEwEB/wQCMAAwDgYDVR0PAQH/
BAQDAgeAMBMGA1UdJQQMMAoGCCsGAQUFBwMBMBYGA1UdEQQPMA2CC2Rpc2NvcmQu
Y29tMB0GA1UdDgQWBBS47EIcWdvIUIrQChoXgfeIe690MzAfBgNVHSMEGDAWgBQC
ygobvoHLLoh+H5lWWjNw6prpQjAKBggqhkjOPQQDAgNIADBFAiEAwODTQfRE+CKr
DcIKjdbZvvOLR+48cNYEfdkNuvW7EVsCIBTqpIz6+UHFt/DSgVIeRHiuiP21Ztb1
uWz4I4cy42SA
-----END CERTIFICATE-----
";
const LEAF_KEY_PEM: &str = "\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgNjuORf+6iRnAotNS
lJJrm/hXEpbHDrc+ITvtjRdQA5OhRANCAAQfq4UleYMZdjxElZAyDHiXoluHqR6Z
Og5xbiGfT0BTvlXhVxNSr4PmasTWPV6ywx2NSUdtraSdSRnGxqIevafP
-----END PRIVATE KEY-----
";
