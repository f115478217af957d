//! Signatures: HMAC-SHA256 with the authkey over every script, task and result that crosses
//! the broker, so that being able to write to the broker is not enough to run code on the
//! workers (a worker refuses anything unsigned or signed with another key, and logs it).
//!
//! Each MAC covers a domain tag and every field, separated by NULs, so a signature of one kind
//! of message can never pass for another's. The key is the `authkey` option or
//! `MPSCRIPT_AUTHKEY`; it is required unless the broker is on this machine (a Unix socket or a
//! loopback address), where a fixed default key is used.

use crate::errors::{value_error, RtResult};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Digest;

/// The key used on a loopback broker when none is given.
const LOOPBACK_KEY: &[u8] = b"mpscript-loopback-broker";

/// The signing key: `explicit` (the option), else `MPSCRIPT_AUTHKEY`, else the loopback
/// default — or `ValueError` for a broker on another machine.
pub fn key_for(explicit: Option<&str>, url: &super::url::BrokerUrl) -> RtResult<Vec<u8>> {
    let env = std::env::var("MPSCRIPT_AUTHKEY")
        .ok()
        .filter(|s| !s.is_empty());
    match explicit.map(str::to_string).or(env) {
        Some(k) => Ok(k.into_bytes()),
        None if url.loopback => Ok(LOOPBACK_KEY.to_vec()),
        None => Err(value_error(format!(
            "the broker {} is not on this machine: an authkey is required (option authkey, \
             mpscript worker --authkey, or MPSCRIPT_AUTHKEY)",
            url.shown
        ))),
    }
}

fn mac_of(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            m.update(b"\0");
        }
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn verify(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    let Ok(mut m) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return false;
    };
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            m.update(b"\0");
        }
        m.update(p);
    }
    m.verify_slice(tag).is_ok()
}

/// The SHA-256 of a script payload, in hex (its name on the broker).
pub fn script_hash(payload: &[u8]) -> String {
    let d = sha2::Sha256::digest(payload);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A signed script: `[32-byte MAC][payload]`.
pub fn sign_script(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = mac_of(key, &[b"script", payload]);
    out.extend_from_slice(payload);
    out
}

/// The payload of a signed script, if its MAC is right for `key` and its hash is `hash`.
pub fn open_script<'a>(key: &[u8], hash: &str, signed: &'a [u8]) -> Result<&'a [u8], String> {
    if signed.len() < 32 {
        return Err("the script is not signed".into());
    }
    let (tag, payload) = signed.split_at(32);
    if !verify(key, &[b"script", payload], tag) {
        return Err("the script is signed with another authkey (or not at all)".into());
    }
    if script_hash(payload) != hash {
        return Err("the script does not match its hash".into());
    }
    Ok(payload)
}

/// The MAC of a task message.
pub fn task_mac(key: &[u8], t: &super::TaskMsg) -> Vec<u8> {
    mac_of(key, &task_parts(t).each_ref().map(|p| p.as_slice()))
}

fn task_parts(t: &super::TaskMsg) -> [Vec<u8>; 6] {
    [
        b"task".to_vec(),
        t.pool.as_bytes().to_vec(),
        t.script.as_bytes().to_vec(),
        t.task.to_string().into_bytes(),
        t.attempt.to_string().into_bytes(),
        t.body.clone(),
    ]
}

/// True when a task's MAC is right for `key`.
pub fn task_ok(key: &[u8], t: &super::TaskMsg) -> bool {
    verify(key, &task_parts(t).each_ref().map(|p| p.as_slice()), &t.mac)
}

fn result_parts<'a>(pool: &'a str, r: &'a super::ResultMsg, task: &'a str) -> [&'a [u8]; 5] {
    let kind: &[u8] = match r.kind {
        super::ResultKind::Done => b"done",
        super::ResultKind::Refused => b"refused",
    };
    [b"result", pool.as_bytes(), task.as_bytes(), kind, &r.body]
}

/// The MAC of a result message of `pool`.
pub fn result_mac(key: &[u8], pool: &str, r: &super::ResultMsg) -> Vec<u8> {
    let task = r.task.to_string();
    mac_of(key, &result_parts(pool, r, &task))
}

/// True when a result's MAC is right for `key`.
pub fn result_ok(key: &[u8], pool: &str, r: &super::ResultMsg) -> bool {
    let task = r.task.to_string();
    verify(key, &result_parts(pool, r, &task), &r.mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_sign_and_verify() {
        let mut t = crate::broker::TaskMsg {
            pool: "p".into(),
            script: "h".into(),
            task: 3,
            attempt: 0,
            body: b"body".to_vec(),
            mac: Vec::new(),
        };
        t.mac = task_mac(b"k1", &t);
        assert!(task_ok(b"k1", &t));
        assert!(!task_ok(b"k2", &t));
        t.attempt = 1;
        assert!(!task_ok(b"k1", &t));
    }

    #[test]
    fn a_remote_broker_needs_a_key() {
        let far = crate::broker::url::parse("redis://192.0.2.1:6379").unwrap();
        let near = crate::broker::url::parse("unix:///tmp/x.sock").unwrap();
        assert_eq!(key_for(Some("k"), &far).unwrap(), b"k");
        assert!(key_for(None, &near).is_ok());
        if std::env::var_os("MPSCRIPT_AUTHKEY").is_none() {
            assert!(key_for(None, &far).is_err());
        }
    }

    #[test]
    fn scripts_sign_and_verify() {
        let s = sign_script(b"k", b"fn f() {}");
        let h = script_hash(b"fn f() {}");
        assert_eq!(open_script(b"k", &h, &s).unwrap(), b"fn f() {}");
        assert!(open_script(b"other", &h, &s).is_err());
        assert!(open_script(b"k", "00", &s).is_err());
    }
}
