//! `Event`: a flag word in shared memory; `wait` sleeps in `FUTEX_WAIT` on the word and `set`
//! wakes every sleeper. The word is `generation << 1 | flag`: each `set` of a clear event
//! starts a generation, so a waiter woken by a `set` that was `clear`ed again at once still
//! returns (with false, as CPython's Event.wait does after `set(); clear()`), and `set` (only when the waiter counter says there are some, so `set` with
//! nobody waiting is one store). Simpler and cheaper than CPython's Condition + Semaphore.

use super::{deadline_of, wait_word, Kind, SharedObject};
use crate::errors::RtResult;
use crate::wire::{self, Decoder, Encoder, HandleCodec};
use rhai::Dynamic;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An `Event` handle.
#[derive(Clone)]
pub struct Event {
    obj: Arc<SharedObject>,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        self.obj.id() == o.obj.id()
    }
}

impl Event {
    /// `Event()`: not set.
    pub fn new() -> RtResult<Event> {
        Ok(Event {
            obj: SharedObject::new(Kind::Event, 8, false)?,
        })
    }

    fn flag(&self) -> &AtomicU32 {
        self.obj.word(0)
    }

    fn waiters(&self) -> &AtomicU32 {
        self.obj.word(4)
    }

    /// `is_set()`.
    pub fn is_set(&self) -> bool {
        self.flag().load(Ordering::SeqCst) & 1 != 0
    }

    /// `set()`: wakes every waiter.
    pub fn set(&self) {
        let f = self.flag();
        let mut w = f.load(Ordering::SeqCst);
        loop {
            if w & 1 != 0 {
                return;
            }
            let next = (w | 1).wrapping_add(2);
            match f.compare_exchange_weak(w, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        if self.waiters().load(Ordering::SeqCst) > 0 {
            crate::shm::futex_wake(self.flag(), i32::MAX as u32);
        }
    }

    /// `clear()`.
    pub fn clear(&self) {
        self.flag().fetch_and(!1, Ordering::SeqCst);
    }

    /// `wait(timeout)`: the flag when it returns (false: the timeout passed).
    pub fn wait(&self, timeout: Option<Duration>) -> RtResult<bool> {
        if self.is_set() {
            return Ok(true);
        }
        let deadline = deadline_of(true, timeout);
        self.waiters().fetch_add(1, Ordering::SeqCst);
        let start = self.flag().load(Ordering::SeqCst);
        let r = (|| loop {
            let w = self.flag().load(Ordering::SeqCst);
            if w & 1 != 0 {
                return Ok(true);
            }
            if w >> 1 != start >> 1 {
                return Ok(false); // set and cleared again while we slept
            }
            if !wait_word(self.flag(), w, deadline)? {
                return Ok(self.is_set());
            }
        })();
        self.waiters().fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// CPython's repr: `<Event(set=False)>`... shown as `<Event set=false>`.
    pub fn repr(&self) -> String {
        format!("<Event set={}>", self.is_set())
    }
}

fn enc(v: &Dynamic, e: &mut Encoder) -> Result<(), String> {
    v.clone()
        .try_cast::<Event>()
        .ok_or("not an Event")?
        .obj
        .encode(e);
    Ok(())
}

fn dec(d: &mut Decoder) -> Result<Dynamic, String> {
    let (obj, _) = SharedObject::decode(d, &[Kind::Event])?;
    Ok(Dynamic::from(Event { obj }))
}

/// Makes Event sendable.
pub fn register_codecs() {
    wire::register_handle::<Event>(HandleCodec {
        name: "Event",
        encode: enc,
        decode: dec,
    });
}
