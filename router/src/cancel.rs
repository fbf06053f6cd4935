//! CancelRequest routing.
//!
//! Each client gets a router-made (pid, secret) pair in its BackendKeyData. The session keeps
//! a slot naming the backend currently running its work; a CancelRequest arriving on a new
//! connection with the client's pair is relayed to that backend with the backend's own pair.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use rand::Rng as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::pool::{BackendAddr, CancelTarget};

/// The backends currently running the session's work (several during a cross-shard statement).
pub type CancelSlot = Arc<Mutex<Vec<CancelTarget>>>;

#[derive(Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<(i32, i32), CancelSlot>>,
}

/// Removes the session's entry when dropped.
pub struct CancelGuard<'a> {
    registry: &'a CancelRegistry,
    pub key: (i32, i32),
    pub slot: CancelSlot,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.registry.sessions.lock() {
            m.remove(&self.key);
        }
    }
}

impl CancelRegistry {
    /// Registers a new session under a fresh random key.
    pub fn register(&self) -> CancelGuard<'_> {
        let slot: CancelSlot = Arc::default();
        let mut rng = rand::rng();
        let mut sessions = match self.sessions.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let key = loop {
            let key = (rng.random_range(1..i32::MAX), rng.random::<i32>());
            if !sessions.contains_key(&key) {
                break key;
            }
        };
        sessions.insert(key, slot.clone());
        CancelGuard { registry: self, key, slot }
    }

    /// Relays a cancel for the session with this key to every backend running its work.
    pub async fn cancel(&self, pid: i32, secret: i32) -> bool {
        let targets: Vec<CancelTarget> = self
            .sessions
            .lock()
            .ok()
            .and_then(|m| m.get(&(pid, secret)).cloned())
            .and_then(|slot| slot.lock().ok().map(|t| t.clone()))
            .unwrap_or_default();
        let mut sent = false;
        for t in targets {
            sent |= relay(t).await;
        }
        sent
    }
}

async fn relay(t: CancelTarget) -> bool {
    let mut buf = BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(t.pid, t.secret, &mut buf);
    let sent = match &t.addr {
        BackendAddr::Tcp(a) => match TcpStream::connect(a).await {
            Ok(s) => send_and_close(s, &buf).await,
            Err(e) => Err(e),
        },
        BackendAddr::Unix(p) => match UnixStream::connect(p).await {
            Ok(s) => send_and_close(s, &buf).await,
            Err(e) => Err(e),
        },
    };
    match sent {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(addr = %t.addr, error = %e, "cannot relay cancel request");
            false
        }
    }
}

/// Writes the request on a new connection to the backend's server, which closes it once it
/// has handled the request.
async fn send_and_close(mut s: impl AsyncWrite + Unpin, request: &[u8]) -> std::io::Result<()> {
    s.write_all(request).await?;
    let _ = s.shutdown().await;
    Ok(())
}
