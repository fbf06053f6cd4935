//! Timers and background work, kept off the runtime that runs client sessions.
//!
//! Sessions run on a runtime built without tokio's time driver (`session_runtime`). With the
//! driver, every park of the runtime (several per transaction: one per client or backend
//! wake-up) locks the timer wheel, looks up its next deadline and reads the clock twice;
//! callgrind put that at about 7% of the router's instructions per pgbench transaction, while
//! the data path needs a timer only now and then (a login, a checkout that has to wait, a
//! backend connect or reset).
//!
//! Those timers live on one background thread instead, whose runtime owns the process's only
//! time driver. A sleep created through this module is registered there; when it fires, that
//! thread wakes the session task, across threads. The control plane (embedded Raft node or
//! remote follower) and the metrics endpoint run on the background runtime too, since they
//! use timers throughout. Backend and client sockets never do: a socket belongs to the
//! runtime that opened it, and a session's sockets must be woken by the thread that runs it.
//!
//! Any `tokio::time` call made directly on the session runtime panics ("timers are
//! disabled"), so the data path uses the functions here; the integration tests run sessions
//! on the same kind of runtime, so a stray call fails a test.

use std::future::{Future, IntoFuture};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, Sleep, Timeout};

/// The runtime for client sessions: `worker_threads` 1 is a current-thread runtime (the
/// default: one core's worth of sessions without cross-thread wake-ups), 0 one worker per core.
/// I/O only; timers go through this module.
pub fn session_runtime(worker_threads: usize) -> std::io::Result<Runtime> {
    let mut b = match worker_threads {
        1 => Builder::new_current_thread(),
        0 => Builder::new_multi_thread(),
        n => {
            let mut b = Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    b.enable_io().build()
}

/// The background runtime, started on first use; it lives as long as the process.
pub fn background() -> &'static Handle {
    static HANDLE: OnceLock<Handle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name("pg-router-background".into()).spawn(move || {
            let rt = match Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    // Nothing can run without it; say why rather than hang.
                    tracing::error!(error = %e, "cannot start the background runtime");
                    std::process::abort();
                }
            };
            let _ = tx.send(rt.handle().clone());
            rt.block_on(std::future::pending::<()>());
        });
        match spawned.ok().and_then(|_| rx.recv().ok()) {
            Some(h) => h,
            None => {
                tracing::error!("cannot start the background thread");
                std::process::abort();
            }
        }
    })
}

/// Runs `fut` on the background runtime.
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    background().spawn(fut)
}

/// `tokio::time::timeout`, with its timer on the background runtime.
pub fn timeout<F: IntoFuture>(duration: Duration, fut: F) -> Timeout<F::IntoFuture> {
    let _in = background().enter();
    tokio::time::timeout(duration, fut)
}

/// `tokio::time::timeout_at`, with its timer on the background runtime.
pub fn timeout_at<F: IntoFuture>(deadline: Instant, fut: F) -> Timeout<F::IntoFuture> {
    let _in = background().enter();
    tokio::time::timeout_at(deadline, fut)
}

/// `tokio::time::sleep`, with its timer on the background runtime.
pub fn sleep(duration: Duration) -> Sleep {
    let _in = background().enter();
    tokio::time::sleep(duration)
}

/// `tokio::time::interval`, with its timer on the background runtime.
pub fn interval(period: Duration) -> Interval {
    let _in = background().enter();
    tokio::time::interval(period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_work_on_a_runtime_without_a_time_driver() {
        let rt = session_runtime(1).unwrap();
        rt.block_on(async {
            let started = Instant::now();
            sleep(Duration::from_millis(20)).await;
            assert!(started.elapsed() >= Duration::from_millis(20));
            let slow = timeout(Duration::from_millis(10), std::future::pending::<()>()).await;
            assert!(slow.is_err(), "a pending future must time out");
            let fast = timeout(Duration::from_secs(5), async { 7 }).await;
            assert_eq!(fast.ok(), Some(7));
            let mut tick = interval(Duration::from_millis(5));
            tick.tick().await;
            tick.tick().await;
            // The session runtime itself has no timers: a direct call would panic.
            let direct = std::panic::catch_unwind(|| tokio::time::sleep(Duration::from_millis(1)));
            assert!(direct.is_err(), "the session runtime must not have a time driver");
        });
    }

    #[test]
    fn a_multi_thread_session_runtime_uses_the_same_timers() {
        let rt = session_runtime(2).unwrap();
        let woke = rt.block_on(async {
            tokio::spawn(async {
                timeout(Duration::from_millis(10), std::future::pending::<()>()).await.is_err()
            })
            .await
        });
        assert_eq!(woke.ok(), Some(true));
    }
}
