//! What a master sends to remote workers: the checks that keep OS-local handles (whose
//! encoding passes a file descriptor, or names a manager on an abstract socket) out of tasks,
//! and the program payload a worker compiles.

use crate::errors::{mp_err, ErrorKind, RtResult};
use rhai::{Array, Dynamic, FnPtr, Map, NativeCallContext};

/// Checks that `v` can go to a remote worker: sendable at all, and holding no OS-local handle
/// (one whose encoding passes a file descriptor: Queue, Lock, Value, Array, Connection...).
pub fn check_remote(ctx: Option<&NativeCallContext>, v: &Dynamic, root: &str) -> RtResult<()> {
    let (bytes, fds) = match crate::wire::encode(v, root) {
        Ok(x) => x,
        // Again with the caller's libraries, so the error names a closure's captures.
        Err(e) => match ctx {
            Some(ctx) => return crate::wire::check_sendable_in(ctx, v, root).and(Err(e)),
            None => return Err(e),
        },
    };
    // Cheap first: no fd and no proxy at all (the usual case) needs no walk.
    if fds.is_empty() && !bytes.windows(5).any(|w| w == b"Proxy") {
        return Ok(());
    }
    let Some((path, ty)) = find_local(v, root.to_string()) else {
        return Ok(());
    };
    Err(mp_err(
        ErrorKind::SendError,
        format!("cannot send {path}: {ty} (not sendable to a remote worker)"),
    ))
}

/// The path and type of the first value inside `v` whose encoding passes an fd.
fn find_local(v: &Dynamic, path: String) -> Option<(String, String)> {
    if v.is_shared() {
        let inner = v.read_lock::<Dynamic>()?.clone();
        return find_local(&inner, path);
    }
    if let Some(a) = v.read_lock::<Array>() {
        return a
            .iter()
            .enumerate()
            .find_map(|(i, x)| find_local(x, format!("{path}[{i}]")));
    }
    if let Some(m) = v.read_lock::<Map>() {
        return m
            .iter()
            .find_map(|(k, x)| find_local(x, format!("{path}.{k}")));
    }
    if let Some(f) = v.read_lock::<FnPtr>() {
        return f
            .curry()
            .iter()
            .enumerate()
            .find_map(|(i, x)| find_local(x, format!("{path} (capture {i})")));
    }
    let local = match crate::wire::encode(v, "x") {
        Ok((_, fds)) if !fds.is_empty() => true,
        Ok((bytes, _)) => local_proxy(&bytes),
        Err(_) => false,
    };
    local.then(|| (path, crate::wire::script_type_name(v)))
}

/// True for an encoded manager proxy whose manager listens on an abstract Unix socket
/// (`Manager()` without an address: reachable on this machine only). A proxy's payload starts
/// with its manager's address, `@name` for an abstract socket.
fn local_proxy(bytes: &[u8]) -> bool {
    let mut d = crate::wire::Decoder::new(bytes, Vec::new(), None);
    let (Ok(_tag), Ok(name)) = (d.byte(), d.raw()) else {
        return false;
    };
    name.ends_with(b"Proxy") && d.raw().is_ok_and(|addr| addr.starts_with(b"@"))
}

/// The program a worker needs: `[u32 LE length][units][constants]`, wire-encoded.
pub fn script_payload(consts: &Map) -> RtResult<Vec<u8>> {
    let units: Array = crate::program::units_since(0)
        .into_iter()
        .map(|u| Dynamic::from_array(vec![u.name.into(), u.source.into()]))
        .collect();
    let (ub, _) = crate::wire::encode(&units.into(), "units")?;
    for (k, v) in consts {
        check_remote(None, v, &format!("global::{k}"))?;
    }
    let (cb, _) = crate::wire::encode(&Dynamic::from_map(consts.clone()), "constants")?;
    let mut out = Vec::with_capacity(4 + ub.len() + cb.len());
    out.extend_from_slice(&(ub.len() as u32).to_le_bytes());
    out.extend_from_slice(&ub);
    out.extend_from_slice(&cb);
    super::check_size(out.len(), "the script and its constants")?;
    Ok(out)
}
