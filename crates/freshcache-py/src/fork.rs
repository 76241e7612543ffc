//! `os.fork()` with caches open. A child has only the thread that forked; whatever lock
//! another thread held at that instant stays held in the child forever, and SQLite keeps
//! per-process state about every index file it has open (which locks this process holds on
//! it), which the child would inherit without holding those locks. So a child that opened
//! the same directory again could block for ever, or believe it holds a lock it does not and
//! read or write an index another process is rewriting.
//!
//! The package registers three hooks with `os.register_at_fork`. Before a fork, every cache
//! of this process is *parked*: new calls wait, calls under way finish (for at most
//! [`WAIT`]), and the cache is closed: its threads stopped, its index connections and Redis
//! connections closed, its write-behind queue committed. The child then starts with no
//! connection open, and can open any cache. After the fork, the parent opens each parked cache
//! again with the same configuration and clock, and the waiting calls go on (its memory tier
//! starts empty; the disk tier and Redis hold everything). The caches the child inherited are
//! refused there with `CacheClosed`.
//!
//! A cache that cannot be parked (a call still running after [`WAIT`], or a fork made from
//! inside one of its calls, such as a loader) stays open across the fork; the child then
//! refuses to open any cache, with an error that says why, rather than risk it. A fork the
//! hooks do not see (one made from C) is caught the same way: the child finds a cache of
//! another process still open.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::shared::Shared;

/// How long a fork waits for calls under way (and for caches being opened) to finish.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Forks seen by this process's copy of the module: the child hook bumps it. Calls compare it
/// first and `getpid` only on a change, so the hot path pays an atomic load, not a system call.
pub(crate) static FORKS: AtomicU64 = AtomicU64::new(0);
/// Every cache opened in this process (dropped ones are pruned as the list is read).
static LIVE: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());
/// From the `before` hook to the parent's `after` hook: caches about to open wait, and so
/// does a fork of another thread (its `before` hook), so that one fork's `after` hook never
/// opens caches again while another fork is about to copy the process.
static FORKING: AtomicBool = AtomicBool::new(false);
/// Caches being opened; the `before` hook waits until none is (each registers in [`LIVE`]
/// before it stops counting).
static OPENING: AtomicUsize = AtomicUsize::new(0);
/// Set by a `before` hook that stopped waiting for a cache still opening (its connections may
/// be open at the fork without being in [`LIVE`]); cleared after the fork in the parent. A
/// child inherits it set, and opens no cache.
static OPENING_AT_FORK: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The gates of the calls under way on this thread, by address (a loader may fork from
    /// inside one, or call its own cache again).
    static IN_CALL: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// True while this thread is inside a call of any cache.
fn in_any_call() -> bool {
    IN_CALL.with(|c| !c.borrow().is_empty())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Polls `done` until it holds or `wait` passes; true when it held.
pub(crate) fn wait_until(wait: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + wait;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Called before `os.fork()`: parks every cache of this process.
#[pyfunction]
pub fn _before_fork(py: Python<'_>) {
    // One fork at a time: another thread's fork finishes (its parent-side hook) first. Never
    // for ever: after twice the wait this fork goes ahead regardless.
    py.detach(|| {
        wait_until(2 * WAIT, || {
            FORKING
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })
    });
    FORKING.store(true, Ordering::SeqCst);
    // A cache still opening registers before it stops counting; one that gives up waiting
    // for this fork stops counting without opening.
    if !py.detach(|| wait_until(WAIT, || OPENING.load(Ordering::SeqCst) == 0)) {
        OPENING_AT_FORK.store(true, Ordering::SeqCst);
    }
    for shared in live() {
        shared.park(py);
    }
}

/// Called in the parent after `os.fork()`: opens the parked caches again.
#[pyfunction]
pub fn _after_fork_in_parent(py: Python<'_>) {
    for shared in live() {
        shared.resume(py);
    }
    OPENING_AT_FORK.store(false, Ordering::SeqCst);
    FORKING.store(false, Ordering::SeqCst);
}

/// Called in a child after `os.fork()`.
#[pyfunction]
pub fn _after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::SeqCst);
    FORKING.store(false, Ordering::SeqCst);
    OPENING.store(0, Ordering::SeqCst);
    freshcache::after_fork_in_child();
}

/// The caches of [`LIVE`] still alive.
fn live() -> Vec<Arc<Shared>> {
    let mut all = lock(&LIVE);
    all.retain(|w| w.strong_count() > 0);
    all.iter().filter_map(Weak::upgrade).collect()
}

/// A cache being opened: counted in [`OPENING`] until registered or dropped.
pub(crate) struct Opening(());

impl Opening {
    /// Waits out a fork under way, then counts this opening. Refuses in a child forked while
    /// a cache of its parent was still open (see the module docs).
    pub(crate) fn start() -> Result<Self, String> {
        loop {
            OPENING.fetch_add(1, Ordering::SeqCst);
            if !FORKING.load(Ordering::SeqCst) {
                break;
            }
            OPENING.fetch_sub(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
        }
        let opening = Self(());
        let me = std::process::id();
        // Asked first: when it is set, the registry's lock may have been held at the fork.
        let busy = OPENING_AT_FORK
            .load(Ordering::SeqCst)
            .then(|| "its parent".to_owned())
            .or_else(|| {
                live()
                    .iter()
                    .find(|s| s.pid != me && s.may_be_open())
                    .map(|s| format!("process {}", s.pid))
            });
        if let Some(parent) = busy {
            return Err(format!(
                "this process was forked from {parent} while a cache there was in use (a call \
                 under way for more than {}s, a fork from inside one of its calls such as a \
                 loader, a cache still opening, or a fork the package's hooks did not see); no \
                 cache can be opened safely in this process: fork before opening caches, or \
                 start workers with multiprocessing's 'spawn' or 'forkserver' method",
                WAIT.as_secs()
            ));
        }
        Ok(opening)
    }

    /// Registers the opened cache: from now on forks park it.
    pub(crate) fn register(self, shared: &Arc<Shared>) {
        lock(&LIVE).push(Arc::downgrade(shared));
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        OPENING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Lets calls through, or holds them while the cache is parked for a fork.
#[derive(Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    moved: Condvar,
}

#[derive(Default)]
struct GateState {
    calls: usize,
    parked: bool,
}

/// A call under way, counted until dropped.
pub(crate) struct Call<'g>(&'g Gate);

impl Gate {
    /// Waits while the cache is parked, then counts a call. A call made from inside another
    /// call of the same cache on this thread (a loader reading its own cache) goes through:
    /// the park waits for the outer call, which waits for this one.
    pub(crate) fn enter(&self) -> Call<'_> {
        let me = std::ptr::from_ref(self) as usize;
        let nested = IN_CALL.with(|c| c.borrow().contains(&me));
        let mut s = lock(&self.state);
        while s.parked && !nested {
            s = self.moved.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.calls += 1;
        drop(s);
        IN_CALL.with(|c| c.borrow_mut().push(me));
        Call(self)
    }

    /// Holds new calls and waits for those under way; false (and nothing held) when one is
    /// still under way after `wait`, or this thread is inside one (of any cache).
    pub(crate) fn park(&self, wait: Duration) -> bool {
        if in_any_call() {
            return false;
        }
        let mut s = lock(&self.state);
        s.parked = true;
        let (mut s, _) = self
            .moved
            .wait_timeout_while(s, wait, |s| s.calls > 0)
            .unwrap_or_else(PoisonError::into_inner);
        if s.calls > 0 {
            s.parked = false;
            self.moved.notify_all();
            return false;
        }
        true
    }

    /// Lets calls through again.
    pub(crate) fn unpark(&self) {
        let mut s = lock(&self.state);
        s.parked = false;
        self.moved.notify_all();
    }

    /// True while parked for a fork (asked only where the cache has no open state).
    pub(crate) fn is_parked(&self) -> bool {
        lock(&self.state).parked
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        let me = std::ptr::from_ref(self.0) as usize;
        IN_CALL.with(|c| {
            let mut calls = c.borrow_mut();
            if let Some(i) = calls.iter().rposition(|g| *g == me) {
                calls.remove(i);
            }
        });
        let mut s = lock(&self.0.state);
        s.calls -= 1;
        // Only a park waits for the count (a notify is a system call, on every call).
        if s.calls == 0 && s.parked {
            self.0.moved.notify_all();
        }
    }
}
