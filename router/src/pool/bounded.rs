//! A bounded connection pool, built for the per-transaction checkout on the data path.
//!
//! At most `max_size` connections exist. A checkout takes the most recently returned idle
//! connection (LIFO, as PgBouncer: only as many backends stay hot as the load needs), opens a
//! new one while below the bound, or queues (FIFO) until a connection is returned or a slot
//! frees, up to a deadline. A returned connection goes straight to the first live waiter.
//!
//! The fast path is one uncontended mutex and no clock read: the pool is checked out and
//! returned to once per transaction, so it must cost next to nothing.
//!
//! Invariant: `State::size` counts every connection that exists or is being made: idle ones,
//! checked-out ones and slots granted to a checkout that is still connecting. It only drops
//! when a connection is discarded and no waiter takes its slot over. Everything that holds a
//! counted connection or slot is a guard ([`Pooled`], [`Slot`]) whose drop gives it back, so a
//! checkout cancelled at any await point (a client that goes away, a timeout) leaks nothing.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How a pool makes and checks its connections.
pub trait Manage: Send + Sync + 'static {
    type Conn: Send + 'static;
    type Error: Send + 'static;

    /// Opens a connection (with its own connect timeout).
    fn create(&self) -> impl Future<Output = Result<Self::Conn, Self::Error>> + Send;

    /// Makes a pooled connection ready for its next user; false discards it. `idle_for` is
    /// how long it sat in the pool (zero when handed straight over), `now` the checkout time.
    fn recycle(
        &self,
        conn: &mut Self::Conn,
        idle_for: Duration,
        now: Instant,
    ) -> impl Future<Output = bool> + Send;

    /// Whether `recycle` would keep the connection without doing anything to it: the checkout
    /// can then skip the asynchronous path ([`Pool::try_get`]).
    fn reusable_as_is(&self, conn: &Self::Conn, idle_for: Duration, now: Instant) -> bool;
}

/// Why a checkout failed.
#[derive(Debug)]
pub enum PoolError<E> {
    /// No connection became available before the deadline.
    Timeout,
    /// Opening a new connection failed.
    Create(E),
}

/// A cheap handle; clones share the pool.
pub struct Pool<M: Manage> {
    inner: Arc<Inner<M>>,
}

impl<M: Manage> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

struct Inner<M: Manage> {
    manager: M,
    max_size: usize,
    state: Mutex<State<M>>,
}

struct State<M: Manage> {
    /// Returned connections, the most recent last.
    idle: Vec<Idle<M::Conn>>,
    size: usize,
    waiters: VecDeque<oneshot::Sender<Grant<M>>>,
}

struct Idle<C> {
    conn: C,
    since: Instant,
}

/// What a waiting checkout is given.
enum Grant<M: Manage> {
    /// A connection just returned.
    Conn(Pooled<M>),
    /// Room to open a new connection.
    Slot(Slot<M>),
}

/// Point-in-time counts, for gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    pub size: usize,
    pub idle: usize,
    pub waiting: usize,
}

impl<M: Manage> Pool<M> {
    pub fn new(manager: M, max_size: usize) -> Self {
        let state = State { idle: Vec::new(), size: 0, waiters: VecDeque::new() };
        Self { inner: Arc::new(Inner { manager, max_size: max_size.max(1), state: Mutex::new(state) }) }
    }

    pub fn manager(&self) -> &M {
        &self.inner.manager
    }

    /// Checks out a connection, waiting at most `wait` for one to become available (opening
    /// or recycling one is bounded by the manager's own timeouts).
    pub async fn get(&self, wait: Duration) -> Result<Pooled<M>, PoolError<M::Error>> {
        self.get_at(wait, Instant::now()).await
    }

    /// [`Pool::get`], where the caller read the clock already (`now`): an idle connection
    /// ready at once is checked against its limits as of `now`.
    pub async fn get_at(&self, wait: Duration, now: Instant) -> Result<Pooled<M>, PoolError<M::Error>> {
        let mut now = Some(now);
        let mut deadline: Option<Instant> = None;
        loop {
            let step = {
                let mut st = self.inner.lock();
                if let Some(idle) = st.idle.pop() {
                    Step::Reuse(idle)
                } else if st.size < self.inner.max_size {
                    st.size += 1;
                    Step::Open(Slot { pool: Some(self.inner.clone()) })
                } else {
                    let (tx, rx) = oneshot::channel();
                    // Waiters that gave up stay queued until someone pops them; keep the
                    // queue from growing without bound under repeated timeouts.
                    if st.waiters.len() >= self.inner.max_size * 4 {
                        st.waiters.retain(|w| !w.is_closed());
                    }
                    st.waiters.push_back(tx);
                    Step::Wait(rx)
                }
            };
            // While it is recycled, the connection is held apart from its slot: if the
            // checkout is cancelled mid-way (the client left during a DISCARD ALL), the
            // connection is closed rather than returned with a reply still unread.
            let (mut conn, slot, idle_since) = match step {
                Step::Reuse(idle) => (idle.conn, Slot { pool: Some(self.inner.clone()) }, Some(idle.since)),
                Step::Open(slot) => return self.open(slot).await,
                Step::Wait(rx) => {
                    let start = now.take().unwrap_or_else(Instant::now);
                    let at = *deadline.get_or_insert(start + wait);
                    match crate::timer::timeout_at(at.into(), rx).await {
                        Err(_) => return Err(PoolError::Timeout),
                        // The grant was dropped unsent; look again.
                        Ok(Err(_)) => continue,
                        Ok(Ok(Grant::Slot(slot))) => return self.open(slot).await,
                        Ok(Ok(Grant::Conn(pooled))) => match pooled.into_parts() {
                            Some((conn, slot)) => (conn, slot, None),
                            None => continue,
                        },
                    }
                }
            };
            // After a wait or a failed recycle, `now` has passed.
            let now = now.take().unwrap_or_else(Instant::now);
            let idle_for = idle_since.map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
            if self.inner.manager.recycle(&mut conn, idle_for, now).await {
                return Ok(slot.fill(conn));
            }
            // Not reusable: close it; its slot goes to a waiter or is freed. Look again.
            drop(conn);
            drop(slot);
        }
    }

    async fn open(&self, slot: Slot<M>) -> Result<Pooled<M>, PoolError<M::Error>> {
        // On error (or cancellation) the slot is dropped, which frees it.
        let conn = self.inner.manager.create().await.map_err(PoolError::Create)?;
        Ok(slot.fill(conn))
    }

    /// The most recently returned idle connection, if it can be used as it is (see
    /// [`Manage::reusable_as_is`]); otherwise `None` and the pool is unchanged. The common
    /// checkout, without the asynchronous machinery of [`Pool::get_at`].
    pub fn try_get(&self, now: Instant) -> Option<Pooled<M>> {
        let conn = {
            let mut st = self.inner.lock();
            let idle = st.idle.last()?;
            let idle_for = now.saturating_duration_since(idle.since);
            if !self.inner.manager.reusable_as_is(&idle.conn, idle_for, now) {
                return None;
            }
            st.idle.pop()?.conn
        };
        Some(Slot { pool: Some(self.inner.clone()) }.fill(conn))
    }

    /// Opens one more connection into the idle list if the pool is below `min` connections.
    /// Returns false when there was nothing to do.
    pub async fn fill_to(&self, min: usize) -> Result<bool, M::Error> {
        let slot = {
            let mut st = self.inner.lock();
            if st.size >= min.min(self.inner.max_size) {
                return Ok(false);
            }
            st.size += 1;
            Slot { pool: Some(self.inner.clone()) }
        };
        let conn = self.inner.manager.create().await?;
        drop(slot.fill(conn));
        Ok(true)
    }

    /// Closes idle connections for which `discard(conn, idle_for)` holds, oldest first, while
    /// more than `min` connections exist. Returns how many were closed.
    pub fn evict(&self, min: usize, mut discard: impl FnMut(&M::Conn, Duration) -> bool) -> usize {
        let now = Instant::now();
        let closed: Vec<M::Conn> = {
            let mut st = self.inner.lock();
            let mut closed = Vec::new();
            let mut kept = Vec::with_capacity(st.idle.len());
            let idle = std::mem::take(&mut st.idle);
            for entry in idle {
                if st.size > min && discard(&entry.conn, now.saturating_duration_since(entry.since)) {
                    st.size -= 1;
                    closed.push(entry.conn);
                } else {
                    kept.push(entry);
                }
            }
            st.idle = kept;
            closed
        };
        // Closed outside the lock.
        closed.len()
    }

    pub fn status(&self) -> Status {
        let st = self.inner.lock();
        let waiting = st.waiters.iter().filter(|w| !w.is_closed()).count();
        Status { size: st.size, idle: st.idle.len(), waiting }
    }
}

enum Step<M: Manage> {
    Reuse(Idle<M::Conn>),
    Open(Slot<M>),
    Wait(oneshot::Receiver<Grant<M>>),
}

impl<M: Manage> Inner<M> {
    fn lock(&self) -> MutexGuard<'_, State<M>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first waiter still waiting, if any.
    fn next_waiter(st: &mut State<M>) -> Option<oneshot::Sender<Grant<M>>> {
        while let Some(w) = st.waiters.pop_front() {
            if !w.is_closed() {
                return Some(w);
            }
        }
        None
    }

    /// A checked-out connection comes back (at `now`): to the first waiter, or to the idle
    /// list.
    fn put_back(self: &Arc<Self>, conn: M::Conn, now: Option<Instant>) {
        let mut conn = conn;
        loop {
            let waiter = {
                let mut st = self.lock();
                match Self::next_waiter(&mut st) {
                    Some(w) => w,
                    None => {
                        st.idle.push(Idle { conn, since: now.unwrap_or_else(Instant::now) });
                        return;
                    }
                }
            };
            // Sent outside the lock: if the waiter is gone, the grant comes back here rather
            // than being dropped (which would re-enter the pool).
            match waiter.send(Grant::Conn(Pooled { conn: Some(conn), pool: self.clone() })) {
                Ok(()) => return,
                Err(Grant::Conn(mut back)) => match back.conn.take() {
                    Some(c) => conn = c,
                    None => return,
                },
                // Not what was sent; nothing to recover.
                Err(Grant::Slot(slot)) => {
                    slot.disarm();
                    return;
                }
            }
        }
    }

    /// A counted connection was discarded: its slot goes to the first waiter, or is freed.
    fn release_slot(self: &Arc<Self>) {
        loop {
            let waiter = {
                let mut st = self.lock();
                match Self::next_waiter(&mut st) {
                    Some(w) => w,
                    None => {
                        st.size = st.size.saturating_sub(1);
                        return;
                    }
                }
            };
            match waiter.send(Grant::Slot(Slot { pool: Some(self.clone()) })) {
                Ok(()) => return,
                // The waiter left: the slot is still ours to pass on.
                Err(Grant::Slot(slot)) => slot.disarm(),
                Err(Grant::Conn(mut back)) => {
                    // Not what was sent; give it back without counting it twice.
                    if let Some(c) = back.conn.take() {
                        self.put_back(c, None);
                    }
                    return;
                }
            }
        }
    }
}

/// Room for one connection, counted in the pool's size. Dropping it frees the room.
pub struct Slot<M: Manage> {
    pool: Option<Arc<Inner<M>>>,
}

impl<M: Manage> Slot<M> {
    /// The slot now holds `conn`.
    fn fill(mut self, conn: M::Conn) -> Pooled<M> {
        let pool = self.pool.take();
        match pool {
            Some(pool) => Pooled { conn: Some(conn), pool },
            // A slot always has its pool until filled or disarmed; neither happened.
            None => unreachable_slot(),
        }
    }

    /// Forgets the slot without freeing it (its count moves elsewhere).
    fn disarm(mut self) {
        self.pool = None;
    }
}

#[cold]
fn unreachable_slot() -> ! {
    unreachable!("a pool slot is used once")
}

impl<M: Manage> Drop for Slot<M> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.release_slot();
        }
    }
}

/// A checked-out connection. Dropping it returns it to the pool; [`Pooled::take`] detaches
/// it (dropping the detached connection closes it).
pub struct Pooled<M: Manage> {
    conn: Option<M::Conn>,
    pool: Arc<Inner<M>>,
}

impl<M: Manage> Pooled<M> {
    /// The connection and its slot, apart (the connection no longer returns to the pool by
    /// itself).
    fn into_parts(mut self) -> Option<(M::Conn, Slot<M>)> {
        let conn = self.conn.take()?;
        Some((conn, Slot { pool: Some(self.pool.clone()) }))
    }

    /// Returns the connection to the pool, as dropping the guard does, where the caller read
    /// the clock already (`now`).
    pub fn release_at(mut this: Self, now: Instant) {
        if let Some(conn) = this.conn.take() {
            this.pool.put_back(conn, Some(now));
        }
    }

    /// Removes the connection from the pool for good, freeing its slot.
    pub fn take(mut this: Self) -> M::Conn {
        let conn = this.conn.take();
        this.pool.release_slot();
        match conn {
            Some(c) => c,
            // Only `take` and `drop` empty it, and both consume the guard.
            None => unreachable_slot(),
        }
    }
}

impl<M: Manage> Deref for Pooled<M> {
    type Target = M::Conn;
    fn deref(&self) -> &M::Conn {
        match &self.conn {
            Some(c) => c,
            None => unreachable_slot(),
        }
    }
}

impl<M: Manage> DerefMut for Pooled<M> {
    fn deref_mut(&mut self) -> &mut M::Conn {
        match &mut self.conn {
            Some(c) => c,
            None => unreachable_slot(),
        }
    }
}

impl<M: Manage> Drop for Pooled<M> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Numbered dummy connections; `broken` ones fail recycling.
    #[derive(Default)]
    struct Counter {
        made: AtomicUsize,
        fail_create: std::sync::atomic::AtomicBool,
    }

    struct Dummy {
        id: usize,
        broken: bool,
    }

    impl Manage for Arc<Counter> {
        type Conn = Dummy;
        type Error = &'static str;
        async fn create(&self) -> Result<Dummy, &'static str> {
            if self.fail_create.load(Ordering::SeqCst) {
                return Err("refused");
            }
            tokio::task::yield_now().await;
            Ok(Dummy { id: self.made.fetch_add(1, Ordering::SeqCst), broken: false })
        }
        async fn recycle(&self, conn: &mut Dummy, _idle_for: Duration, _now: Instant) -> bool {
            !conn.broken
        }
        fn reusable_as_is(&self, conn: &Dummy, _idle_for: Duration, _now: Instant) -> bool {
            !conn.broken
        }
    }

    #[tokio::test]
    async fn try_get_takes_an_idle_connection_that_needs_nothing() {
        let (p, _) = pool(2);
        assert!(p.try_get(Instant::now()).is_none(), "nothing idle yet");
        let a = p.get(WAIT).await.unwrap();
        let b = p.get(WAIT).await.unwrap();
        let (a_id, b_id) = (a.id, b.id);
        drop(a);
        drop(b);
        // The most recently returned first, as `get` does.
        let got = p.try_get(Instant::now()).unwrap();
        assert_eq!(got.id, b_id);
        assert_eq!((p.status().size, p.status().idle), (2, 1));
        drop(got);
        let mut other = p.try_get(Instant::now()).unwrap();
        assert_eq!(other.id, b_id);
        other.broken = true;
        drop(other);
        // A connection that needs recycling stays for `get`, which closes this one.
        assert!(p.try_get(Instant::now()).is_none());
        assert_eq!(p.status().idle, 2);
        assert_eq!(p.get(WAIT).await.unwrap().id, a_id);
    }

    fn pool(max: usize) -> (Pool<Arc<Counter>>, Arc<Counter>) {
        let c = Arc::new(Counter::default());
        (Pool::new(c.clone(), max), c)
    }

    const WAIT: Duration = Duration::from_secs(5);

    /// A checkout of a full pool, queued (the task has run up to its wait).
    async fn queue_waiter(
        p: &Pool<Arc<Counter>>,
    ) -> tokio::task::JoinHandle<Result<usize, PoolError<&'static str>>> {
        let p = p.clone();
        let waiter = tokio::spawn(async move { p.get(WAIT).await.map(|c| c.id) });
        tokio::task::yield_now().await;
        waiter
    }

    #[tokio::test]
    async fn reuses_the_most_recently_returned_connection() {
        let (p, made) = pool(4);
        let a = p.get(WAIT).await.unwrap();
        let b = p.get(WAIT).await.unwrap();
        let (ida, idb) = (a.id, b.id);
        drop(a);
        drop(b);
        assert_eq!(p.get(WAIT).await.unwrap().id, idb, "LIFO");
        assert_eq!(made.made.load(Ordering::SeqCst), 2);
        assert_eq!(p.status(), Status { size: 2, idle: 2, waiting: 0 });
        let _ = ida;
    }

    #[tokio::test]
    async fn a_waiter_gets_the_returned_connection() {
        let (p, _) = pool(1);
        let held = p.get(WAIT).await.unwrap();
        let id = held.id;
        let waiter = queue_waiter(&p).await;
        assert_eq!(p.status().waiting, 1);
        drop(held);
        assert_eq!(waiter.await.unwrap().unwrap(), id);
        assert_eq!(p.status(), Status { size: 1, idle: 1, waiting: 0 });
    }

    #[tokio::test]
    async fn a_full_pool_times_out_and_recovers() {
        let (p, _) = pool(1);
        let held = p.get(WAIT).await.unwrap();
        assert!(matches!(p.get(Duration::from_millis(50)).await, Err(PoolError::Timeout)));
        drop(held);
        // The timed-out waiter is skipped, the connection goes idle and is reused.
        assert_eq!(p.status(), Status { size: 1, idle: 1, waiting: 0 });
        assert!(p.get(WAIT).await.is_ok());
    }

    #[tokio::test]
    async fn a_discarded_connection_frees_its_slot_for_a_waiter() {
        let (p, made) = pool(1);
        let held = p.get(WAIT).await.unwrap();
        let waiter = queue_waiter(&p).await;
        let _closed: Dummy = Pooled::take(held);
        // The waiter opened a new connection in the freed slot.
        assert_eq!(waiter.await.unwrap().unwrap(), 1);
        assert_eq!(made.made.load(Ordering::SeqCst), 2);
        assert_eq!(p.status().size, 1);
    }

    #[tokio::test]
    async fn a_connection_that_fails_recycling_is_replaced() {
        let (p, _) = pool(2);
        let mut c = p.get(WAIT).await.unwrap();
        c.broken = true;
        drop(c);
        let fresh = p.get(WAIT).await.unwrap();
        assert_eq!(fresh.id, 1);
        assert_eq!(p.status(), Status { size: 1, idle: 0, waiting: 0 });
    }

    #[tokio::test]
    async fn a_failed_create_frees_its_slot() {
        let (p, made) = pool(1);
        made.fail_create.store(true, Ordering::SeqCst);
        assert!(matches!(p.get(WAIT).await, Err(PoolError::Create("refused"))));
        assert_eq!(p.status().size, 0);
        made.fail_create.store(false, Ordering::SeqCst);
        assert!(p.get(WAIT).await.is_ok());
    }

    #[tokio::test]
    async fn a_cancelled_checkout_leaks_nothing() {
        let (p, _) = pool(1);
        let held = p.get(WAIT).await.unwrap();
        let waiter = queue_waiter(&p).await;
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        assert_eq!(p.status(), Status { size: 1, idle: 1, waiting: 0 });
        // A create cancelled mid-way gives its slot back too.
        let (p, _) = pool(1);
        let mut fut = Box::pin(p.get(WAIT));
        assert!(futures_poll_once(fut.as_mut()).await.is_none());
        assert_eq!(p.status().size, 1);
        drop(fut);
        assert_eq!(p.status().size, 0);
    }

    #[tokio::test]
    async fn a_checkout_cancelled_while_recycling_closes_the_connection() {
        struct Slow;
        impl Manage for Slow {
            type Conn = Arc<()>;
            type Error = ();
            async fn create(&self) -> Result<Arc<()>, ()> {
                Ok(Arc::new(()))
            }
            async fn recycle(&self, _conn: &mut Arc<()>, _idle_for: Duration, _now: Instant) -> bool {
                std::future::pending::<()>().await;
                true
            }
            fn reusable_as_is(&self, _conn: &Arc<()>, _idle_for: Duration, _now: Instant) -> bool {
                false
            }
        }
        let p = Pool::new(Slow, 1);
        let conn = p.get(WAIT).await.unwrap();
        drop(conn);
        assert!(p.try_get(Instant::now()).is_none(), "needs recycling: not taken as it is");
        assert_eq!((p.status().size, p.status().idle), (1, 1), "the pool is unchanged");
        drop(p);

        let p = Pool::new(Slow, 1);
        let conn = p.get(WAIT).await.unwrap();
        let probe = Arc::downgrade(&*conn);
        drop(conn);
        let mut fut = Box::pin(p.get(WAIT));
        assert!(futures_poll_once(fut.as_mut()).await.is_none(), "recycling never finishes");
        drop(fut);
        assert!(probe.upgrade().is_none(), "the half-recycled connection was closed");
        assert_eq!(p.status(), Status { size: 0, idle: 0, waiting: 0 });
    }

    /// Polls a future once.
    async fn futures_poll_once<F: Future + Unpin>(mut f: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| match std::pin::Pin::new(&mut f).poll(cx) {
            std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await
    }

    #[tokio::test]
    async fn eviction_keeps_the_minimum() {
        let (p, _) = pool(4);
        let conns: Vec<_> = [(); 3].iter().map(|_| p.get(WAIT)).collect();
        let mut held = Vec::new();
        for c in conns {
            held.push(c.await.unwrap());
        }
        drop(held);
        assert_eq!(p.evict(1, |_, _| true), 2);
        assert_eq!(p.status(), Status { size: 1, idle: 1, waiting: 0 });
        assert!(p.fill_to(3).await.unwrap());
        assert!(p.fill_to(2).await.is_ok_and(|filled| !filled));
        assert_eq!(p.status(), Status { size: 2, idle: 2, waiting: 0 });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_checkouts_never_exceed_the_bound() {
        let (p, made) = pool(3);
        let in_use = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (p, in_use) = (p.clone(), in_use.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..200 {
                    let c = p.get(WAIT).await.unwrap();
                    assert!(in_use.fetch_add(1, Ordering::SeqCst) < 3);
                    tokio::task::yield_now().await;
                    in_use.fetch_sub(1, Ordering::SeqCst);
                    drop(c);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(made.made.load(Ordering::SeqCst), 3);
        assert_eq!(p.status(), Status { size: 3, idle: 3, waiting: 0 });
    }
}
