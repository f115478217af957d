//! Registers the small OS and time functions of API.md "Processes": `sleep`, `time`,
//! `monotonic`, `ctime`, `cpu_count`, `getpid`, `getppid`, and `exit`.

use crate::errors::{type_error, RtResult};
use crate::{reg, waiting};
use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext, Position, FLOAT, INT};
use std::time::{SystemTime, UNIX_EPOCH};

fn now_epoch() -> FLOAT {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `ctime(t)` as Python's `time.ctime`: `"Wed Jan 30 17:00:16 2019"` in local time.
pub fn ctime_of(t: f64) -> String {
    let secs = t.floor() as libc::time_t;
    // SAFETY: localtime_r writes into the zeroed struct we own; strftime writes at most
    // buf.len() bytes into our buffer.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return String::new();
        }
        let mut buf = [0u8; 64];
        let n = libc::strftime(
            buf.as_mut_ptr().cast(),
            buf.len(),
            c"%a %b %e %H:%M:%S %Y".as_ptr(),
            &tm,
        );
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

fn seconds(v: &Dynamic) -> RtResult<f64> {
    if let Ok(i) = v.as_int() {
        Ok(i as f64)
    } else if let Ok(f) = v.as_float() {
        Ok(f)
    } else {
        Err(type_error(format!(
            "expected seconds as an int or a float, not {}",
            crate::wire::script_type_name(v)
        )))
    }
}

/// Registers the functions.
pub fn register(engine: &mut Engine) {
    reg!(engine, "sleep", |ctx: NativeCallContext,
                           secs: Dynamic|
     -> RtResult<()> {
        let d = waiting::timeout_arg(&secs)?.ok_or_else(|| type_error("sleep(()) has no time"))?;
        waiting::sleep(Some(&ctx), d)
    });
    // Typed overloads too: rhai's core package has its own `sleep(int)`/`sleep(float)`
    // (std::thread::sleep, deaf to Ctrl-C), and an exact-type match beats a `Dynamic` one.
    reg!(engine, "sleep", |ctx: NativeCallContext,
                           secs: INT|
     -> RtResult<()> {
        let d = waiting::timeout_arg(&Dynamic::from(secs))?.unwrap_or_default();
        waiting::sleep(Some(&ctx), d)
    });
    reg!(engine, "sleep", |ctx: NativeCallContext,
                           secs: FLOAT|
     -> RtResult<()> {
        let d = waiting::timeout_arg(&Dynamic::from(secs))?.unwrap_or_default();
        waiting::sleep(Some(&ctx), d)
    });
    reg!(engine, "time", now_epoch);
    reg!(engine, "monotonic", || -> FLOAT {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime fills the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    });
    reg!(engine, "ctime", || ctime_of(now_epoch()));
    reg!(engine, "ctime", |t: Dynamic| -> RtResult<String> {
        Ok(ctime_of(seconds(&t)?))
    });
    reg!(engine, "cpu_count", || -> INT {
        std::thread::available_parallelism()
            .map(|n| n.get() as INT)
            .unwrap_or(1)
    });
    reg!(engine, "getpid", || -> INT {
        nix::unistd::getpid().as_raw() as INT
    });
    reg!(engine, "getppid", || -> INT {
        nix::unistd::getppid().as_raw() as INT
    });
    // `exit(n)` as Rhai's own, plus the status recorded: Rhai turns a top-level exit into a
    // plain result, which would lose `exit(3)`'s 3.
    reg!(
        engine,
        "exit",
        |v: Dynamic| -> Result<(), Box<EvalAltResult>> {
            crate::program::set_exit(&v);
            Err(EvalAltResult::Exit(v, Position::NONE).into())
        }
    );
    reg!(engine, "exit", || -> Result<(), Box<EvalAltResult>> {
        crate::program::set_exit(&Dynamic::UNIT);
        Err(EvalAltResult::Exit(Dynamic::UNIT, Position::NONE).into())
    });
}
