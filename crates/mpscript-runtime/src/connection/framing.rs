//! Framing: one message on an AF_UNIX stream socket, as CPython's `multiprocessing.connection`
//! frames it (a 4-byte big-endian signed length, or `-1` then an 8-byte length above
//! 2 GiB − 1), with any file descriptors riding on the first bytes as SCM_RIGHTS.
//!
//! Why raw `sendmsg`/`recvmsg`: the header, the payload and the fds go out in one call (one
//! syscall for a small message, and the kernel attaches the fds to the header bytes, so a
//! reader that takes the header takes the fds); and a reader never reads past the message it
//! was told the length of, so it never needs a user-space buffer that other processes
//! reading the same socket could not see.
//!
//! The caller holds the end's send (or receive) lock (see `mod.rs`); these functions only
//! move bytes. A bad length or an end of file inside a message is an error, never a panic, and
//! memory grows with the bytes that really arrive (a corrupt 2^60 length allocates nothing
//! until data comes).

use crate::errors::{mp_err, os_error, os_error_msg, ErrorKind, RtResult};
use nix::errno::Errno;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Most fds one message may carry (the kernel's SCM_MAX_FD).
pub const MAX_FDS: usize = 253;

/// Most payload pieces [`send_frame_parts`] takes.
pub const MAX_PARTS: usize = 3;

/// Largest length that fits the short header.
const SHORT_MAX: u64 = 0x7fff_ffff;

/// What one framed message gave.
pub struct Frame {
    /// The payload.
    pub bytes: Vec<u8>,
    /// File descriptors that arrived with it.
    pub fds: Vec<OwnedFd>,
}

/// The header for a payload of `n` bytes.
pub fn header(n: u64) -> ([u8; 12], usize) {
    let mut h = [0u8; 12];
    if n > SHORT_MAX {
        h[..4].copy_from_slice(&(-1i32).to_be_bytes());
        h[4..].copy_from_slice(&n.to_be_bytes());
        (h, 12)
    } else {
        h[..4].copy_from_slice(&(n as i32).to_be_bytes());
        (h, 4)
    }
}

/// Writes one whole frame: header, payload, fds (on the first bytes). EINTR before any byte
/// went out raises `KeyboardInterrupt` if Ctrl-C is pending; once a byte is out the frame is
/// always finished (a half frame would tear the stream for every reader).
pub fn send_frame(fd: RawFd, payload: &[u8], fds: &[RawFd]) -> RtResult<()> {
    send_frame_parts(fd, &[payload], fds)
}

/// Like [`send_frame`] for a payload given in pieces (at most [`MAX_PARTS`]), written with one
/// gathering `sendmsg`: a blob goes out straight from the script's buffer, behind its small
/// encoding prefix, with no copy into a message buffer.
pub fn send_frame_parts(fd: RawFd, parts: &[&[u8]], fds: &[RawFd]) -> RtResult<()> {
    if parts.len() > MAX_PARTS {
        return Err(os_error_msg("a frame has too many parts"));
    }
    if fds.len() > MAX_FDS {
        return Err(mp_err(
            ErrorKind::SendError,
            format!("a message can carry at most {MAX_FDS} handles' fds"),
        ));
    }
    let plen: usize = parts.iter().map(|p| p.len()).sum();
    let (h, hlen) = header(plen as u64);
    let total = hlen + plen;
    let mut sent = 0usize;
    while sent < total {
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_PARTS + 1];
        let mut n_iov = 0;
        // The pieces not yet (wholly) sent: the header, then each part.
        let mut start = 0usize;
        for piece in std::iter::once(&h[..hlen]).chain(parts.iter().copied()) {
            let end = start + piece.len();
            if sent < end && !piece.is_empty() {
                let from = sent.saturating_sub(start);
                iov[n_iov] = libc::iovec {
                    iov_base: piece[from..].as_ptr() as *mut libc::c_void,
                    iov_len: piece.len() - from,
                };
                n_iov += 1;
            }
            start = end;
        }
        let with_fds = sent == 0 && !fds.is_empty();
        // u64 words: control messages must be 8-aligned. Only a message with fds has one (no
        // allocation on the common path).
        let mut cbuf = if with_fds {
            vec![0u64; cmsg_space(fds.len()).div_ceil(8)]
        } else {
            Vec::new()
        };
        // SAFETY: msghdr is plain data; every pointer in it refers to a live local buffer.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = n_iov;
        if with_fds {
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = cmsg_space(fds.len()) as _;
            // SAFETY: the control buffer is CMSG_SPACE(fds) bytes, enough for one header and
            // the fd array; CMSG_FIRSTHDR of it is non-null.
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
        }
        // SAFETY: a valid msghdr over live buffers; MSG_NOSIGNAL turns SIGPIPE into EPIPE.
        let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
        if r < 0 {
            match Errno::last() {
                Errno::EINTR => {
                    if sent == 0 {
                        crate::signals::check_interrupt()?;
                    }
                    continue;
                }
                e => return Err(os_error(e, "send")),
            }
        }
        sent += r as usize;
    }
    Ok(())
}

fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic.
    unsafe { libc::CMSG_SPACE((n.max(1) * 4) as u32) as usize }
}

/// One `recvmsg` into `buf`, collecting any fds into `fds`. Returns bytes read (0 = EOF).
/// `block`: false adds MSG_DONTWAIT (EAGAIN comes back as `Ok(None)`).
/// One `recvmsg` into `buf`, collecting any fds that arrive (used by buffered readers).
pub fn recv_some(
    fd: RawFd,
    buf: &mut [std::mem::MaybeUninit<u8>],
    fds: &mut Vec<OwnedFd>,
    flags: i32,
) -> Result<usize, Errno> {
    // Not zeroed (it is 1 KB, per call): the kernel writes the control messages and sets
    // `msg_controllen` to their length, and only that much is read back.
    let mut cbuf = [std::mem::MaybeUninit::<u64>::uninit(); (64 + MAX_FDS * 4) / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: plain data, then pointers to live local buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: a valid msghdr; MSG_CMSG_CLOEXEC so received fds never leak into exec'd children.
    let r = unsafe { libc::recvmsg(fd, &mut msg, flags | libc::MSG_CMSG_CLOEXEC) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: walking the control messages the kernel wrote into our buffer.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let n = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..n {
                    let raw = std::ptr::read_unaligned((data as *const i32).add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(r as usize)
}

/// Reads exactly `buf.len()` bytes. `Ok(false)` on EOF before the first byte.
/// `first_wait`: how to wait for the first byte (see [`recv_frame`]).
///
/// Not MSG_WAITALL, though it would take a large body in one syscall: the bytes a blocked
/// WAITALL read has taken are not reported until it returns, so a receiver killed inside it
/// would leave a wrong skip count and the next receiver would lose the stream's framing.
fn read_exact(
    fd: RawFd,
    buf: &mut [std::mem::MaybeUninit<u8>],
    fds: &mut Vec<OwnedFd>,
    mut on_progress: impl FnMut(usize),
) -> RtResult<bool> {
    let mut got = 0;
    while got < buf.len() {
        match recv_some(fd, &mut buf[got..], fds, 0) {
            Ok(0) => {
                if got == 0 {
                    return Ok(false);
                }
                return Err(os_error_msg("got end of file during message"));
            }
            Ok(n) => {
                got += n;
                on_progress(n);
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(os_error(e, "recv")),
        }
    }
    Ok(true)
}

/// [`read_exact`] for the rest of a message's body, which is on its way (the sender holds the
/// send lock until the whole frame is out) and usually comes within µs: with `spin`, an empty
/// socket is busy-polled for its budget ([`crate::spin`]) before the read blocks. Why: a
/// reader blocked here is woken by the sender for every chunk (~32 KB) the kernel queues, a
/// wake-up the sender pays for and the reader waits ~25–30 µs for on a VM; measured on
/// `pipe_tput_1MiB`, 4.0k context switches for 400 MiB with blocking reads, 0.55k spinning.
fn read_body(
    fd: RawFd,
    buf: &mut [std::mem::MaybeUninit<u8>],
    fds: &mut Vec<OwnedFd>,
    spin: Option<&crate::spin::Spin>,
    mut on_progress: impl FnMut(usize),
) -> RtResult<bool> {
    use crate::spin::Spun;
    let Some(s) = spin.filter(|_| crate::spin::max_ns() > 0) else {
        return read_exact(fd, buf, fds, on_progress);
    };
    let mut got = 0;
    while got < buf.len() {
        let rest = &mut buf[got..];
        let r = match recv_some(fd, rest, fds, libc::MSG_DONTWAIT) {
            Err(Errno::EAGAIN) => {
                match s.spin(|| match recv_some(fd, rest, fds, libc::MSG_DONTWAIT) {
                    Err(Errno::EAGAIN) => None,
                    r => Some(r),
                }) {
                    Spun::Ready(r) => r,
                    Spun::Block(b) => {
                        let r = recv_some(fd, rest, fds, 0);
                        s.blocked(b);
                        r
                    }
                }
            }
            r => r,
        };
        match r {
            Ok(0) => {
                if got == 0 {
                    return Ok(false);
                }
                return Err(os_error_msg("got end of file during message"));
            }
            Ok(n) => {
                got += n;
                on_progress(n);
            }
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(e) => return Err(os_error(e, "recv")),
        }
    }
    Ok(true)
}

/// Waits (blocking the thread, Ctrl-C aware) until the socket has data or EOF.
pub fn wait_readable(fd: RawFd) -> RtResult<()> {
    loop {
        crate::signals::check_interrupt()?;
        if crate::waiting::has_background() {
            crate::waiting::wait_fds(None, &[fd], crate::waiting::Deadline::never())?;
            return Ok(());
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        if r >= 0 {
            return Ok(());
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(os_error(e, "poll")),
        }
    }
}

/// Reads one frame. `Ok(None)` on a clean EOF (no byte of a new message). `maxlength`: a
/// longer message is refused with `OSError("bad message length")` before its body is read.
/// `skip`: the shared count of bytes a receiver still had to read when it died; it is kept
/// current as the body arrives so the next receiver can resynchronise (see `mod.rs`).
pub fn recv_frame(
    fd: RawFd,
    maxlength: Option<u64>,
    skip: &std::sync::atomic::AtomicU64,
) -> RtResult<Option<Frame>> {
    Ok(recv_frame_split(fd, maxlength, skip, |_| 0, None, None)?.map(|(f, _)| f))
}

/// [`recv_frame`] for a wait that is usually answered within microseconds (a reply): it
/// busy-polls for `spin`'s budget before blocking (see [`crate::spin`]).
pub fn recv_frame_spin(
    fd: RawFd,
    maxlength: Option<u64>,
    skip: &std::sync::atomic::AtomicU64,
    spin: &crate::spin::Spin,
) -> RtResult<Option<Frame>> {
    Ok(recv_frame_split(fd, maxlength, skip, |_| 0, Some(spin), None)?.map(|(f, _)| f))
}

/// Most bytes [`recv_frame_split`] puts before the body.
pub const HEAD_MAX: usize = 16;

/// The first bytes of a payload, read apart from the rest by [`recv_frame_split`].
pub struct Head {
    buf: [u8; HEAD_MAX],
    len: usize,
}

impl Head {
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Like [`recv_frame`], but the first `head_len(length)` bytes of the payload (at most
/// [`HEAD_MAX`]) go into a [`Head`] and only the rest into `Frame::bytes`: a blob's encoding
/// prefix can be checked there and its bytes become the script's Blob without a copy.
/// `spin`: busy-poll for its budget before blocking for the first byte ([`crate::spin`]);
/// `body_spin`: the same while the rest of a message is on its way (see `read_body`).
pub fn recv_frame_split(
    fd: RawFd,
    maxlength: Option<u64>,
    skip: &std::sync::atomic::AtomicU64,
    head_len: impl FnOnce(u64) -> usize,
    spin: Option<&crate::spin::Spin>,
    body_spin: Option<&crate::spin::Spin>,
) -> RtResult<Option<(Frame, Head)>> {
    use crate::spin::Spun;
    use std::sync::atomic::Ordering;
    let mut fds = Vec::new();
    let mut h = [std::mem::MaybeUninit::<u8>::uninit(); 4];
    // Without background work to serve, a blocking read is the whole wait (one syscall; SIGINT
    // interrupts it with EINTR, as the handler has no SA_RESTART). With some, poll first.
    let block_flags = if crate::waiting::has_background() {
        libc::MSG_DONTWAIT
    } else {
        0
    };
    // With a spin, the first read does not block: on EAGAIN, non-blocking reads for the
    // budget, then the kernel wait as without.
    let mut spin = spin.filter(|_| crate::spin::max_ns() > 0);
    let mut flags = if spin.is_some() {
        libc::MSG_DONTWAIT
    } else {
        block_flags
    };
    let mut blocking = None;
    let first = loop {
        let mut r = recv_some(fd, &mut h, &mut fds, flags);
        if let (Err(Errno::EAGAIN), Some(s)) = (&r, spin.take()) {
            flags = block_flags;
            match s.spin(
                || match recv_some(fd, &mut h, &mut fds, libc::MSG_DONTWAIT) {
                    Err(Errno::EAGAIN) => None,
                    got => Some(got),
                },
            ) {
                Spun::Ready(got) => r = got,
                Spun::Block(b) => {
                    blocking = Some((s, b));
                    continue;
                }
            }
        }
        match r {
            Ok(n) => break n,
            Err(Errno::EAGAIN) => wait_readable(fd)?,
            Err(Errno::EINTR) => crate::signals::check_interrupt()?,
            Err(e) => return Err(os_error(e, "recv")),
        }
    };
    if let Some((s, b)) = blocking {
        s.blocked(b);
    }
    if first == 0 {
        return Ok(None);
    }
    if first < 4 && !read_exact(fd, &mut h[first..], &mut fds, |_| {})? {
        return Err(os_error_msg("got end of file during message"));
    }
    // SAFETY: all 4 bytes were written by recvmsg.
    let h: [u8; 4] = unsafe { std::mem::transmute(h) };
    let short = i32::from_be_bytes(h);
    let len: u64 = if short == -1 {
        let mut l = [std::mem::MaybeUninit::<u8>::uninit(); 8];
        if !read_exact(fd, &mut l, &mut fds, |_| {})? {
            return Err(os_error_msg("got end of file during message"));
        }
        // SAFETY: all 8 bytes were written.
        let l: [u8; 8] = unsafe { std::mem::transmute(l) };
        let n = u64::from_be_bytes(l);
        if n > isize::MAX as u64 {
            skip.store(n, Ordering::SeqCst);
            return Err(os_error_msg(format!("bad message length {n}")));
        }
        n
    } else if short < 0 {
        return Err(os_error_msg(format!("bad message length {short}")));
    } else {
        short as u64
    };
    skip.store(len, Ordering::SeqCst);
    if maxlength.is_some_and(|m| len > m) {
        return Err(os_error_msg("bad message length"));
    }
    let mut head = Head {
        buf: [0; HEAD_MAX],
        len: head_len(len).min(HEAD_MAX).min(len as usize),
    };
    if head.len > 0 {
        // SAFETY: u8 and MaybeUninit<u8> have the same layout; read_exact only writes bytes.
        let dst = unsafe {
            &mut *(&mut head.buf[..head.len] as *mut [u8] as *mut [std::mem::MaybeUninit<u8>])
        };
        if !read_exact(fd, dst, &mut fds, |n| {
            skip.fetch_sub(n as u64, Ordering::SeqCst);
        })? {
            return Err(os_error_msg("got end of file during message"));
        }
    }
    // Grow with what arrives: a corrupt huge length costs nothing until bytes come. Up to
    // ONCE the whole length is reserved at once (untouched pages cost nothing either, and a
    // 100 MiB message then is one mapping, not one grown and moved by `realloc`).
    const STEP: u64 = 64 << 20;
    const ONCE: u64 = 1 << 30;
    let mut left = len - head.len as u64;
    let mut bytes: Vec<u8> = Vec::new();
    if left > ONCE || bytes.try_reserve_exact(left as usize).is_err() {
        bytes = Vec::with_capacity(left.min(STEP) as usize);
    }
    while left > 0 {
        if bytes.capacity() == bytes.len() {
            bytes.reserve(left.min(bytes.len().max(STEP as usize) as u64) as usize);
        }
        let room = (bytes.capacity() - bytes.len()).min(left as usize);
        let spare = &mut bytes.spare_capacity_mut()[..room];
        if !read_body(fd, spare, &mut fds, body_spin, |n| {
            skip.fetch_sub(n as u64, Ordering::SeqCst);
        })? {
            return Err(os_error_msg("got end of file during message"));
        }
        // SAFETY: read_exact initialised exactly `room` more bytes.
        unsafe { bytes.set_len(bytes.len() + room) };
        left -= room as u64;
    }
    Ok(Some((Frame { bytes, fds }, head)))
}

/// Reads and drops `n` bytes (what a dead receiver left of its message), and any fds on them.
pub fn discard(fd: RawFd, mut n: u64, skip: &std::sync::atomic::AtomicU64) -> RtResult<()> {
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); (n.min(1 << 20)) as usize];
    let mut fds = Vec::new();
    while n > 0 {
        let k = (n as usize).min(buf.len());
        if !read_exact(fd, &mut buf[..k], &mut fds, |got| {
            skip.fetch_sub(got as u64, std::sync::atomic::Ordering::SeqCst);
        })? {
            return Ok(());
        }
        fds.clear();
        n -= k as u64;
    }
    Ok(())
}

/// Is there data (or EOF) to read within `timeout`? (Ctrl-C aware, services background work.)
pub fn poll_readable(fd: RawFd, timeout: Option<std::time::Duration>) -> RtResult<bool> {
    let ready = crate::waiting::wait_fds(None, &[fd], crate::waiting::Deadline::after(timeout))?;
    Ok(!ready.is_empty())
}
