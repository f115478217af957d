//! The thin layer that teaches Rhai the API: one file per concept, each only converting
//! arguments and results and mapping errors; the logic lives in the concept modules.
//!
//! Every function goes through [`reg!`](crate::reg) (or its getter/setter forms), which
//! registers it *volatile*: Rhai's optimiser may otherwise fold a call with constant arguments
//! (`getpid()`, `Queue()`) at compile time, whatever optimisation level a host picks.

pub mod broker;
pub mod connection;
pub mod context;
pub mod futures;
pub mod glue;
pub mod listener;
pub mod managers;
pub mod pool;
pub mod process;
pub mod queues;
pub mod sharedmem;
pub mod synchronize;
pub mod system;
pub mod threads;

use rhai::Engine;

/// Registers a volatile function: `reg!(engine, "name", |args| ...)`.
#[macro_export]
#[doc(hidden)]
macro_rules! reg {
    ($engine:expr, $name:expr, $f:expr) => {
        rhai::FuncRegistration::new($name)
            .with_volatility(true)
            .register_into_engine($engine, $f)
    };
}

/// Registers a volatile property getter: `reg_get!(engine, "prop", |x: &mut T| ...)`.
#[macro_export]
#[doc(hidden)]
macro_rules! reg_get {
    ($engine:expr, $name:expr, $f:expr) => {
        rhai::FuncRegistration::new_getter($name)
            .with_volatility(true)
            .register_into_engine($engine, $f)
    };
}

/// Registers a volatile property setter: `reg_set!(engine, "prop", |x: &mut T, v| ...)`.
#[macro_export]
#[doc(hidden)]
macro_rules! reg_set {
    ($engine:expr, $name:expr, $f:expr) => {
        rhai::FuncRegistration::new_setter($name)
            .with_volatility(true)
            .register_into_engine($engine, $f)
    };
}

/// Adds every concept of the API to `engine`.
pub fn register_all(engine: &mut Engine) {
    glue::register();
    system::register(engine);
    process::register(engine);
    connection::register(engine);
    queues::register(engine);
    pool::register(engine);
    futures::register(engine);
    managers::register(engine);
    listener::register(engine);
    synchronize::register(engine);
    sharedmem::register(engine);
    threads::register(engine);
    context::register(engine);
}
