//! Registers `Pipe`, the `Connection` methods and properties, and `wait_ready` (API.md
//! "Message passing"); the logic is in [`crate::connection`].

use crate::connection::{self, wait, Connection};
use crate::errors::{type_error, RtResult};
use crate::{reg, reg_get, waiting};
use rhai::{Array, Blob, Dynamic, Engine, NativeCallContext, INT};

fn pipe(duplex: bool) -> RtResult<Array> {
    let (a, b) = connection::pipe(duplex)?;
    Ok(vec![Dynamic::from(a), Dynamic::from(b)])
}

fn into_target(c: &Connection, buf: &Dynamic, offset: INT) -> RtResult<INT> {
    let Some(t) = connection::byte_target_of(buf) else {
        return Err(type_error(format!(
            "recv_bytes_into needs a shared Array('B', n) (a blob argument is a copy), not {}",
            crate::wire::script_type_name(buf)
        )));
    };
    c.recv_bytes_into(t.as_ref(), offset)
}

/// Registers the type and its functions.
pub fn register(engine: &mut Engine) {
    connection::register_codec();
    connection::malloc::keep_message_buffers();
    engine.register_type_with_name::<Connection>("Connection");
    reg!(engine, "Pipe", || pipe(true));
    reg!(engine, "Pipe", pipe);

    reg!(engine, "send", |c: &mut Connection, v: Dynamic| c.send(&v));
    reg!(
        engine,
        "recv",
        |ctx: NativeCallContext, c: &mut Connection| c.recv(Some(&ctx))
    );
    reg!(engine, "poll", |c: &mut Connection| c
        .poll(Some(std::time::Duration::ZERO)));
    reg!(engine, "poll", |c: &mut Connection,
                          t: Dynamic|
     -> RtResult<bool> {
        c.poll(waiting::timeout_arg(&t)?)
    });
    reg!(engine, "send_bytes", |c: &mut Connection, b: Blob| c
        .send_bytes(&b, 0, None));
    reg!(
        engine,
        "send_bytes",
        |c: &mut Connection, b: Blob, off: INT| c.send_bytes(&b, off, None)
    );
    reg!(
        engine,
        "send_bytes",
        |c: &mut Connection, b: Blob, off: INT, size: INT| c.send_bytes(&b, off, Some(size))
    );
    reg!(
        engine,
        "recv_bytes",
        |c: &mut Connection| -> RtResult<Blob> { c.recv_bytes(None) }
    );
    reg!(engine, "recv_bytes", |c: &mut Connection,
                                max: INT|
     -> RtResult<Blob> {
        c.recv_bytes(Some(max))
    });
    reg!(
        engine,
        "recv_bytes_into",
        |c: &mut Connection, buf: Dynamic| { into_target(c, &buf, 0) }
    );
    reg!(
        engine,
        "recv_bytes_into",
        |c: &mut Connection, buf: Dynamic, off: INT| { into_target(c, &buf, off) }
    );
    reg!(engine, "close", |c: &mut Connection| c.close());
    reg!(engine, "fileno", |c: &mut Connection| c.fileno());
    reg_get!(engine, "closed", |c: &mut Connection| c.closed());
    reg_get!(engine, "readable", |c: &mut Connection| c.readable());
    reg_get!(engine, "writable", |c: &mut Connection| c.writable());
    reg!(engine, "to_string", |c: &mut Connection| c.repr());
    reg!(engine, "to_debug", |c: &mut Connection| c.repr());
    reg!(engine, "==", |a: Connection, b: Connection| a == b);
    reg!(engine, "!=", |a: Connection, b: Connection| a != b);

    reg!(
        engine,
        "wait_ready",
        |ctx: NativeCallContext, objs: Array| { wait::wait_ready(Some(&ctx), &objs, None) }
    );
    reg!(engine, "wait_ready", |ctx: NativeCallContext,
                                objs: Array,
                                t: Dynamic|
     -> RtResult<Array> {
        wait::wait_ready(Some(&ctx), &objs, waiting::timeout_arg(&t)?)
    });
}
