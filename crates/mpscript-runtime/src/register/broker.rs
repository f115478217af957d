//! The script side of the broker (issue 15): `Pool(#{broker: URL, ...})`,
//! `ProcessPoolExecutor(#{broker: URL, ...})`, and `MPSCRIPT_BROKER` for either. The pool and
//! executor bindings call [`remote_pool`] first; everything after construction is the local
//! types' own methods (a broker pool is a `Pool` handle with a remote side).

use crate::broker::pool::RemoteOptions;
use crate::errors::{type_error, value_error, RtResult};
use crate::futures::{Executor, ExecutorInner};
use crate::pool::{OnDeath, Pool};
use rhai::{Dynamic, Map, NativeCallContext};
use std::sync::{Arc, Mutex};

fn positive_int(v: &Dynamic, what: &str) -> RtResult<Option<usize>> {
    if v.is_unit() {
        return Ok(None);
    }
    let n = v
        .as_int()
        .map_err(|t| type_error(format!("{what} must be an int, not {t}")))?;
    if n <= 0 {
        return Err(value_error(format!("{what} must be at least 1")));
    }
    Ok(Some(n as usize))
}

fn options(url: String, map: &Map, executor: bool) -> RtResult<RemoteOptions> {
    let mut o = RemoteOptions::new(url);
    let size_key = if executor { "max_workers" } else { "processes" };
    for (k, v) in map {
        match k.as_str() {
            "broker" => {}
            k if k == size_key => o.processes = positive_int(v, k)?,
            "retries" => {
                let n = v
                    .as_int()
                    .map_err(|t| type_error(format!("retries must be an int, not {t}")))?;
                if n < 0 {
                    return Err(value_error("retries must be 0 or more"));
                }
                o.retries = n as u32;
            }
            "lease" => {
                let secs = crate::waiting::timeout_arg(v)?
                    .ok_or_else(|| type_error("lease must be a number of seconds"))?;
                o.lease = secs;
            }
            "authkey" => {
                o.authkey = Some(
                    v.clone()
                        .into_immutable_string()
                        .map_err(|t| type_error(format!("authkey must be a string, not {t}")))?
                        .to_string(),
                )
            }
            other => {
                return Err(type_error(format!(
                    "a pool on a broker got an unexpected option '{other}' (options: broker, \
                     {size_key}, retries, lease, authkey; maxtasksperchild is `mpscript worker \
                     --maxtasksperchild`)"
                )))
            }
        }
    }
    Ok(o)
}

/// If the options (a map, an int of processes, or nothing) or `MPSCRIPT_BROKER` name a
/// broker, the pool on it; `None` means a local pool.
pub fn remote_pool(
    ctx: &NativeCallContext,
    arg: Option<&Dynamic>,
    on_death: OnDeath,
) -> RtResult<Option<Pool>> {
    let executor = on_death == OnDeath::Break;
    let size_key = if executor { "max_workers" } else { "processes" };
    let mut map = match arg.map(|a| a.clone().try_cast::<Map>()) {
        Some(Some(m)) => m,
        Some(None) => {
            let mut m = Map::new();
            m.insert(size_key.into(), arg.cloned().unwrap_or_default());
            m
        }
        None => Map::new(),
    };
    let url = match map.get("broker") {
        Some(v) => crate::broker::broker_url_of(Some(v))?,
        None => crate::broker::broker_url_of(None)?,
    };
    let Some(url) = url else {
        map.remove("broker");
        return Ok(None);
    };
    let opts = options(url, &map, executor)?;
    crate::broker::pool::new_pool(ctx, opts, on_death).map(Some)
}

/// `ProcessPoolExecutor(...)` on a broker, if one is named (see [`remote_pool`]).
pub fn remote_executor(
    ctx: &NativeCallContext,
    arg: Option<&Dynamic>,
) -> RtResult<Option<Executor>> {
    Ok(remote_pool(ctx, arg, OnDeath::Break)?.map(|pool| {
        Executor(Arc::new(ExecutorInner {
            pool,
            shut: Mutex::new(false),
        }))
    }))
}
