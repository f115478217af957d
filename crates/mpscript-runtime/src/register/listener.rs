//! Registers `Listener` and `Client` (API.md "Listener and Client").

use crate::connection::Connection;
use crate::errors::{type_error, RtResult};
use crate::listener::net::{client, parse_addr, Listener};
use crate::{reg, reg_get};
use rhai::{Dynamic, Engine, NativeCallContext};

fn key_of(v: &Dynamic) -> RtResult<Option<Vec<u8>>> {
    if v.is_unit() {
        return Ok(None);
    }
    if let Some(b) = v.read_lock::<rhai::Blob>() {
        return Ok(Some(b.clone()));
    }
    v.clone()
        .into_string()
        .map(|s| Some(s.into_bytes()))
        .map_err(|t| type_error(format!("authkey must be a string or a blob, not {t}")))
}

/// Registers the type and functions.
pub fn register(engine: &mut Engine) {
    crate::listener::net::register_codec();
    engine.register_type_with_name::<Listener>("Listener");
    reg!(engine, "Listener", |a: Dynamic| -> RtResult<Listener> {
        Listener::bind(parse_addr(&a)?, None, None)
    });
    reg!(engine, "Listener", |a: Dynamic,
                              k: Dynamic|
     -> RtResult<Listener> {
        Listener::bind(parse_addr(&a)?, key_of(&k)?, None)
    });
    reg!(engine, "Listener", |a: Dynamic,
                              k: Dynamic,
                              o: rhai::Map|
     -> RtResult<Listener> {
        let mut max = None;
        for (name, v) in &o {
            match name.as_str() {
                "max_frame" => {
                    let n = v
                        .as_int()
                        .map_err(|t| type_error(format!("max_frame must be an int, not {t}")))?;
                    if n <= 0 {
                        return Err(crate::errors::value_error("max_frame must be positive"));
                    }
                    max = Some(n as u64);
                }
                other => {
                    return Err(type_error(format!(
                        "Listener() got an unexpected option '{other}' (options: max_frame)"
                    )))
                }
            }
        }
        Listener::bind(parse_addr(&a)?, key_of(&k)?, max)
    });
    reg!(engine, "accept", |ctx: NativeCallContext,
                            l: &mut Listener|
     -> RtResult<Connection> {
        l.accept(Some(&ctx))
    });
    reg!(engine, "close", |l: &mut Listener| l.close());
    reg_get!(engine, "address", |l: &mut Listener| l.0.address.clone());
    reg!(engine, "to_string", |l: &mut Listener| format!(
        "<Listener address={}>",
        l.0.address
    ));
    reg!(engine, "to_debug", |l: &mut Listener| format!(
        "<Listener address={}>",
        l.0.address
    ));
    reg!(engine, "==", |a: Listener, b: Listener| a == b);
    reg!(engine, "!=", |a: Listener, b: Listener| a != b);
    reg!(engine, "Client", |a: Dynamic| -> RtResult<Connection> {
        client(parse_addr(&a)?, None)
    });
    reg!(engine, "Client", |a: Dynamic,
                            k: Dynamic|
     -> RtResult<Connection> {
        client(parse_addr(&a)?, key_of(&k)?)
    });
}
