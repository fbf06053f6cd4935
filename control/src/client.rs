//! Clients of the control API: [`AdminClient`] for `pg-router ctl` and tests, and [`follow`],
//! the watch stream a router keeps open to learn new routing versions.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

use crate::api::{WatchEvent, WATCH_KEEPALIVE};
use crate::http::Client;

/// An error from the control API, or from reaching it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    /// The HTTP status, if a node answered.
    pub status: Option<u16>,
    pub message: String,
}

impl ClientError {
    fn transport(addrs: &[String], last: Option<String>) -> Self {
        Self {
            status: None,
            message: format!(
                "no control node answered (tried {}){}",
                addrs.join(", "),
                last.map(|e| format!(": {e}")).unwrap_or_default()
            ),
        }
    }
}

/// Talks to any node of a control cluster: tries the addresses in turn, follows a follower's
/// pointer to the leader, and waits out an election.
pub struct AdminClient {
    addrs: Vec<String>,
    token: Option<String>,
    /// How long a call may take overall, elections included.
    pub deadline: Duration,
}

impl AdminClient {
    #[must_use]
    pub fn new(addrs: Vec<String>, token: Option<String>) -> Self {
        Self { addrs, token, deadline: Duration::from_secs(10) }
    }

    /// `GET path`, decoded.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// A request with a JSON body, decoded.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| ClientError { status: None, message: format!("encode request: {e}") })?;
        self.call(method, path, Some(body)).await
    }

    /// Sends the request, retrying on other nodes until [`Self::deadline`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let until = tokio::time::Instant::now() + self.deadline;
        let mut queue: Vec<String> = self.addrs.clone();
        let mut last = None;
        loop {
            for addr in std::mem::take(&mut queue) {
                let mut c = Client::new(addr.clone(), self.token.clone());
                let (status, bytes) =
                    match c.call(method.clone(), path, body.clone(), Duration::from_secs(5)).await {
                        Ok(r) => r,
                        Err(e) => {
                            last = Some(format!("{addr}: {e}"));
                            continue;
                        }
                    };
                if status == StatusCode::OK {
                    return serde_json::from_slice(&bytes).map_err(|e| ClientError {
                        status: Some(200),
                        message: format!("{addr} answered something unexpected: {e}"),
                    });
                }
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                let message = v["error"]
                    .as_str()
                    .map_or_else(|| String::from_utf8_lossy(&bytes).into_owned(), str::to_owned);
                match status {
                    StatusCode::MISDIRECTED_REQUEST => {
                        if let Some(leader) = v["leader"].as_str() {
                            queue.insert(0, leader.to_owned());
                        }
                        last = Some(format!("{addr}: {message}"));
                    }
                    StatusCode::SERVICE_UNAVAILABLE => last = Some(format!("{addr}: {message}")),
                    _ => return Err(ClientError { status: Some(status.as_u16()), message }),
                }
                if !queue.is_empty() {
                    break;
                }
            }
            if tokio::time::Instant::now() >= until {
                return Err(ClientError::transport(&self.addrs, last));
            }
            if queue.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                queue = self.addrs.clone();
            }
        }
    }
}

/// Follows the watch stream of the control nodes at `addrs`, sending each new [`WatchEvent`]
/// (versions only increase) to `events`, and whether a stream is open to `connected`. Reconnects
/// to the next node when a stream breaks or stays silent past two keepalives. Returns when
/// `events` is closed.
pub async fn follow(
    addrs: Vec<String>,
    mut after: u64,
    events: mpsc::Sender<WatchEvent>,
    connected: watch::Sender<bool>,
) {
    let mut i = 0usize;
    let mut backoff = Duration::from_millis(100);
    loop {
        if events.is_closed() || addrs.is_empty() {
            return;
        }
        let addr = addrs[i % addrs.len()].clone();
        i += 1;
        let mut client = Client::new(addr.clone(), None);
        let resp =
            client.send(Method::GET, &format!("/v1/watch?after={after}"), None, Duration::from_secs(3)).await;
        match resp {
            Ok(resp) if resp.status() == StatusCode::OK => {
                connected.send_replace(true);
                backoff = Duration::from_millis(100);
                let mut body = resp.into_body();
                let mut buf = Vec::new();
                loop {
                    let frame = match tokio::time::timeout(WATCH_KEEPALIVE * 3, body.frame()).await {
                        Ok(Some(Ok(f))) => f,
                        Ok(Some(Err(e))) => {
                            tracing::warn!(control = %addr, error = %e, "control watch stream broke");
                            break;
                        }
                        Ok(None) => break,
                        Err(_) => {
                            tracing::warn!(control = %addr, "control watch stream went silent");
                            break;
                        }
                    };
                    let Ok(data) = frame.into_data() else { continue };
                    buf.extend_from_slice(&data);
                    while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=nl).collect();
                        if line.len() <= 1 {
                            continue;
                        }
                        match serde_json::from_slice::<WatchEvent>(&line) {
                            Ok(ev) if ev.version > after => {
                                after = ev.version;
                                if events.send(ev).await.is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(control = %addr, error = %e, "undecodable watch event"),
                        }
                    }
                }
            }
            Ok(resp) => tracing::warn!(control = %addr, status = %resp.status(), "control watch refused"),
            Err(e) => tracing::debug!(control = %addr, error = %e, "control node unreachable"),
        }
        if *connected.borrow() {
            tracing::warn!(control = %addr, version = after, "lost the control plane; serving on the last known version");
        }
        connected.send_replace(false);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
