//! `Listener` and `Client`: sockets between programs (TCP or Unix), with Python's authkey
//! handshake, giving Connections whose values travel as pickles of plain data.
//!
//! The listener never trusts a peer: the handshake runs with socket timeouts (a client that
//! connects and never speaks is dropped after a few seconds), a wrong key raises
//! `AuthenticationError` from that `accept` only (the listener goes on), and its connections
//! refuse frames over a limit (64 MiB by default), closing that connection with an error.

use crate::connection::Connection;
use crate::errors::{mp_err, os_error, type_error, ErrorKind, RtResult};
use rhai::{Array, Dynamic, NativeCallContext};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest frame a Listener's connection accepts by default.
pub const DEFAULT_MAX_FRAME: u64 = 64 << 20;
/// How long the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed address.
#[derive(Clone, Debug, PartialEq)]
pub enum Addr {
    /// `host:port` (host may be empty: all interfaces).
    Tcp(String, u16),
    /// A Unix socket path.
    Unix(String),
}

/// Reads `"host:port"`, `[host, port]`, or a Unix path.
pub fn parse_addr(v: &Dynamic) -> RtResult<Addr> {
    if let Some(a) = v.read_lock::<Array>() {
        if let [h, p] = a.as_slice() {
            let port = p
                .as_int()
                .ok()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| type_error("a port is an int from 0 to 65535"))?;
            return Ok(Addr::Tcp(h.to_string(), port));
        }
        return Err(type_error("an address array is [host, port]"));
    }
    let s = v
        .clone()
        .into_string()
        .map_err(|t| type_error(format!("an address is a string or [host, port], not {t}")))?;
    if let Some((h, p)) = s.rsplit_once(':') {
        if let Ok(port) = p.parse::<u16>() {
            if !h.contains('/') {
                return Ok(Addr::Tcp(h.trim_matches(['[', ']']).to_string(), port));
            }
        }
    }
    Ok(Addr::Unix(s))
}

fn io_err(e: std::io::Error, what: &str) -> Box<rhai::EvalAltResult> {
    match e.raw_os_error() {
        Some(n) => os_error(nix::errno::Errno::from_raw(n), what),
        None => mp_err(ErrorKind::OSError, format!("{what}: {e}")),
    }
}

/// A listening socket.
#[derive(Clone)]
pub struct Listener(pub Arc<ListenerInner>);

/// What a Listener holds.
pub struct ListenerInner {
    fd: Mutex<Option<OwnedFd>>,
    /// The address it listens on, as text (`127.0.0.1:PORT` or the path).
    pub address: String,
    unix_path: Option<String>,
    authkey: Option<Vec<u8>>,
    max_frame: u64,
}

impl PartialEq for Listener {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0)
    }
}

impl Drop for ListenerInner {
    fn drop(&mut self) {
        if let Some(p) = &self.unix_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Listener {
    /// `Listener(address, authkey)`.
    pub fn bind(
        addr: Addr,
        authkey: Option<Vec<u8>>,
        max_frame: Option<u64>,
    ) -> RtResult<Listener> {
        let (fd, address, unix_path): (OwnedFd, String, Option<String>) = match addr {
            Addr::Tcp(host, port) => {
                let host = if host.is_empty() {
                    "0.0.0.0".to_string()
                } else {
                    host
                };
                let l = std::net::TcpListener::bind((host.as_str(), port))
                    .map_err(|e| io_err(e, "bind"))?;
                let a = l.local_addr().map_err(|e| io_err(e, "getsockname"))?;
                (OwnedFd::from(l), a.to_string(), None)
            }
            Addr::Unix(path) => {
                let l =
                    std::os::unix::net::UnixListener::bind(&path).map_err(|e| io_err(e, "bind"))?;
                (OwnedFd::from(l), path.clone(), Some(path))
            }
        };
        Ok(Listener(Arc::new(ListenerInner {
            fd: Mutex::new(Some(fd)),
            address,
            unix_path,
            authkey,
            max_frame: max_frame.unwrap_or(DEFAULT_MAX_FRAME),
        })))
    }

    /// `accept()`: waits for a client (Ctrl-C aware), runs the handshake, returns the
    /// connection. A failed handshake raises here and the listener goes on.
    pub fn accept(&self, ctx: Option<&NativeCallContext>) -> RtResult<Connection> {
        let raw = {
            let g = self.0.fd.lock().unwrap_or_else(|e| e.into_inner());
            g.as_ref()
                .map(|f| f.as_raw_fd())
                .ok_or_else(|| mp_err(ErrorKind::OSError, "the listener is closed"))?
        };
        loop {
            crate::waiting::wait_fds(ctx, &[raw], crate::waiting::Deadline::never())?;
            // SAFETY: accept4 on our listening socket; a returned fd is new and ours.
            let fd = unsafe {
                libc::accept4(
                    raw,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                match nix::errno::Errno::last() {
                    nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR => continue,
                    nix::errno::Errno::EBADF | nix::errno::Errno::EINVAL => {
                        return Err(mp_err(ErrorKind::OSError, "the listener is closed"))
                    }
                    e => return Err(os_error(e, "accept")),
                }
            }
            // SAFETY: the kernel just gave us this fd.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            set_nodelay(&fd);
            if let Some(key) = &self.0.authkey {
                crate::managers::set_timeouts(&fd, Some(HANDSHAKE_TIMEOUT));
                let mut io = crate::managers::FdIo(fd.as_raw_fd());
                super::auth::deliver_challenge(&mut io, key)
                    .and_then(|_| super::auth::answer_challenge(&mut io, key))
                    .map_err(as_auth_error)?;
                crate::managers::set_timeouts(&fd, None);
            }
            return Connection::network(fd, Some(self.0.max_frame));
        }
    }

    /// `close()`.
    pub fn close(&self) {
        self.0.fd.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// A handshake that failed for any reason (timeout, garbage, EOF) is an AuthenticationError.
fn as_auth_error(e: Box<rhai::EvalAltResult>) -> Box<rhai::EvalAltResult> {
    match crate::errors::kind_of(&e).as_deref() {
        Some("AuthenticationError") | Some("KeyboardInterrupt") => e,
        _ => mp_err(
            ErrorKind::AuthenticationError,
            format!("handshake failed: {}", crate::errors::describe(&e).message),
        ),
    }
}

fn set_nodelay(fd: &OwnedFd) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own; on a Unix socket it fails harmlessly.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// `Client(address, authkey)`: connects and runs the handshake (answer, then challenge back).
pub fn client(addr: Addr, authkey: Option<Vec<u8>>) -> RtResult<Connection> {
    let fd: OwnedFd = match addr {
        Addr::Tcp(host, port) => {
            let host = if host.is_empty() {
                "127.0.0.1".to_string()
            } else {
                host
            };
            let s = std::net::TcpStream::connect((host.as_str(), port))
                .map_err(|e| io_err(e, "connect"))?;
            OwnedFd::from(s)
        }
        Addr::Unix(path) => OwnedFd::from(
            std::os::unix::net::UnixStream::connect(&path).map_err(|e| io_err(e, "connect"))?,
        ),
    };
    set_nodelay(&fd);
    if let Some(key) = authkey {
        crate::managers::set_timeouts(&fd, Some(HANDSHAKE_TIMEOUT));
        let mut io = crate::managers::FdIo(fd.as_raw_fd());
        super::auth::answer_challenge(&mut io, &key)
            .and_then(|_| super::auth::deliver_challenge(&mut io, &key))
            .map_err(as_auth_error)?;
        crate::managers::set_timeouts(&fd, None);
    }
    Connection::network(fd, None)
}

/// A Listener travels as its listening socket (a child can serve it), its address, key and
/// frame limit; the receiver does not own a Unix socket's path (the creator removes it).
pub fn register_codec() {
    fn encode(v: &Dynamic, e: &mut crate::wire::Encoder) -> Result<(), String> {
        let l = v.read_lock::<Listener>().ok_or("not a Listener")?.clone();
        let fd =
            l.0.fd
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|f| f.as_raw_fd())
                .ok_or("the listener is closed")?;
        e.fd(fd);
        e.raw(l.0.address.as_bytes());
        match &l.0.authkey {
            Some(k) => {
                e.byte(1);
                e.raw(k);
            }
            None => e.byte(0),
        }
        e.uvar(l.0.max_frame);
        Ok(())
    }
    fn decode(d: &mut crate::wire::Decoder) -> Result<Dynamic, String> {
        let fd = d.fd()?;
        let address = String::from_utf8(d.raw()?.to_vec()).map_err(|_| "bad address")?;
        let authkey = match d.byte()? {
            0 => None,
            _ => Some(d.raw()?.to_vec()),
        };
        let max_frame = d.uvar()?;
        Ok(Dynamic::from(Listener(Arc::new(ListenerInner {
            fd: Mutex::new(Some(fd)),
            address,
            unix_path: None,
            authkey,
            max_frame,
        }))))
    }
    crate::wire::register_handle::<Listener>(crate::wire::HandleCodec {
        name: "Listener",
        encode,
        decode,
    });
}
