//! The authkey handshake of Python's `multiprocessing.connection`, both roles and both forms,
//! so an mpscript Listener/Client interoperates with CPython's.
//!
//! - Python ≤ 3.11: the challenger sends `#CHALLENGE#` + 20 random bytes; the answer is the raw
//!   HMAC-MD5 of those bytes; then `#WELCOME#` or `#FAILURE#`.
//! - Python ≥ 3.12: the challenge is `#CHALLENGE#{sha256}` + 40 random bytes and the answer is
//!   `{sha256}` + HMAC-SHA256 over the whole message *including* the `{sha256}` prefix. A
//!   16-byte answer is a legacy client's raw HMAC-MD5 (of the same whole message).
//!
//! mpscript challenges in the ≥ 3.12 form (which ≤ 3.11 peers answer with MD5) and answers
//! either form. MACs are compared in constant time (`Mac::verify_slice`). Connections run
//! the exchange in both directions, as CPython: Listener delivers then answers, Client answers
//! then delivers.

use crate::errors::{mp_err, ErrorKind, RtResult};
use hmac::{Hmac, KeyInit, Mac};

/// The challenge prefix.
pub const CHALLENGE: &[u8] = b"#CHALLENGE#";
/// Sent when the answer was right.
pub const WELCOME: &[u8] = b"#WELCOME#";
/// Sent when the answer was wrong.
pub const FAILURE: &[u8] = b"#FAILURE#";
/// Random bytes in a ≥ 3.12 challenge.
pub const MESSAGE_LENGTH: usize = 40;
/// The largest handshake message accepted (CPython's `recv_bytes(256)`).
pub const MAX_HANDSHAKE: usize = 256;

/// What the handshake needs of a connection: whole byte messages both ways.
pub trait MessageIo {
    /// Sends one message.
    fn send_msg(&mut self, bytes: &[u8]) -> RtResult<()>;
    /// Receives one message of at most `max` bytes (longer: an error).
    fn recv_msg(&mut self, max: usize) -> RtResult<Vec<u8>>;
}

fn auth_err(msg: impl Into<String>) -> Box<rhai::EvalAltResult> {
    mp_err(ErrorKind::AuthenticationError, msg)
}

fn mac(digest: &str, key: &[u8], msg: &[u8]) -> Option<Vec<u8>> {
    match digest {
        "md5" => {
            let mut m = Hmac::<md5::Md5>::new_from_slice(key).ok()?;
            m.update(msg);
            Some(m.finalize().into_bytes().to_vec())
        }
        "sha256" => {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).ok()?;
            m.update(msg);
            Some(m.finalize().into_bytes().to_vec())
        }
        "sha384" => {
            let mut m = Hmac::<sha2::Sha384>::new_from_slice(key).ok()?;
            m.update(msg);
            Some(m.finalize().into_bytes().to_vec())
        }
        _ => None,
    }
}

fn verify(digest: &str, key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
    macro_rules! check {
        ($h:ty) => {{
            let Ok(mut m) = Hmac::<$h>::new_from_slice(key) else {
                return false;
            };
            m.update(msg);
            m.verify_slice(tag).is_ok()
        }};
    }
    match digest {
        "md5" => check!(md5::Md5),
        "sha256" => check!(sha2::Sha256),
        "sha384" => check!(sha2::Sha384),
        _ => false,
    }
}

/// Splits a message into (digest name, payload): `""` for the legacy 16/20-byte forms.
fn digest_and_payload(message: &[u8]) -> RtResult<(String, &[u8])> {
    if message.len() == 20 || message.len() == 16 {
        return Ok((String::new(), message));
    }
    if message.first() == Some(&b'{') {
        if let Some(end) = message.iter().take(12).position(|&c| c == b'}') {
            let name = String::from_utf8_lossy(&message[1..end]).into_owned();
            if ["md5", "sha256", "sha384"].contains(&name.as_str()) {
                return Ok((name, &message[end + 1..]));
            }
        }
    }
    Err(auth_err(
        "unsupported message length, missing digest prefix, or unsupported digest",
    ))
}

/// The answer to a challenge `message` (the bytes after `#CHALLENGE#`).
pub fn create_response(authkey: &[u8], message: &[u8]) -> RtResult<Vec<u8>> {
    let (digest, _) = digest_and_payload(message)?;
    if digest.is_empty() {
        return mac("md5", authkey, message).ok_or_else(|| auth_err("HMAC failed"));
    }
    let tag = mac(&digest, authkey, message).ok_or_else(|| auth_err("HMAC failed"))?;
    let mut out = format!("{{{digest}}}").into_bytes();
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Checks an answer to our challenge `message`.
pub fn verify_response(authkey: &[u8], message: &[u8], response: &[u8]) -> RtResult<()> {
    let (digest, tag) = digest_and_payload(response)?;
    let digest = if digest.is_empty() {
        "md5".to_string()
    } else {
        digest
    };
    if verify(&digest, authkey, message, tag) {
        Ok(())
    } else {
        Err(auth_err("digest received was wrong"))
    }
}

fn random_bytes(n: usize) -> RtResult<Vec<u8>> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| mp_err(ErrorKind::OSError, format!("getrandom: {e}")))?;
    Ok(b)
}

/// Challenges the peer (the `deliver_challenge` role).
pub fn deliver_challenge(io: &mut dyn MessageIo, authkey: &[u8]) -> RtResult<()> {
    let mut message = b"{sha256}".to_vec();
    message.extend(random_bytes(MESSAGE_LENGTH)?);
    let mut wire = CHALLENGE.to_vec();
    wire.extend_from_slice(&message);
    io.send_msg(&wire)?;
    let response = io.recv_msg(MAX_HANDSHAKE)?;
    match verify_response(authkey, &message, &response) {
        Ok(()) => io.send_msg(WELCOME),
        Err(e) => {
            let _ = io.send_msg(FAILURE);
            Err(e)
        }
    }
}

/// Answers the peer's challenge (the `answer_challenge` role).
pub fn answer_challenge(io: &mut dyn MessageIo, authkey: &[u8]) -> RtResult<()> {
    let message = io.recv_msg(MAX_HANDSHAKE)?;
    let Some(message) = message.strip_prefix(CHALLENGE) else {
        return Err(auth_err("protocol error: expected a challenge"));
    };
    if message.len() < 20 {
        return Err(auth_err(format!(
            "challenge too short: {} bytes",
            message.len()
        )));
    }
    let response = create_response(authkey, message)?;
    io.send_msg(&response)?;
    let answer = io.recv_msg(MAX_HANDSHAKE)?;
    if answer != WELCOME {
        return Err(auth_err("digest sent was rejected"));
    }
    Ok(())
}
