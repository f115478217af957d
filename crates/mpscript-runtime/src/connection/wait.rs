//! `wait_ready(objects, timeout)`: CPython's `multiprocessing.connection.wait` over
//! connections, queues and process sentinels (ints), returning the ready ones.
//!
//! One `poll` through [`crate::waiting::wait_fds`] (so Ctrl-C and background work are served):
//! a connection is ready when it has data or EOF, a sentinel when its pidfd is readable, a
//! queue when `get` would not block (its "not empty" eventfd, armed while someone waits).

use super::Connection;
use crate::errors::{type_error, RtResult};
use crate::queues::{JoinableQueue, Queue, QueueCore, SimpleQueue};
use crate::waiting::{wait_fds, Deadline};
use rhai::{Array, Dynamic, NativeCallContext};
use std::os::fd::RawFd;
use std::sync::Arc;

enum Item {
    Fd(RawFd),
    Queue(Arc<QueueCore>),
}

fn item_of(v: &Dynamic) -> RtResult<Item> {
    if let Some(c) = v.read_lock::<Connection>() {
        return c
            .raw_fd()
            .filter(|_| c.readable())
            .map(Item::Fd)
            .ok_or_else(|| {
                crate::errors::os_error_msg("wait_ready: a connection is closed or write-only")
            });
    }
    if let Ok(i) = v.as_int() {
        if i < 0 || i > i32::MAX as i64 {
            return Err(crate::errors::value_error(format!(
                "wait_ready: bad fd {i}"
            )));
        }
        return Ok(Item::Fd(i as RawFd));
    }
    if let Some(q) = v.read_lock::<Queue>() {
        return Ok(Item::Queue(q.core()?));
    }
    if let Some(q) = v.read_lock::<SimpleQueue>() {
        return Ok(Item::Queue(q.core()?));
    }
    if let Some(q) = v.read_lock::<JoinableQueue>() {
        return Ok(Item::Queue(q.core()?));
    }
    Err(type_error(format!(
        "wait_ready accepts connections, queues and sentinels (ints), not {}",
        crate::wire::script_type_name(v)
    )))
}

/// `wait_ready(objects, timeout)`: the subset of `objects` that are ready, in their order.
pub fn wait_ready(
    ctx: Option<&NativeCallContext>,
    objects: &Array,
    timeout: Option<std::time::Duration>,
) -> RtResult<Array> {
    let items: Vec<Item> = objects.iter().map(item_of).collect::<RtResult<_>>()?;
    // Queues that already have items are ready without waiting.
    let mut now_ready: Vec<usize> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        if let Item::Queue(q) = it {
            if !q.is_empty()? {
                now_ready.push(i);
            }
        }
    }
    let deadline = if now_ready.is_empty() {
        Deadline::after(timeout)
    } else {
        Deadline::after(Some(std::time::Duration::ZERO))
    };
    let _guards: Vec<crate::queues::WaitGuard> = items
        .iter()
        .filter_map(|it| match it {
            Item::Queue(q) => Some(q.begin_get_wait()),
            Item::Fd(_) => None,
        })
        .collect::<RtResult<_>>()?;
    let fds: Vec<RawFd> = items
        .iter()
        .map(|it| match it {
            Item::Fd(fd) => *fd,
            Item::Queue(q) => q.get_fd(),
        })
        .collect();
    let ready = wait_fds(ctx, &fds, deadline)?;
    let mut out = Array::new();
    for (i, v) in objects.iter().enumerate() {
        let r = match &items[i] {
            // The eventfd may be stale for a moment: ask the queue itself.
            Item::Queue(q) => !q.is_empty()?,
            Item::Fd(_) => ready.contains(&i),
        };
        if r {
            out.push(v.clone());
        }
    }
    Ok(out)
}
