//! Time as the cache sees it: an injected [`Clock`] returning UTC [`Timestamp`]s.
//!
//! Every freshness decision reads the clock once per operation and passes `now` down, so a
//! [`ManualClock`] moved by tests decides expiry exactly as the system clock does in production.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};

use rustix::time::ClockId;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A wall-clock UTC instant, in milliseconds since the Unix epoch.
///
/// Stored timestamps outlive the process (they go to disk and, later, Redis), so they are
/// wall-clock rather than monotonic. Arithmetic saturates instead of panicking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp from milliseconds since the Unix epoch.
    #[must_use]
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// A timestamp from whole seconds since the Unix epoch.
    #[must_use]
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This instant moved forward by `d`, saturating at the far future.
    #[must_use]
    #[inline]
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(whole_millis(d)))
    }

    /// This instant moved back by `d`, saturating at the epoch.
    #[must_use]
    #[inline]
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(whole_millis(d)))
    }

    /// The time from `earlier` to `self`, or zero when `earlier` is later.
    #[must_use]
    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// As a [`SystemTime`], for formatting HTTP dates.
    #[must_use]
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }

    /// From a [`SystemTime`]; instants before the epoch clamp to it.
    #[must_use]
    pub fn from_system_time(t: SystemTime) -> Self {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self(ms)
    }
}

/// `d` in whole milliseconds, saturating (without the 128-bit `Duration::as_millis`: this runs
/// on every lookup's deadline).
#[inline]
fn whole_millis(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = humantime::format_rfc3339_millis(self.to_system_time());
        write!(f, "{t}")
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current UTC instant.
    fn now(&self) -> Timestamp;

    /// A monotonic reading: time since a fixed origin of this clock, never going back. Waits
    /// and throttles that decide something (a lease's lapse, how often free space is measured)
    /// use it, so a manual clock moves them too. Real time for every clock but
    /// [`ManualClock`].
    fn monotonic(&self) -> Duration {
        process_origin().elapsed()
    }
}

/// The instant the process first asked for a monotonic reading.
fn process_origin() -> std::time::Instant {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(std::time::Instant::now)
}

/// How long ago the kernel stamped a file time (`modified`): file times come from the host's
/// real clock, so their age is measured on that clock, never on an injected one (comparing a
/// kernel stamp with a test's manual time would say nothing). `None` for a time in the future.
#[must_use]
pub fn file_age(stamped: SystemTime) -> Option<Duration> {
    SystemTime::now().duration_since(stamped).ok()
}

/// Measures how long some work took, in real time, for latency metrics and reports only:
/// nothing about an entry is ever decided by it.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch(std::time::Instant);

impl Stopwatch {
    /// Starts measuring.
    #[inline]
    #[must_use]
    pub fn start() -> Self {
        Self(std::time::Instant::now())
    }

    /// Real time since [`Stopwatch::start`].
    #[inline]
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// The system's wall clock, as seen by a process that never lets it run backwards.
///
/// It follows the wall clock forward (an NTP correction forward, time spent suspended), but
/// when the wall clock steps back it keeps counting real elapsed time from where it was
/// instead. A clock that ran slow would make every entry look younger than it is and serve it
/// past its lifetime; one that runs ahead only expires entries early. All `SystemClock`s of a
/// process share this view. A process started after a step back starts from the stepped
/// clock: entries stamped later than that are misses (see [`crate::Meta::is_future_stamped_at`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Timestamp {
        WATCHER.call_once(watch_wall_clock);
        let elapsed = clock_nanos(ClockId::Boottime);
        let nanos = if WATCHED.load(Ordering::Acquire) {
            // One clock read per lookup: the watcher keeps OFFSET current.
            elapsed.saturating_add(OFFSET.load(Ordering::Relaxed))
        } else {
            never_back(&OFFSET, clock_nanos(ClockId::Realtime), elapsed)
        };
        Timestamp(nanos / 1_000_000)
    }
}

/// The largest `wall - boot time` seen, in nanoseconds: `now = boot time + OFFSET`. Boot time
/// counts real time (suspend included) and is slewed with the wall clock, so the difference
/// changes only when the wall clock is set. Kept in nanoseconds so that processes on one host
/// agree on the current millisecond (an offset rounded to milliseconds would put two
/// processes up to 1 ms apart, and a stamp 1 ms in a reader's future is not served).
static OFFSET: AtomicU64 = AtomicU64::new(0);
/// True while a thread keeps [`OFFSET`] current: then `now` reads one clock, not two (the
/// clock reads are most of a memory hit's cost).
static WATCHED: AtomicBool = AtomicBool::new(false);
static WATCHER: Once = Once::new();

/// In a process forked from one that read the system clock: the watcher thread was not
/// copied, so `now` goes back to reading both clocks (the offset it kept stays, and never
/// moves back).
pub(crate) fn forget_watcher() {
    WATCHED.store(false, Ordering::Release);
}

/// `clock` in nanoseconds (0 before its epoch; saturates in the year 2554).
#[inline]
fn clock_nanos(clock: ClockId) -> u64 {
    let t = rustix::time::clock_gettime(clock);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let ns = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(ns)
}

/// Moves [`OFFSET`] forward to the wall clock (never back). Boot time is read first, so the
/// offset errs by the gap between the reads towards a clock slightly ahead (entries expire
/// nanoseconds early), never behind.
fn resync_offset() {
    let elapsed = clock_nanos(ClockId::Boottime);
    never_back(&OFFSET, clock_nanos(ClockId::Realtime), elapsed);
}

/// Starts the thread that follows the wall clock being set: a timer armed far in the future
/// with cancel-on-set, whose read returns as soon as the wall clock is set (stepped by NTP, by
/// hand, on resume). Where that cannot be had, `now` reads both clocks every time.
fn watch_wall_clock() {
    use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
    resync_offset();
    let Ok(fd) = timerfd_create(TimerfdClockId::Realtime, TimerfdFlags::CLOEXEC) else {
        return;
    };
    if !arm_cancel_on_set(&fd) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("freshcache-clock".into())
        .spawn(move || {
            loop {
                let mut buf = [0u8; 8];
                match rustix::io::read(&fd, &mut buf) {
                    Ok(_) | Err(rustix::io::Errno::CANCELED | rustix::io::Errno::INTR) => {}
                    Err(_) => break,
                }
                // Re-armed before reading the clocks, so a set in between is not missed.
                if !arm_cancel_on_set(&fd) {
                    break;
                }
                resync_offset();
            }
            WATCHED.store(false, Ordering::Release);
        });
    if spawned.is_ok() {
        // The timer was armed before this resync: any later set wakes the thread.
        resync_offset();
        WATCHED.store(true, Ordering::Release);
    }
}

/// Arms `fd` to expire in year 2255 (never, in practice) and to be cancelled when the wall
/// clock is set. An absolute time is what cancel-on-set needs; a far one never fires, even
/// for a process whose clock is faked into the past.
fn arm_cancel_on_set(fd: &rustix::fd::OwnedFd) -> bool {
    use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
    let never = Itimerspec {
        it_interval: Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: Timespec {
            tv_sec: 9_000_000_000,
            tv_nsec: 0,
        },
    };
    timerfd_settime(
        fd,
        TimerfdTimerFlags::ABSTIME | TimerfdTimerFlags::CANCEL_ON_SET,
        &never,
    )
    .is_ok()
}

/// Wall time that never runs slower than `elapsed` (a monotonic count, in the same unit):
/// `elapsed + offset`, where `offset` is the largest `wall - elapsed` seen so far.
fn never_back(offset: &AtomicU64, wall: u64, elapsed: u64) -> u64 {
    let seen = wall.saturating_sub(elapsed);
    let mut off = offset.load(Ordering::Relaxed);
    // Written only when the wall clock moved ahead of the monotonic count: no shared write per
    // reading.
    if seen > off {
        off = offset.fetch_max(seen, Ordering::Relaxed).max(seen);
    }
    elapsed.saturating_add(off)
}

/// A clock that moves only when told to; cloning shares the same time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    now_ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock standing at `start`.
    #[must_use]
    pub fn new(start: Timestamp) -> Self {
        Self {
            now_ms: Arc::new(AtomicU64::new(start.as_millis())),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .now_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
                Some(cur.saturating_add(ms))
            });
    }

    /// Sets the clock to `t`, which may be earlier than now (a wall clock stepping back).
    pub fn set(&self, t: Timestamp) {
        self.now_ms.store(t.as_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now_ms.load(Ordering::SeqCst))
    }

    /// The manual time itself: waits measured on this clock end only when a test moves it.
    fn monotonic(&self) -> Duration {
        Duration::from_millis(self.now_ms.load(Ordering::SeqCst))
    }
}

/// A clock shared by the cache and its tiers (tests hand in a [`ManualClock`] this way).
pub type SharedClock = Arc<dyn Clock>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_time() {
        let clock = ManualClock::new(Timestamp::from_secs(100));
        let other = clock.clone();
        assert_eq!(clock.now(), Timestamp::from_secs(100));
        other.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), Timestamp::from_millis(101_500));
        clock.set(Timestamp::from_secs(5));
        assert_eq!(other.now(), Timestamp::from_secs(5));
    }

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        let t = Timestamp::from_millis(10);
        assert_eq!(t.saturating_sub(Duration::from_secs(1)), Timestamp::EPOCH);
        assert_eq!(
            Timestamp::from_millis(u64::MAX).saturating_add(Duration::from_secs(1)),
            Timestamp::from_millis(u64::MAX)
        );
        assert_eq!(t.duration_since(Timestamp::from_secs(1)), Duration::ZERO);
        assert_eq!(
            Timestamp::from_secs(2).duration_since(t),
            Duration::from_millis(1990)
        );
    }

    #[test]
    fn a_wall_clock_stepping_back_does_not_move_the_system_view_back() {
        let offset = AtomicU64::new(0);
        let hour = 3_600_000;
        let t0 = 1_700_000_000_000;
        assert_eq!(never_back(&offset, t0, 10), t0);
        assert_eq!(never_back(&offset, t0 + 1_000, 1_010), t0 + 1_000);
        // The wall clock steps back an hour: real time keeps counting from where it was.
        assert_eq!(never_back(&offset, t0 + 2_000 - hour, 2_010), t0 + 2_000);
        assert_eq!(never_back(&offset, t0 + 3_000 - hour, 3_010), t0 + 3_000);
        // A step forward (or time spent suspended, when the monotonic count stops) is followed.
        assert_eq!(never_back(&offset, t0 + 2 * hour, 4_010), t0 + 2 * hour);
        assert_eq!(
            never_back(&offset, t0 + 2 * hour + 500, 4_510),
            t0 + 2 * hour + 500
        );
        // Nonsense inputs saturate instead of panicking.
        assert_eq!(never_back(&AtomicU64::new(u64::MAX), 0, u64::MAX), u64::MAX);
        assert_eq!(never_back(&AtomicU64::new(0), 0, 5), 5);
    }

    #[test]
    fn system_clock_reads_one_clock_tracks_the_wall_clock_and_never_goes_back() {
        let first = SystemClock.now();
        assert!(
            WATCHED.load(Ordering::Acquire),
            "the wall-clock watcher should run here (timerfd with cancel-on-set)"
        );
        let mut last = first;
        for _ in 0..100_000 {
            let t = SystemClock.now();
            assert!(t >= last, "{t} after {last}");
            last = t;
        }
        let wall = Timestamp::from_system_time(SystemTime::now());
        let ours = SystemClock.now();
        let gap = wall.as_millis().abs_diff(ours.as_millis());
        assert!(
            gap <= 2,
            "system clock {ours} is {gap} ms from the wall clock {wall}"
        );
    }

    #[test]
    fn system_clock_is_after_2020_and_displays_as_rfc3339() {
        let now = SystemClock.now();
        assert!(now > Timestamp::from_secs(1_577_836_800));
        assert_eq!(
            Timestamp::from_secs(1_700_000_000).to_string(),
            "2023-11-14T22:13:20.000Z"
        );
    }
}
