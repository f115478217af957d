//! Adaptive spin-then-block: a short, bounded busy-poll before a wait blocks in the kernel,
//! for waits that are usually answered within microseconds (a request/reply round trip).
//!
//! Why: on an idle core a blocked process is woken in ~25–30 µs on a VM (the core has to leave
//! its idle state), more than the whole work of a small message; a round trip pays that twice.
//! A process that checks its fd in a loop for a few tens of µs instead sees the reply as soon
//! as it is written. This is NOT a sleep loop: the loop only asks the kernel, non-blocking,
//! "is it readable yet?" (`poll(…, 0)` or a `MSG_DONTWAIT` read), yielding the CPU between
//! asks (`sched_yield`: the peer is often on the same CPU), for at most the budget; then the
//! caller blocks in the kernel exactly as it would have (deadlines, Ctrl-C and background work
//! unchanged: the busy-poll is bounded by the budget, a few tens of µs).
//!
//! The budget is adaptive per wait site (a [`Spin`] per connection), as Linux's KVM halt
//! polling: a spin that sees the event keeps the budget; a wait that blocked but ended within
//! the maximum budget (a longer spin would have caught it) grows it; a wait that blocked for
//! longer cuts it by 4 (to 0 in three steps), so an idle or overloaded machine wastes ~nothing.
//! At 0, one wait in [`PROBE_EVERY`] spins anyway, so a connection becomes hot again when its
//! peer starts answering quickly (two blocking peers never see a short wait: each one's wait
//! holds the other's wake-up).
//!
//! Off when this process may use only one CPU (`sched_getaffinity`: the peer could not run
//! while we spin) and tunable with `MPSCRIPT_SPIN_US` (the maximum budget in µs, `0` = off;
//! default [`DEFAULT_US`]). Read once per process.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The default maximum spin, in µs: above a VM's idle wake-up (~25–30 µs) plus a peer's work
/// for a small message.
pub const DEFAULT_US: u32 = 50;

/// Largest `MPSCRIPT_SPIN_US` honoured (a longer busy-poll is never a good trade).
const MAX_US: u32 = 1000;

/// At budget 0, one wait in this many spins anyway (see the module docs).
pub const PROBE_EVERY: u32 = 16;

/// A budget under this (ns) is not worth a spin: it becomes 0.
const MIN_NS: u32 = 2_000;

/// The maximum budget in ns for this process (0 = spinning off).
pub fn max_ns() -> u32 {
    static MAX: OnceLock<u32> = OnceLock::new();
    *MAX.get_or_init(|| {
        let us = match std::env::var("MPSCRIPT_SPIN_US") {
            Ok(v) => v.trim().parse::<u32>().unwrap_or(DEFAULT_US).min(MAX_US),
            Err(_) => DEFAULT_US,
        };
        if us == 0 || usable_cpus() < 2 {
            0
        } else {
            us * 1000
        }
    })
}

/// CPUs this process may run on (1 if the kernel will not say).
fn usable_cpus() -> usize {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return 1;
        }
        libc::CPU_COUNT(&set) as usize
    }
}

/// The adaptive budget of one wait site (see the module docs). Cheap: two atomics.
#[derive(Debug)]
pub struct Spin {
    /// Current budget in ns (≤ [`max_ns`]); `u32::MAX` = not set yet (starts at the maximum).
    budget: AtomicU32,
    /// Waits since the budget fell to 0 (for the periodic probe).
    cold: AtomicU32,
}

impl Default for Spin {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`Spin::spin`] gave: the probe's value, or the start of a wait that must now block.
pub enum Spun<T> {
    /// The probe succeeded while spinning (or at once).
    Ready(T),
    /// Block in the kernel now, then hand this to [`Spin::blocked`].
    Block(Blocking),
}

/// A wait that went on to block (timing for the adaptation).
#[must_use = "hand it to Spin::blocked once the wait ended"]
pub struct Blocking {
    start: Option<Instant>,
}

impl Spin {
    /// A new site, starting at the maximum budget.
    pub const fn new() -> Spin {
        Spin {
            budget: AtomicU32::new(u32::MAX),
            cold: AtomicU32::new(0),
        }
    }

    /// The budget this wait spins for, in ns (0 = block at once).
    fn budget_now(&self, max: u32) -> u32 {
        let b = self.budget.load(Ordering::Relaxed).min(max);
        if b > 0 {
            return b;
        }
        let n = self.cold.fetch_add(1, Ordering::Relaxed);
        if n % PROBE_EVERY == PROBE_EVERY - 1 {
            max
        } else {
            0
        }
    }

    /// Calls `probe` until it gives a value or the budget is spent. `probe` must not block.
    pub fn spin<T>(&self, mut probe: impl FnMut() -> Option<T>) -> Spun<T> {
        let max = max_ns();
        if max == 0 {
            return Spun::Block(Blocking { start: None });
        }
        let budget = self.budget_now(max);
        let start = Instant::now();
        if budget > 0 {
            let limit = Duration::from_nanos(budget as u64);
            loop {
                if let Some(v) = probe() {
                    if start.elapsed() > limit * 2 {
                        // Caught, but only after this process lost its CPU for long (a loaded
                        // machine): count it as a long wait.
                        self.blocked(Blocking { start: Some(start) });
                    } else {
                        // Caught: the site is hot.
                        self.budget.store(max, Ordering::Relaxed);
                        self.cold.store(0, Ordering::Relaxed);
                    }
                    return Spun::Ready(v);
                }
                if start.elapsed() >= limit {
                    break;
                }
                // The peer is often on this very CPU (the kernel puts a waker and its wakee
                // together: 0 migrations in `perf stat` of a ping-pong): a pure spin only
                // delays it by the whole budget. A yield lets it run at once, and costs one
                // syscall when this CPU has nothing else to run.
                // SAFETY: no arguments; only gives up the rest of this time slice.
                unsafe { libc::sched_yield() };
            }
        }
        Spun::Block(Blocking { start: Some(start) })
    }

    /// Records how long a wait that blocked took in all (call when the awaited event came, or
    /// the wait ended otherwise: a timeout counts as a long wait).
    pub fn blocked(&self, b: Blocking) {
        let Some(start) = b.start else { return };
        let max = max_ns();
        let waited = start.elapsed();
        let cur = self.budget.load(Ordering::Relaxed).min(max);
        let next = if waited <= Duration::from_nanos(max as u64) {
            // A longer spin would have caught it.
            (cur.saturating_mul(2)).max(max / 4).min(max)
        } else {
            let b = cur / 4;
            if b < MIN_NS {
                0
            } else {
                b
            }
        };
        if next > 0 {
            self.cold.store(0, Ordering::Relaxed);
        }
        self.budget.store(next, Ordering::Relaxed);
    }

    /// Spins until one of `fds` is readable (or hung up): `true` if one became so within the
    /// budget. Otherwise the caller blocks and reports with [`Spin::blocked`].
    pub fn spin_fds(&self, fds: &[RawFd]) -> Spun<()> {
        self.spin(|| readable_now(fds).then_some(()))
    }
}

/// Is one of `fds` readable (or hung up / in error) right now? (`poll` with a zero timeout.)
pub fn readable_now(fds: &[RawFd]) -> bool {
    let mut p = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 8];
    let mut ok = false;
    for chunk in fds.chunks(p.len()) {
        for (slot, &fd) in p.iter_mut().zip(chunk) {
            slot.fd = fd;
            slot.revents = 0;
        }
        // SAFETY: `chunk.len()` valid pollfds in a local array; timeout 0 never blocks.
        let r = unsafe { libc::poll(p.as_mut_ptr(), chunk.len() as libc::nfds_t, 0) };
        ok |= r > 0;
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapts_down_on_long_waits_and_up_on_success() {
        if max_ns() == 0 {
            return; // one CPU or MPSCRIPT_SPIN_US=0: nothing to adapt
        }
        let s = Spin::new();
        // Never ready: spins the budget, then reports a long wait.
        for _ in 0..4 {
            match s.spin(|| None::<()>) {
                Spun::Ready(_) => panic!("a probe that never succeeds cannot be ready"),
                Spun::Block(mut b) => {
                    b.start = b.start.map(|t| t - Duration::from_secs(1));
                    s.blocked(b);
                }
            }
        }
        assert_eq!(s.budget.load(Ordering::Relaxed), 0);
        // Cold: most waits do not spin at all (the probe is not even called).
        let mut calls = 0;
        let _ = s.spin(|| {
            calls += 1;
            None::<()>
        });
        assert_eq!(calls, 0);
        // A success (on a periodic probe) makes it hot again.
        for _ in 0..PROBE_EVERY {
            if let Spun::Ready(()) = s.spin(|| Some(())) {
                break;
            }
        }
        assert_eq!(s.budget.load(Ordering::Relaxed), max_ns());
    }
}
