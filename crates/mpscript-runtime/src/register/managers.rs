//! Registers `Manager`, `connect_manager` and the proxy types (API.md "Managers").

use crate::errors::{type_error, RtResult};
use crate::managers::proxy::{
    self, DictProxy, EventProxy, ListProxy, LockProxy, NamespaceProxy, Proxy, QueueProxy,
    ValueProxy,
};
use crate::managers::Manager;
use crate::{reg, reg_get, reg_set, waiting};
use rhai::{Array, Dynamic, Engine, FnPtr, Map, NativeCallContext, INT};

fn key_bytes(v: &Dynamic) -> RtResult<Vec<u8>> {
    if let Some(b) = v.read_lock::<rhai::Blob>() {
        return Ok(b.clone());
    }
    v.clone()
        .into_string()
        .map(String::into_bytes)
        .map_err(|t| type_error(format!("authkey must be a string or a blob, not {t}")))
}

fn proxy_call(
    ctx: &NativeCallContext,
    p: &Proxy,
    method: &str,
    args: Vec<Dynamic>,
) -> RtResult<Dynamic> {
    p.call(Some(ctx), method, args)
}

/// Calls `f` with `arg` if it takes one parameter (after its captures), else with none: the
/// `with_lock` closure may or may not want the handle.
fn call_maybe_with(ctx: &NativeCallContext, f: &FnPtr, arg: Dynamic) -> RtResult<Dynamic> {
    let wants = f.curry().len() + 1;
    let takes_one = ctx
        .iter_namespaces()
        .any(|m| m.get_script_fn(f.fn_name(), wants).is_some());
    if takes_one {
        f.call_raw(ctx, None, [arg])
    } else {
        f.call_raw(ctx, None, [])
    }
}

/// Registers the types and functions.
pub fn register(engine: &mut Engine) {
    proxy::register_codecs();
    engine.register_type_with_name::<Manager>("SyncManager");
    engine.register_type_with_name::<DictProxy>("DictProxy");
    engine.register_type_with_name::<ListProxy>("ListProxy");
    engine.register_type_with_name::<NamespaceProxy>("NamespaceProxy");
    engine.register_type_with_name::<ValueProxy>("ValueProxy");
    engine.register_type_with_name::<QueueProxy>("QueueProxy");
    engine.register_type_with_name::<LockProxy>("LockProxy");
    engine.register_type_with_name::<EventProxy>("EventProxy");

    reg!(engine, "Manager", |ctx: NativeCallContext| Manager::start(
        &ctx, None, None
    ));
    reg!(engine, "Manager", |ctx: NativeCallContext,
                             o: Map|
     -> RtResult<Manager> {
        let mut addr = None;
        let mut key = None;
        for (k, v) in &o {
            match k.as_str() {
                "address" => {
                    addr = Some(match v.clone().try_cast::<Array>() {
                        Some(a) if a.len() == 2 => {
                            let host = a[0].to_string();
                            let host = if host.is_empty() {
                                "0.0.0.0".into()
                            } else {
                                host
                            };
                            format!("{host}:{}", a[1])
                        }
                        _ => v.to_string(),
                    })
                }
                "authkey" => key = Some(key_bytes(v)?),
                other => {
                    return Err(type_error(format!(
                        "Manager() got an unexpected option '{other}' (options: address, authkey)"
                    )))
                }
            }
        }
        Manager::start(&ctx, addr.as_deref(), key)
    });
    reg!(engine, "connect_manager", |addr: &str,
                                     key: Dynamic|
     -> RtResult<Manager> {
        Manager::connect(addr, key_bytes(&key)?)
    });
    reg!(engine, "shutdown", |m: &mut Manager| m.shutdown());
    reg_get!(engine, "address", |m: &mut Manager| m.0.address.text());
    reg!(engine, "to_string", |m: &mut Manager| format!(
        "<SyncManager address={}>",
        m.0.address.text()
    ));
    reg!(engine, "to_debug", |m: &mut Manager| format!(
        "<SyncManager address={}>",
        m.0.address.text()
    ));

    macro_rules! maker {
        ($name:literal, $kind:literal, $wrap:ident) => {
            reg!(engine, $name, |ctx: NativeCallContext,
                                 m: &mut Manager|
             -> RtResult<$wrap> {
                Ok($wrap(m.create(&ctx, $kind, Dynamic::UNIT)?))
            });
        };
    }
    maker!("dict", "dict", DictProxy);
    maker!("list", "list", ListProxy);
    maker!("Namespace", "ns", NamespaceProxy);
    maker!("Lock", "lock", LockProxy);
    maker!("Event", "event", EventProxy);
    maker!("Queue", "queue", QueueProxy);
    reg!(engine, "dict", |ctx: NativeCallContext,
                          m: &mut Manager,
                          init: Map|
     -> RtResult<DictProxy> {
        Ok(DictProxy(m.create(&ctx, "dict", init.into())?))
    });
    reg!(engine, "list", |ctx: NativeCallContext,
                          m: &mut Manager,
                          init: Array|
     -> RtResult<ListProxy> {
        Ok(ListProxy(m.create(&ctx, "list", init.into())?))
    });
    reg!(engine, "Queue", |ctx: NativeCallContext,
                           m: &mut Manager,
                           n: INT|
     -> RtResult<QueueProxy> {
        Ok(QueueProxy(m.create(&ctx, "queue", n.into())?))
    });
    reg!(engine, "Value", |ctx: NativeCallContext,
                           m: &mut Manager,
                           code: Dynamic,
                           v: Dynamic|
     -> RtResult<ValueProxy> {
        // The typecode is checked as for a shared Value; the value is kept as given.
        crate::sharedmem::typecode::Typecode::parse(&code)?.to_bits(&v)?;
        Ok(ValueProxy(m.create(&ctx, "value", v)?))
    });
    reg!(engine, "root", |m: &mut Manager| -> NamespaceProxy {
        NamespaceProxy(Proxy::new(&m.0.address, &m.0.authkey, 0, "ns"))
    });

    // dict
    reg!(
        engine,
        "index$get$",
        |ctx: NativeCallContext, d: &mut DictProxy, k: Dynamic| {
            proxy_call(&ctx, &d.0, "getitem", vec![k])
        }
    );
    reg!(engine, "index$set$", |ctx: NativeCallContext,
                                d: &mut DictProxy,
                                k: Dynamic,
                                v: Dynamic|
     -> RtResult<()> {
        proxy_call(&ctx, &d.0, "setitem", vec![k, v]).map(|_| ())
    });
    for (name, method) in [
        ("keys", "keys"),
        ("values", "values"),
        ("len", "len"),
        ("to_map", "to_map"),
        ("clear", "clear"),
    ] {
        reg!(engine, name, move |ctx: NativeCallContext,
                                 d: &mut DictProxy|
              -> RtResult<Dynamic> {
            proxy_call(&ctx, &d.0, method, vec![])
        });
    }
    reg!(engine, "get", |ctx: NativeCallContext,
                         d: &mut DictProxy,
                         k: Dynamic| {
        proxy_call(&ctx, &d.0, "get", vec![k, Dynamic::UNIT])
    });
    reg!(engine, "get", |ctx: NativeCallContext,
                         d: &mut DictProxy,
                         k: Dynamic,
                         def: Dynamic| {
        proxy_call(&ctx, &d.0, "get", vec![k, def])
    });
    reg!(
        engine,
        "contains",
        |ctx: NativeCallContext, d: &mut DictProxy, k: Dynamic| {
            proxy_call(&ctx, &d.0, "contains", vec![k])
        }
    );
    reg!(engine, "remove", |ctx: NativeCallContext,
                            d: &mut DictProxy,
                            k: Dynamic| {
        proxy_call(&ctx, &d.0, "pop", vec![k])
    });
    reg!(engine, "pop", |ctx: NativeCallContext,
                         d: &mut DictProxy,
                         k: Dynamic| {
        proxy_call(&ctx, &d.0, "pop", vec![k])
    });
    reg!(engine, "pop", |ctx: NativeCallContext,
                         d: &mut DictProxy,
                         k: Dynamic,
                         def: Dynamic| {
        proxy_call(&ctx, &d.0, "pop", vec![k, def])
    });
    reg!(engine, "update", |ctx: NativeCallContext,
                            d: &mut DictProxy,
                            m: Map|
     -> RtResult<()> {
        proxy_call(&ctx, &d.0, "update", vec![m.into()]).map(|_| ())
    });
    reg!(engine, "to_string", |ctx: NativeCallContext,
                               d: &mut DictProxy|
     -> RtResult<String> {
        Ok(format!("{:?}", proxy_call(&ctx, &d.0, "to_map", vec![])?))
    });
    reg!(engine, "to_debug", |ctx: NativeCallContext,
                              d: &mut DictProxy|
     -> RtResult<String> {
        Ok(format!("{:?}", proxy_call(&ctx, &d.0, "to_map", vec![])?))
    });

    // list
    reg!(
        engine,
        "index$get$",
        |ctx: NativeCallContext, l: &mut ListProxy, i: INT| {
            proxy_call(&ctx, &l.0, "getitem", vec![i.into()])
        }
    );
    reg!(engine, "index$set$", |ctx: NativeCallContext,
                                l: &mut ListProxy,
                                i: INT,
                                v: Dynamic|
     -> RtResult<()> {
        proxy_call(&ctx, &l.0, "setitem", vec![i.into(), v]).map(|_| ())
    });
    for (name, method) in [("push", "push"), ("append", "push"), ("extend", "extend")] {
        reg!(engine, name, move |ctx: NativeCallContext,
                                 l: &mut ListProxy,
                                 v: Dynamic|
              -> RtResult<()> {
            proxy_call(&ctx, &l.0, method, vec![v]).map(|_| ())
        });
    }
    for (name, method) in [
        ("len", "len"),
        ("to_array", "to_array"),
        ("pop", "pop"),
        ("clear", "clear"),
    ] {
        reg!(engine, name, move |ctx: NativeCallContext,
                                 l: &mut ListProxy|
              -> RtResult<Dynamic> {
            proxy_call(&ctx, &l.0, method, vec![])
        });
    }
    reg!(engine, "insert", |ctx: NativeCallContext,
                            l: &mut ListProxy,
                            i: INT,
                            v: Dynamic|
     -> RtResult<()> {
        proxy_call(&ctx, &l.0, "insert", vec![i.into(), v]).map(|_| ())
    });
    reg!(engine, "to_string", |ctx: NativeCallContext,
                               l: &mut ListProxy|
     -> RtResult<String> {
        Ok(format!("{:?}", proxy_call(&ctx, &l.0, "to_array", vec![])?))
    });
    reg!(engine, "to_debug", |ctx: NativeCallContext,
                              l: &mut ListProxy|
     -> RtResult<String> {
        Ok(format!("{:?}", proxy_call(&ctx, &l.0, "to_array", vec![])?))
    });

    // Namespace: `ns.x` goes through the indexer with the property name.
    reg!(
        engine,
        "index$get$",
        |ctx: NativeCallContext, n: &mut NamespaceProxy, k: &str| {
            proxy_call(&ctx, &n.0, "getitem", vec![k.into()])
        }
    );
    reg!(engine, "index$set$", |ctx: NativeCallContext,
                                n: &mut NamespaceProxy,
                                k: &str,
                                v: Dynamic|
     -> RtResult<()> {
        proxy_call(&ctx, &n.0, "setitem", vec![k.into(), v]).map(|_| ())
    });
    reg!(
        engine,
        "to_map",
        |ctx: NativeCallContext, n: &mut NamespaceProxy| {
            proxy_call(&ctx, &n.0, "to_map", vec![])
        }
    );
    reg!(engine, "to_string", |ctx: NativeCallContext,
                               n: &mut NamespaceProxy|
     -> RtResult<String> {
        let m = proxy_call(&ctx, &n.0, "to_map", vec![])?;
        Ok(format!("Namespace({m:?})"))
    });

    // Value
    reg_get!(
        engine,
        "value",
        |ctx: NativeCallContext, v: &mut ValueProxy| { proxy_call(&ctx, &v.0, "get", vec![]) }
    );
    reg_set!(engine, "value", |ctx: NativeCallContext,
                               v: &mut ValueProxy,
                               x: Dynamic|
     -> RtResult<()> {
        proxy_call(&ctx, &v.0, "set", vec![x]).map(|_| ())
    });
    reg!(engine, "get", |ctx: NativeCallContext,
                         v: &mut ValueProxy| {
        proxy_call(&ctx, &v.0, "get", vec![])
    });
    reg!(engine, "set", |ctx: NativeCallContext,
                         v: &mut ValueProxy,
                         x: Dynamic|
     -> RtResult<()> {
        proxy_call(&ctx, &v.0, "set", vec![x]).map(|_| ())
    });

    // Queue
    reg!(engine, "put", |ctx: NativeCallContext,
                         q: &mut QueueProxy,
                         x: Dynamic|
     -> RtResult<()> {
        proxy_call(&ctx, &q.0, "put", vec![x, true.into(), Dynamic::UNIT]).map(|_| ())
    });
    reg!(engine, "put", |ctx: NativeCallContext,
                         q: &mut QueueProxy,
                         x: Dynamic,
                         b: bool|
     -> RtResult<()> {
        proxy_call(&ctx, &q.0, "put", vec![x, b.into(), Dynamic::UNIT]).map(|_| ())
    });
    reg!(engine, "put", |ctx: NativeCallContext,
                         q: &mut QueueProxy,
                         x: Dynamic,
                         b: bool,
                         t: Dynamic|
     -> RtResult<()> {
        waiting::timeout_arg(&t)?;
        proxy_call(&ctx, &q.0, "put", vec![x, b.into(), t]).map(|_| ())
    });
    reg!(engine, "put_nowait", |ctx: NativeCallContext,
                                q: &mut QueueProxy,
                                x: Dynamic|
     -> RtResult<()> {
        proxy_call(&ctx, &q.0, "put", vec![x, false.into(), Dynamic::UNIT]).map(|_| ())
    });
    reg!(engine, "get", |ctx: NativeCallContext,
                         q: &mut QueueProxy| {
        proxy_call(&ctx, &q.0, "get", vec![true.into(), Dynamic::UNIT])
    });
    reg!(engine, "get", |ctx: NativeCallContext,
                         q: &mut QueueProxy,
                         b: bool| {
        proxy_call(&ctx, &q.0, "get", vec![b.into(), Dynamic::UNIT])
    });
    reg!(engine, "get", |ctx: NativeCallContext,
                         q: &mut QueueProxy,
                         b: bool,
                         t: Dynamic|
     -> RtResult<Dynamic> {
        waiting::timeout_arg(&t)?;
        proxy_call(&ctx, &q.0, "get", vec![b.into(), t])
    });
    reg!(
        engine,
        "get_nowait",
        |ctx: NativeCallContext, q: &mut QueueProxy| {
            proxy_call(&ctx, &q.0, "get", vec![false.into(), Dynamic::UNIT])
        }
    );
    for name in ["qsize", "empty", "full"] {
        reg!(engine, name, move |ctx: NativeCallContext,
                                 q: &mut QueueProxy|
              -> RtResult<Dynamic> {
            proxy_call(&ctx, &q.0, name, vec![])
        });
    }

    // Lock
    reg!(
        engine,
        "acquire",
        |ctx: NativeCallContext, l: &mut LockProxy| {
            proxy_call(&ctx, &l.0, "acquire", vec![true.into(), Dynamic::UNIT])
        }
    );
    reg!(engine, "acquire", |ctx: NativeCallContext,
                             l: &mut LockProxy,
                             b: bool| {
        proxy_call(&ctx, &l.0, "acquire", vec![b.into(), Dynamic::UNIT])
    });
    reg!(engine, "acquire", |ctx: NativeCallContext,
                             l: &mut LockProxy,
                             b: bool,
                             t: Dynamic|
     -> RtResult<Dynamic> {
        waiting::timeout_arg(&t)?;
        proxy_call(&ctx, &l.0, "acquire", vec![b.into(), t])
    });
    reg!(engine, "release", |ctx: NativeCallContext,
                             l: &mut LockProxy|
     -> RtResult<()> {
        proxy_call(&ctx, &l.0, "release", vec![]).map(|_| ())
    });
    reg!(
        engine,
        "locked",
        |ctx: NativeCallContext, l: &mut LockProxy| { proxy_call(&ctx, &l.0, "locked", vec![]) }
    );
    reg!(engine, "with_lock", |ctx: NativeCallContext,
                               l: &mut LockProxy,
                               f: FnPtr|
     -> RtResult<Dynamic> {
        let _ = proxy_call(&ctx, &l.0, "acquire", vec![true.into(), Dynamic::UNIT])?;
        let r = call_maybe_with(&ctx, &f, Dynamic::from(l.clone()));
        let rel = proxy_call(&ctx, &l.0, "release", vec![]);
        let v = r?;
        let _ = rel?;
        Ok(v)
    });

    // Event
    for name in ["set", "clear", "is_set"] {
        reg!(engine, name, move |ctx: NativeCallContext,
                                 e: &mut EventProxy|
              -> RtResult<Dynamic> {
            proxy_call(&ctx, &e.0, name, vec![])
        });
    }
    reg!(
        engine,
        "wait",
        |ctx: NativeCallContext, e: &mut EventProxy| {
            proxy_call(&ctx, &e.0, "wait", vec![Dynamic::UNIT])
        }
    );
    reg!(engine, "wait", |ctx: NativeCallContext,
                          e: &mut EventProxy,
                          t: Dynamic|
     -> RtResult<Dynamic> {
        waiting::timeout_arg(&t)?;
        proxy_call(&ctx, &e.0, "wait", vec![t])
    });

    macro_rules! identity {
        ($($ty:ident),*) => {$(
            reg!(engine, "==", |a: $ty, b: $ty| a == b);
            reg!(engine, "!=", |a: $ty, b: $ty| a != b);
        )*};
    }
    identity!(
        DictProxy,
        ListProxy,
        NamespaceProxy,
        ValueProxy,
        QueueProxy,
        LockProxy,
        EventProxy
    );
    reg!(engine, "to_string", |_l: &mut LockProxy| "<Lock proxy>"
        .to_string());
    reg!(engine, "to_string", |_e: &mut EventProxy| "<Event proxy>"
        .to_string());
    reg!(engine, "to_string", |_q: &mut QueueProxy| "<Queue proxy>"
        .to_string());
    reg!(engine, "to_string", |ctx: NativeCallContext,
                               v: &mut ValueProxy|
     -> RtResult<String> {
        Ok(format!(
            "Value({:?})",
            proxy_call(&ctx, &v.0, "get", vec![])?
        ))
    });
}
