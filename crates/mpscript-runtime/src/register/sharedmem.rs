//! Registers API.md "Shared memory": `Value` and `Array` constructors, `value`, indexing,
//! `len`, `to_array`, `slice`, `fill`, `for x in a`, `get_lock`, `with_lock`, `update`,
//! reprs and identity `==`.

use crate::errors::{type_error, value_error, RtResult};
use crate::sharedmem::{self, Array, Shared, Typecode, Value};
use crate::synchronize::{Kind, RLock};
use crate::{reg, reg_get, reg_set};
use rhai::{Dynamic, Engine, FnPtr, NativeCallContext, INT};
use std::ops::{Range, RangeInclusive};

/// `Array(code, init, lock)`: `init` is a length, an array, a range, or (for 'c') a string.
fn new_array(code: Dynamic, init: Dynamic, lock: bool) -> RtResult<Array> {
    let code = Typecode::parse(&code)?;
    let items: Vec<Dynamic> = if let Ok(n) = init.as_int() {
        if n < 0 {
            return Err(value_error(format!(
                "an Array's length must be >= 0, not {n}"
            )));
        }
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let s = Shared::new(Kind::Array, code, n, lock)?;
        return Ok(Array(s));
    } else if let Some(a) = init.read_lock::<rhai::Array>() {
        a.iter().map(|v| v.flatten_clone()).collect()
    } else if let Some(r) = init.read_lock::<Range<INT>>() {
        r.clone().map(Dynamic::from).collect()
    } else if let Some(r) = init.read_lock::<RangeInclusive<INT>>() {
        r.clone().map(Dynamic::from).collect()
    } else if let Some(s) = init.read_lock::<rhai::ImmutableString>() {
        s.chars().map(Dynamic::from).collect()
    } else {
        return Err(type_error(format!(
            "Array(typecode, init): init must be a length, an array or a range, not {}",
            crate::wire::script_type_name(&init)
        )));
    };
    let s = Shared::new(Kind::Array, code, items.len(), lock)?;
    s.init_from(items.into_iter())?;
    Ok(Array(s))
}

fn with_self<T: Clone + Send + Sync + 'static>(
    ctx: &NativeCallContext,
    s: &Shared,
    me: T,
    f: &FnPtr,
    what: &str,
) -> RtResult<Dynamic> {
    let lock = s.get_lock(what)?;
    lock.with(|| f.call_within_context::<Dynamic>(ctx, (Dynamic::from(me),)))
}

/// Registers the types and their functions.
pub fn register(engine: &mut Engine) {
    sharedmem::register_codecs();

    engine.register_type_with_name::<Value>("Value");
    reg!(engine, "Value", |code: Dynamic| -> RtResult<Value> {
        let code = Typecode::parse(&code)?;
        let zero = match code.0 {
            'f' | 'd' => Dynamic::from(0.0),
            'c' => Dynamic::from('\0'),
            _ => Dynamic::from(0 as INT),
        };
        Value::new(code, &zero, true)
    });
    reg!(engine, "Value", |code: Dynamic,
                           x: Dynamic|
     -> RtResult<Value> {
        Value::new(Typecode::parse(&code)?, &x, true)
    });
    reg!(engine, "Value", |code: Dynamic,
                           x: Dynamic,
                           lock: bool|
     -> RtResult<Value> {
        Value::new(Typecode::parse(&code)?, &x, lock)
    });
    reg_get!(engine, "value", |v: &mut Value| v.get());
    reg_set!(engine, "value", |v: &mut Value, x: Dynamic| v.set(&x));
    reg!(engine, "get_lock", |v: &mut Value| -> RtResult<RLock> {
        Ok(RLock(v.0.get_lock("Value")?))
    });
    reg!(engine, "with_lock", |ctx: NativeCallContext,
                               v: &mut Value,
                               f: FnPtr|
     -> RtResult<Dynamic> {
        with_self(&ctx, &v.0, v.clone(), &f, "Value")
    });
    reg!(engine, "update", |ctx: NativeCallContext,
                            v: &mut Value,
                            f: FnPtr|
     -> RtResult<Dynamic> {
        let s = &v.0;
        s.get_lock("Value")?.with(|| {
            let old = s.get_raw(0);
            let new = f.call_within_context::<Dynamic>(&ctx, (old,))?;
            let bits = s.code().to_bits(&new)?;
            s.set_raw(0, bits);
            Ok(s.code().from_bits(bits))
        })
    });
    reg!(engine, "to_string", |v: &mut Value| v.repr());
    reg!(engine, "to_debug", |v: &mut Value| v.repr());
    reg!(engine, "==", |a: Value, b: Value| a == b);
    reg!(engine, "!=", |a: Value, b: Value| a != b);

    engine.register_type_with_name::<Array>("Array");
    reg!(engine, "Array", |code: Dynamic, init: Dynamic| new_array(
        code, init, true
    ));
    reg!(engine, "Array", |code: Dynamic,
                           init: Dynamic,
                           lock: bool| {
        new_array(code, init, lock)
    });
    rhai::FuncRegistration::new_index_getter()
        .with_volatility(true)
        .register_into_engine(engine, |a: &mut Array, i: INT| a.0.get(i));
    rhai::FuncRegistration::new_index_setter()
        .with_volatility(true)
        .register_into_engine(engine, |a: &mut Array, i: INT, x: Dynamic| a.0.set(i, &x));
    reg!(engine, "len", |a: &mut Array| a.0.len() as INT);
    reg!(engine, "to_array", |a: &mut Array| a
        .0
        .read_range(0, a.0.len()));
    reg!(engine, "slice", |a: &mut Array, s: INT, e: INT| {
        let (s, e) = a.0.clamp(s, e);
        a.0.read_range(s, e)
    });
    reg!(engine, "slice", |a: &mut Array, r: Range<INT>| {
        let (s, e) = a.0.clamp(r.start, r.end);
        a.0.read_range(s, e)
    });
    reg!(engine, "slice", |a: &mut Array, r: RangeInclusive<INT>| {
        let end = r.end().saturating_add(1);
        let (s, e) =
            a.0.clamp(*r.start(), if *r.end() == -1 { INT::MAX } else { end });
        a.0.read_range(s, e)
    });
    reg!(engine, "fill", |a: &mut Array, x: Dynamic| a.0.fill(&x));
    reg!(engine, "get_lock", |a: &mut Array| -> RtResult<RLock> {
        Ok(RLock(a.0.get_lock("Array")?))
    });
    reg!(engine, "with_lock", |ctx: NativeCallContext,
                               a: &mut Array,
                               f: FnPtr|
     -> RtResult<Dynamic> {
        with_self(&ctx, &a.0, a.clone(), &f, "Array")
    });
    engine.register_iterator_result::<Array, Dynamic>();
    reg!(engine, "to_string", |a: &mut Array| a.repr());
    reg!(engine, "to_debug", |a: &mut Array| a.repr());
    reg!(engine, "==", |a: Array, b: Array| a == b);
    reg!(engine, "!=", |a: Array, b: Array| a != b);
}
