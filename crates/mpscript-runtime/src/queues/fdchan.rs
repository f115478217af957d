//! The fd channel of a queue: where the fds of handles inside queued items wait, since a memfd
//! ring can hold bytes but not file descriptors.
//!
//! A unix stream socketpair owned by the queue: a producer (under the queue lock) sends one
//! 8-byte record, the item's tag, with the item's fds as SCM_RIGHTS on end B, so records are in
//! item order. A consumer (under the lock) peeks the first record (MSG_PEEK gives it copies of
//! the fds), drops stale records (tags below its item's: left by a producer that died before
//! committing, or a consumer that died after committing), commits its take, and only then
//! consumes the record, so a death at any point neither loses the fds of an item still queued
//! nor hands them to two takers. Sends never block (MSG_DONTWAIT): a full channel is an error
//! rather than a deadlock under the lock.

use crate::errors::{os_error, RtResult};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The channel's two ends (records are sent on `tx`, read from `rx`).
pub struct FdChan {
    tx: OwnedFd,
    rx: OwnedFd,
}

impl FdChan {
    /// A new channel.
    pub fn new() -> RtResult<FdChan> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (tx, rx) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| os_error(e, "socketpair"))?;
        Ok(FdChan { tx, rx })
    }

    /// The channel of a received queue.
    pub fn from_fds(tx: OwnedFd, rx: OwnedFd) -> FdChan {
        FdChan { tx, rx }
    }

    /// Its fds, to send the queue elsewhere.
    pub fn raw_fds(&self) -> (RawFd, RawFd) {
        (self.tx.as_raw_fd(), self.rx.as_raw_fd())
    }

    /// Sends the record `tag` with `fds`.
    pub fn send(&self, tag: u64, fds: &[RawFd]) -> RtResult<()> {
        if fds.len() > crate::connection::framing::MAX_FDS {
            return Err(crate::errors::mp_err(
                crate::errors::ErrorKind::SendError,
                "an item can carry at most 253 handles' fds",
            ));
        }
        let data = tag.to_le_bytes();
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: 8,
        };
        // SAFETY: CMSG_SPACE is arithmetic.
        let space = unsafe { libc::CMSG_SPACE((fds.len() * 4) as u32) } as usize;
        let mut cbuf = vec![0u8; space];
        // SAFETY: plain data, then pointers into live local buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the buffer holds one cmsg with room for the fds.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr() as *const u8,
                libc::CMSG_DATA(c),
                fds.len() * 4,
            );
        }
        loop {
            // SAFETY: a valid msghdr over live buffers.
            let r = unsafe {
                libc::sendmsg(
                    self.tx.as_raw_fd(),
                    &msg,
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if r == 8 {
                return Ok(());
            }
            let e = nix::errno::Errno::last();
            if r < 0 && e == nix::errno::Errno::EINTR {
                continue;
            }
            return Err(os_error(
                if r < 0 { e } else { nix::errno::Errno::EIO },
                "queue: too many handles waiting in this queue",
            ));
        }
    }

    /// Reads (peek: `true`) the first record: its tag and fds. `None` if there is none.
    fn first(&self, peek: bool) -> Option<(u64, Vec<OwnedFd>)> {
        let mut data = [0u8; 8];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: 8,
        };
        let mut cbuf = crate::connection::framing::CmsgBuf::new();
        // SAFETY: plain data, then pointers into live local buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.0.as_mut_ptr().cast();
        msg.msg_controllen = cbuf.0.len() as _;
        let flags =
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC | if peek { libc::MSG_PEEK } else { 0 };
        let r = loop {
            // SAFETY: a valid msghdr over live buffers.
            let r = unsafe { libc::recvmsg(self.rx.as_raw_fd(), &mut msg, flags) };
            if r < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                continue;
            }
            break r;
        };
        let mut fds = Vec::new();
        // SAFETY: walking control messages the kernel wrote into our buffer.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let n = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                    for i in 0..n {
                        let raw =
                            std::ptr::read_unaligned((libc::CMSG_DATA(c) as *const i32).add(i));
                        fds.push(OwnedFd::from_raw_fd(raw));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        (r == 8).then(|| (u64::from_le_bytes(data), fds))
    }

    /// The fds of the item tagged `tag` (copies: the record stays until [`consume`]); stale
    /// records before it are dropped. Empty if they are missing (the item then fails to
    /// decode with a clear error).
    ///
    /// [`consume`]: FdChan::consume
    pub fn take(&self, tag: u64) -> Vec<OwnedFd> {
        while let Some((t, fds)) = self.first(true) {
            if t < tag {
                drop(fds);
                let _ = self.first(false);
                continue;
            }
            if t == tag {
                return fds;
            }
            break;
        }
        Vec::new()
    }

    /// Drops the record tagged `tag` (and any stale one before it).
    pub fn consume(&self, tag: u64) {
        while let Some((t, fds)) = self.first(true) {
            drop(fds);
            if t > tag {
                break;
            }
            let _ = self.first(false);
        }
    }
}
