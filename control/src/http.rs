//! HTTP plumbing shared by the API server, the Raft network, the admin client and the router's
//! metrics endpoint: a server loop with connection limits, a response body that is either whole
//! or a stream, and a keep-alive HTTP/1.1 client for one address.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
pub use hyper::{Method, StatusCode};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

/// What an HTTP server lets its clients hold. Its servers share the process (and its file
/// descriptors) with a router's data path, so a client that opens connections without end, or
/// opens one and never finishes a request, must not take what the router's own clients need.
/// The default is the control API's.
#[derive(Clone, Copy, Debug)]
pub struct ApiLimits {
    /// Connections open at once (on the control API: Raft peers, one watch stream per router
    /// that follows the node, administrators). Past it a new connection is answered `503` and
    /// closed.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, counted from the connection's opening or
    /// from the end of the previous response; past it the connection is closed (an idle
    /// keep-alive connection too). A streamed response being sent is not affected.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's body once its headers arrived (`408` after it),
    /// for handlers that read one.
    pub body_read_timeout: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves HTTP/1.1 on `listener` with `handler` until `stop` completes, within `limits`;
/// `what` names the server in logs and in the refusal past the connection limit. Connections
/// still open when it stops are closed.
pub async fn serve<H, F>(
    listener: TcpListener,
    limits: ApiLimits,
    what: &'static str,
    stop: impl Future<Output = ()>,
    handler: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut conns = JoinSet::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, server = what, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, server = what, max = limits.max_connections, "too many connections; refused");
                    conns.spawn(refuse_busy(stream, what));
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let reply = handler(req, peer);
                        async move { Ok::<_, Infallible>(reply.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(limits.header_read_timeout)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    drop(slot);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

/// Answers a connection over [`ApiLimits::max_connections`] with `503` and closes it, without
/// reading its request (nor waiting long for a client that does not read the answer).
async fn refuse_busy(mut stream: TcpStream, what: &str) {
    use tokio::io::AsyncWriteExt;
    let body = serde_json::json!({ "error": format!("too many connections to this {what}") }).to_string();
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(reply.as_bytes())).await;
}

/// What the API server answers with.
pub enum Body {
    Whole(Option<Bytes>),
    /// Chunks as they are produced; the response ends when the sender is dropped.
    Stream(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Whole(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    /// A whole body's length is known, so hyper sends `content-length` rather than chunks.
    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Whole(b) => hyper::body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(_) => hyper::body::SizeHint::default(),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Whole(None))
    }
}

/// A JSON response.
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let bytes =
        serde_json::to_vec(value).unwrap_or_else(|e| format!("{{\"error\":\"encode: {e}\"}}").into_bytes());
    let mut r = Response::new(Body::Whole(Some(Bytes::from(bytes))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

/// An error response: `{"error": message}` plus extra fields.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// An HTTP/1.1 connection to one address, reconnected on demand.
pub struct Client {
    addr: String,
    token: Option<String>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    #[must_use]
    pub fn new(addr: impl Into<String>, token: Option<String>) -> Self {
        Self { addr: addr.into(), token, sender: None }
    }

    #[must_use]
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn connect(&mut self, timeout: Duration) -> io::Result<&mut SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(SendRequest::is_closed) {
            self.sender = None;
            let stream =
                tokio::time::timeout(timeout, TcpStream::connect(&self.addr)).await.map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, format!("connect to {} timed out", self.addr))
                })??;
            stream.set_nodelay(true)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(io::Error::other)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        self.sender.as_mut().ok_or_else(|| io::Error::other("no connection"))
    }

    /// Sends one request and returns the response head and its (not yet read) body.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> io::Result<Response<Incoming>> {
        let mut req = Request::builder().method(method).uri(path).header("host", self.addr.clone());
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(io::Error::other)?;
        let addr = self.addr.clone();
        let result = tokio::time::timeout(timeout, async {
            let sender = self.connect(timeout).await?;
            sender.ready().await.map_err(io::Error::other)?;
            sender.send_request(req).await.map_err(io::Error::other)
        })
        .await;
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(io::Error::new(io::ErrorKind::TimedOut, format!("request to {addr} timed out")))
            }
        }
    }

    /// Sends one request and reads the whole response.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> io::Result<(StatusCode, Bytes)> {
        let resp = self.send(method, path, body, timeout).await?;
        let status = resp.status();
        let bytes = match tokio::time::timeout(timeout, resp.into_body().collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => {
                self.sender = None;
                return Err(io::Error::other(e));
            }
            Err(_) => {
                self.sender = None;
                return Err(io::Error::new(io::ErrorKind::TimedOut, "response body timed out"));
            }
        };
        Ok((status, bytes))
    }
}
