//! Broker URLs: `redis://[user:password@]host[:port][/db]`, `rediss://...` (TLS), and
//! `unix:///path/to/socket[?user=..&pass=..]` (also `redis+unix://`, `valkey://`...).
//!
//! A `rediss://` broker whose certificate is signed by a private CA names that CA's PEM file
//! with the query parameter `ca` (`rediss://host:6380/?ca=/etc/mpscript/ca.pem`) or the
//! environment variable `MPSCRIPT_BROKER_CA` (the parameter wins); without either, the
//! system's trusted roots are used. The master and every `mpscript worker` read it the same
//! way, so one URL serves both.
//!
//! Parsing is the `redis` crate's (one grammar for all its schemes); this module adds the
//! checks a script needs (a clear `ValueError` for a malformed URL or an unknown scheme), a
//! printable form with the password hidden, and whether the broker is on this machine (an
//! authkey is required otherwise).

use crate::errors::{value_error, RtResult};

/// A parsed broker URL.
#[derive(Clone, Debug)]
pub struct BrokerUrl {
    /// The connection parameters.
    pub info: redis::ConnectionInfo,
    /// The URL with any password replaced by `***` (for messages and logs).
    pub shown: String,
    /// True for a Unix socket or a loopback address.
    pub loopback: bool,
    /// True for `rediss://` (TLS).
    pub tls: bool,
    /// The CA file (PEM) to trust for TLS: the `ca` parameter, else `MPSCRIPT_BROKER_CA`.
    pub ca: Option<std::path::PathBuf>,
}

/// Parses a broker URL.
pub fn parse(s: &str) -> RtResult<BrokerUrl> {
    let scheme = s.split("://").next().unwrap_or_default();
    if !s.contains("://") {
        return Err(value_error(format!(
            "malformed broker URL {s:?}: expected redis://host[:port], rediss://host[:port] or \
             unix:///path"
        )));
    }
    if !matches!(
        scheme,
        "redis" | "rediss" | "unix" | "redis+unix" | "valkey" | "valkeys" | "valkey+unix"
    ) {
        return Err(value_error(format!(
            "unsupported broker URL scheme {scheme:?} in {:?}: use redis://, rediss:// or unix://",
            redact(s)
        )));
    }
    let info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(s)
        .map_err(|e| value_error(format!("malformed broker URL {:?}: {e}", redact(s))))?;
    let (loopback, tls) = match info.addr() {
        redis::ConnectionAddr::Unix(_) => (true, false),
        redis::ConnectionAddr::Tcp(h, _) => (is_loopback(h), false),
        redis::ConnectionAddr::TcpTls { host, .. } => (is_loopback(host), true),
        _ => (false, false),
    };
    let ca = query_param(s, "ca")
        .or_else(|| std::env::var("MPSCRIPT_BROKER_CA").ok())
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from);
    Ok(BrokerUrl {
        info,
        shown: redact(s),
        loopback,
        tls,
        ca,
    })
}

/// The value of query parameter `key` (taken as written: no percent-decoding).
fn query_param(s: &str, key: &str) -> Option<String> {
    let query = s.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').find_map(|kv| match kv.split_once('=') {
        Some((k, v)) if k == key => Some(v.to_string()),
        _ => None,
    })
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The URL with the password part of `user:password@` (and `pass=` / `password=` query
/// parameters) replaced by `***`.
pub fn redact(s: &str) -> String {
    let mut out = s.to_string();
    if let Some(rest_at) = s.find("://").map(|i| i + 3) {
        let rest = &s[rest_at..];
        let auth_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            let auth = &rest[..at];
            let shown = match auth.find(':') {
                Some(c) => format!("{}:***", &auth[..c]),
                None => "***".to_string(),
            };
            out = format!("{}{}{}", &s[..rest_at], shown, &rest[at..]);
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let parts: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k == "pass" || k == "password" => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}{}", parts.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_loopback() {
        assert!(parse("redis://127.0.0.1:6379").unwrap().loopback);
        assert!(parse("redis://localhost").unwrap().loopback);
        assert!(!parse("redis://10.1.2.3:6379").unwrap().loopback);
        assert!(parse("unix:///tmp/r.sock").unwrap().loopback);
        let t = parse("rediss://example.invalid:6380").unwrap();
        assert!(t.tls && !t.loopback);
        assert!(parse("http://x").is_err());
        assert!(parse("not a url").is_err());
        assert!(parse("redis://[::1]:6379").unwrap().loopback);
        let t = parse("rediss://127.0.0.1:6380/?ca=/tmp/x/ca.pem").unwrap();
        assert_eq!(t.ca.as_deref(), Some(std::path::Path::new("/tmp/x/ca.pem")));
        assert!(t.tls && t.loopback);
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("redis://alice:s3cret@host:1/0"),
            "redis://alice:***@host:1/0"
        );
        assert_eq!(
            redact("unix:///s.sock?user=a&pass=x"),
            "unix:///s.sock?user=a&pass=***"
        );
        let u = parse("redis://bob:pw@127.0.0.1:1").unwrap();
        assert_eq!(u.info.redis_settings().username(), Some("bob"));
        assert_eq!(u.info.redis_settings().password(), Some("pw"));
    }
}
