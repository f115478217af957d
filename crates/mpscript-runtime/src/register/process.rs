//! Registers `Process` and the process functions of API.md "Processes": constructors (target,
//! target + args, options map, "subclass" map), methods, properties, `current_process`,
//! `parent_process`, `active_children`.

use crate::errors::{mp_err, type_error, ErrorKind, RtResult};
use crate::process::{self, run, Process, State, Work};
use crate::{reg, reg_get, reg_set, waiting};
use rhai::{Array, Dynamic, Engine, FnPtr, Map, NativeCallContext, INT};

fn target_of(v: &Dynamic, what: &str) -> RtResult<FnPtr> {
    v.clone().try_cast::<FnPtr>().ok_or_else(|| {
        type_error(format!(
            "{what} must be a function, not {}",
            crate::wire::script_type_name(v)
        ))
    })
}

fn args_of(v: &Dynamic) -> RtResult<Array> {
    if v.is_unit() {
        return Ok(Array::new());
    }
    v.clone().try_cast::<Array>().ok_or_else(|| {
        type_error(format!(
            "args must be an array, not {}",
            crate::wire::script_type_name(v)
        ))
    })
}

/// `Process(map)`: options (`target`, `args`, `name`, `daemon`) or a "subclass" map with `run`.
fn from_map(map: Map) -> RtResult<Process> {
    let is_subclass = map.contains_key("run");
    let mut work = Work::default();
    let (mut name, mut daemon) = (None, None);
    for (k, v) in &map {
        match k.as_str() {
            "target" if !is_subclass && v.is_unit() => {} // target: () is no target, as None
            "target" if !is_subclass => work.target = Some(target_of(v, "target")?),
            "args" if !is_subclass => work.args = args_of(v)?,
            "name" => {
                name = Some(
                    v.clone()
                        .into_string()
                        .map_err(|t| type_error(format!("name must be a string, not {t}")))?,
                )
            }
            "daemon" => {
                daemon = Some(
                    v.as_bool()
                        .map_err(|t| type_error(format!("daemon must be a bool, not {t}")))?,
                )
            }
            "run" => {
                target_of(v, "run")?;
            }
            _ if is_subclass => {}
            other => {
                return Err(type_error(format!(
                    "Process() got an unexpected option '{other}' (options: target, args, name, daemon)"
                )))
            }
        }
    }
    if is_subclass {
        work.this = Some(map.into());
    }
    let p = Process::new_child(work);
    {
        let mut d = p.data();
        if let Some(n) = name {
            d.name = n;
        }
        if let Some(dm) = daemon {
            d.daemon = dm;
        }
    }
    Ok(p)
}

fn opt_int(v: Option<i32>) -> Dynamic {
    v.map_or(Dynamic::UNIT, |c| Dynamic::from(c as INT))
}

/// Registers the type and its functions.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<Process>("Process");

    reg!(engine, "Process", || Process::new_child(Work::default()));
    reg!(engine, "Process", |f: Dynamic| -> RtResult<Process> {
        if let Some(m) = f.clone().try_cast::<Map>() {
            return from_map(m);
        }
        Ok(Process::new_child(Work {
            target: Some(target_of(&f, "target")?),
            ..Work::default()
        }))
    });
    reg!(engine, "Process", |f: Dynamic,
                             args: Dynamic|
     -> RtResult<Process> {
        Ok(Process::new_child(Work {
            target: Some(target_of(&f, "target")?),
            args: args_of(&args)?,
            ..Work::default()
        }))
    });

    reg!(engine, "start", |ctx: NativeCallContext,
                           p: &mut Process|
     -> RtResult<()> {
        run::start(&ctx, p)
    });
    reg!(engine, "run", |ctx: NativeCallContext,
                         p: &mut Process|
     -> RtResult<Dynamic> {
        let work = p.data().work.clone();
        run::run_work(&ctx, &work)
    });
    reg!(engine, "join", |ctx: NativeCallContext,
                          p: &mut Process|
     -> RtResult<()> {
        p.join(Some(&ctx), None)
    });
    reg!(engine, "join", |ctx: NativeCallContext,
                          p: &mut Process,
                          t: Dynamic|
     -> RtResult<()> {
        p.join(Some(&ctx), waiting::timeout_arg(&t)?)
    });
    reg!(engine, "is_alive", |p: &mut Process| p.is_alive());
    reg!(engine, "terminate", |p: &mut Process| p
        .signal(libc::SIGTERM));
    reg!(engine, "kill", |p: &mut Process| p.signal(libc::SIGKILL));
    reg!(engine, "close", |p: &mut Process| p.close());

    reg_get!(engine, "pid", |p: &mut Process| -> Dynamic {
        p.pid()
            .map_or(Dynamic::UNIT, |pid| Dynamic::from(pid.as_raw() as INT))
    });
    reg_get!(engine, "ident", |p: &mut Process| -> Dynamic {
        p.pid()
            .map_or(Dynamic::UNIT, |pid| Dynamic::from(pid.as_raw() as INT))
    });
    reg_get!(engine, "exitcode", |p: &mut Process| -> RtResult<Dynamic> {
        Ok(opt_int(p.exitcode()?))
    });
    reg_get!(engine, "name", |p: &mut Process| p.data().name.clone());
    reg_set!(engine, "name", |p: &mut Process, n: String| {
        p.data().name = n;
    });
    reg_get!(engine, "daemon", |p: &mut Process| p.data().daemon);
    reg_set!(engine, "daemon", |p: &mut Process,
                                v: bool|
     -> RtResult<()> {
        let mut d = p.data();
        if d.kind == process::Kind::Child && !matches!(d.state, State::New) {
            return Err(mp_err(
                ErrorKind::ProcessError,
                "process has already started",
            ));
        }
        d.daemon = v;
        Ok(())
    });
    reg_get!(engine, "sentinel", |p: &mut Process| p.sentinel());
    reg_set!(engine, "run", |p: &mut Process,
                             f: Dynamic|
     -> RtResult<()> {
        let f = target_of(&f, "run")?;
        let mut d = p.data();
        if !matches!(d.state, State::New) {
            return Err(mp_err(
                ErrorKind::ProcessError,
                "process has already started",
            ));
        }
        d.work.run = Some(f);
        Ok(())
    });
    reg!(engine, "to_string", |p: &mut Process| p.repr());
    reg!(engine, "to_debug", |p: &mut Process| p.repr());
    reg!(engine, "==", |a: Process, b: Process| a == b);
    reg!(engine, "!=", |a: Process, b: Process| a != b);

    reg!(engine, "current_process", process::current_process);
    reg!(engine, "parent_process", || -> Dynamic {
        process::parent_process().map_or(Dynamic::UNIT, Dynamic::from)
    });
    reg!(engine, "active_children", || -> RtResult<Array> {
        Ok(process::active_children()?
            .into_iter()
            .map(Dynamic::from)
            .collect())
    });
}
