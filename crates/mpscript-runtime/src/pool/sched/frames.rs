//! The scheduler's side of the worker sockets: task batches framed and written without
//! blocking (a partial frame waits for the socket to drain), result frames read and decoded in
//! place, and the one `poll` per service round that says which sockets to read and which
//! workers died. Split from [`super`] (the dealing, deaths and lifecycle) by concept.

use super::{Chunk, Scheduler};
use crate::errors::RtResult;
use rhai::{Array, Dynamic};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// A frame partly written to a worker's socket.
pub(super) struct OutFrame {
    pub(super) bytes: Vec<u8>,
    pub(super) fds: Vec<RawFd>,
    /// Where the frame starts in `bytes` (the fds go with its first byte).
    pub(super) start: usize,
    pub(super) off: usize,
}

impl Scheduler {
    pub(super) fn send_batch(&mut self, i: usize, batch: Vec<Chunk>) -> RtResult<()> {
        // The frame is encoded in place, straight from the chunks (no `Dynamic` message is
        // built, nothing is copied): room for the longest header and the two u32 counts,
        // then the units and the batch; the header is written last, right before the body.
        const ROOM: usize = 12 + 8;
        let units = crate::program::units_since(self.workers[i].gen);
        let mut e = crate::wire::Encoder::with_bytes("args", Vec::with_capacity(256));
        e.bytes.resize(ROOM, 0);
        if units.is_empty() {
            e.array_header(0);
        } else {
            let units_val: Array = units
                .iter()
                .map(|u| Dynamic::from_array(vec![u.name.clone().into(), u.source.clone().into()]))
                .collect();
            e.value(&units_val.into())?;
        }
        let ulen = e.bytes.len() - ROOM;
        // A chunk's reply may wait in the worker for the next chunk's (see `worker::Outbox`)
        // only when that next chunk is of the same map job: the wait is then for work the job
        // needs anyway, and nobody sees a map's results before it is complete.
        // A function the previous chunk of the batch already named (with the same star) travels
        // as `()` and the worker reuses its own: with chunksize 1 it was encoded, decoded and
        // looked up per task.
        // Each chunk: `[id, f or (), star, items, defer]`.
        e.array_header(batch.len());
        for k in 0..batch.len() {
            let c = &batch[k];
            let defer = {
                let mut job = c.job.data();
                job.running = true;
                job.kind == super::super::JobKind::Map
                    && batch.get(k + 1).is_some_and(|n| n.job == c.job)
            };
            let same_f = k > 0 && {
                let (a, b) = (&batch[k - 1].f, &c.f);
                a.fn_name() == b.fn_name()
                    && a.curry().is_empty()
                    && b.curry().is_empty()
                    && batch[k - 1].star == c.star
            };
            e.enter(k);
            e.array_header(5);
            e.int(c.id as i64);
            if same_f {
                e.unit();
            } else {
                e.fnptr(&c.f)?;
            }
            e.bool(c.star);
            e.enter(3);
            e.array(&c.items)?;
            e.leave();
            e.bool(defer);
            e.leave();
        }
        let (mut bytes, fds) = (e.bytes, e.fds);
        let len = bytes.len() - 12;
        let (h, hl) = crate::connection::framing::header(len as u64);
        let start = 12 - hl;
        bytes[start..12].copy_from_slice(&h[..hl]);
        bytes[12..16].copy_from_slice(&(ulen as u32).to_le_bytes());
        bytes[16..20].copy_from_slice(&(fds.len() as u32).to_le_bytes());
        let w = &mut self.workers[i];
        w.gen += units.len();
        for c in batch {
            w.outstanding.push(c.id);
            w.out_items += c.items.len();
            w.sent += 1;
            self.inflight.insert(c.id, c);
        }
        w.out = Some(OutFrame {
            bytes,
            fds,
            start,
            off: start,
        });
        self.flush(i);
        Ok(())
    }

    /// Writes what the socket takes now of a worker's partial frame (never blocks).
    pub(super) fn flush(&mut self, i: usize) {
        let w = &mut self.workers[i];
        let (Some(out), Some(sock)) = (w.out.as_mut(), w.sock.as_ref()) else {
            return;
        };
        while out.off < out.bytes.len() {
            let fds: &[RawFd] = if out.off == out.start { &out.fds } else { &[] };
            match send_some(sock.as_raw_fd(), &out.bytes[out.off..], fds) {
                Ok(n) => out.off += n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return, // EAGAIN: later; EPIPE: the death is noticed by its pidfd
            }
        }
        w.out = None;
    }

    /// Reads results and notices deaths, without blocking. Returns true if anything happened.
    /// One `poll` over every socket and pidfd says which need reading: a service round with
    /// nothing new costs one syscall, not two per worker.
    pub fn service_io(&mut self) -> bool {
        let mut progressed = false;
        if !self.is_owner() || self.workers.is_empty() {
            return false;
        }
        let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(2 * self.workers.len());
        for w in &self.workers {
            for fd in [w.sock.as_ref().map_or(-1, |s| s.as_raw_fd()), w.pidfd] {
                pfds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
        // SAFETY: `pfds` is a valid array of pollfds (negative fds are ignored); zero timeout.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 0) };
        if r <= 0 {
            return false; // nothing ready (EINTR: the next round looks again)
        }
        let ready =
            |p: &libc::pollfd| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
        let flags: Vec<(bool, bool)> = pfds
            .chunks(2)
            .map(|p| (ready(&p[0]), ready(&p[1])))
            .collect();
        let mut removed = 0;
        for (k, (readable, dead)) in flags.into_iter().enumerate() {
            let i = k - removed; // a dead worker is removed: the later ones shift down
            if readable || dead {
                progressed |= self.read_available(i); // with a death: results written before it
            }
            if dead {
                progressed = true;
                self.on_death(i);
                removed += 1;
            }
        }
        progressed
    }

    /// Reads whatever a worker's socket holds (never blocks) and handles whole frames.
    pub(super) fn read_available(&mut self, i: usize) -> bool {
        let mut progressed = false;
        let Some(fd) = self.workers[i].sock.as_ref().map(|s| s.as_raw_fd()) else {
            return false;
        };
        loop {
            let w = &mut self.workers[i];
            let mut fds = Vec::new();
            w.inbuf.reserve(64 * 1024);
            let spare = w.inbuf.spare_capacity_mut();
            match crate::connection::framing::recv_some(fd, spare, &mut fds, libc::MSG_DONTWAIT) {
                Ok(0) => {
                    // EOF: the worker is exiting; its pidfd tells when.
                    w.sock = None;
                    break;
                }
                Ok(n) => {
                    // SAFETY: recvmsg initialised n more bytes.
                    unsafe { w.inbuf.set_len(w.inbuf.len() + n) };
                    w.infds.extend(fds);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break, // EAGAIN: nothing more now
            }
        }
        // Whole frames: [len][nfds u32][wire bytes], decoded in place (the buffer is taken
        // out of the worker for the loop, so no frame is copied).
        let inbuf = std::mem::take(&mut self.workers[i].inbuf);
        let mut at = 0;
        loop {
            let buf = &inbuf[at..];
            let Some((hl, len)) = frame_len(buf) else {
                break;
            };
            if buf.len() < hl + len || len < 4 {
                break;
            }
            let payload = &buf[hl..hl + len];
            at += hl + len;
            let nfds =
                u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
            let w = &mut self.workers[i];
            let fds: Vec<OwnedFd> = (0..nfds).filter_map(|_| w.infds.pop_front()).collect();
            self.on_results(i, &payload[4..], fds);
            progressed = true;
        }
        self.workers[i].inbuf = inbuf;
        self.workers[i].inbuf.drain(..at);
        progressed
    }

    pub(super) fn on_results(&mut self, i: usize, bytes: &[u8], fds: Vec<OwnedFd>) {
        // `[id, true, values]` (every task succeeded) or `[id, false, [[ok, value], ...]]`,
        // read field by field: the values land in one vector, no `Dynamic` arrays around them.
        // A malformed reply is ignored whole (its chunk stays in flight), as before.
        let mut d = crate::wire::Decoder::new(bytes, fds, None);
        let read = |d: &mut crate::wire::Decoder| -> Result<(i64, bool, Vec<Dynamic>), String> {
            if d.array_header()? != 3 {
                return Err("bad reply".into());
            }
            let (id, all_ok) = (d.int()?, d.bool()?);
            let n = d.array_header()?;
            let mut rs = Vec::with_capacity(n);
            for _ in 0..n {
                rs.push(d.value()?);
            }
            Ok((id, all_ok, rs))
        };
        let Ok((id, all_ok, rs)) = read(&mut d) else {
            return;
        };
        if !d.at_end() {
            return;
        }
        let id = id as u64;
        let Some(chunk) = self.inflight.remove(&id) else {
            return;
        };
        let w = &mut self.workers[i];
        w.outstanding.retain(|&c| c != id);
        w.out_items = w.out_items.saturating_sub(chunk.items.len());
        let mut job = chunk.job.data();
        let mut complete = false;
        for (k, r) in rs.into_iter().enumerate() {
            let outcome = if all_ok {
                Ok(r)
            } else {
                let mut entry = r.try_cast::<Array>().unwrap_or_default().into_iter();
                let ok = entry.next().and_then(|b| b.as_bool().ok()).unwrap_or(false);
                let v = entry.next().unwrap_or_default();
                if ok {
                    Ok(v)
                } else {
                    Err(v)
                }
            };
            complete |= job.set(chunk.start + k, outcome);
        }
        if complete {
            job.running = false;
            let cbs = job.take_callbacks();
            drop(job);
            self.queue_callbacks(&chunk.job, cbs);
        }
    }
}

fn send_some(fd: RawFd, bytes: &[u8], fds: &[RawFd]) -> Result<usize, nix::errno::Errno> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [std::io::IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(
        fd,
        &iov,
        cmsgs,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
}

/// The header of a frame at the start of `buf`: (header length, payload length).
pub(crate) fn frame_len(buf: &[u8]) -> Option<(usize, usize)> {
    let short = i32::from_be_bytes(buf.get(..4)?.try_into().ok()?);
    if short == -1 {
        let long = u64::from_be_bytes(buf.get(4..12)?.try_into().ok()?);
        Some((12, usize::try_from(long).ok()?))
    } else {
        Some((4, usize::try_from(short).ok()?))
    }
}
