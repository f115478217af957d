//! Process-wide runtime state that holds script values, in builds with and without threads.
//!
//! With the `threads` feature (rhai `sync`), script values are `Send + Sync`, so the runtime's
//! registries (its engine, its process identity and children, live pools, background sources)
//! are ordinary `static`s shared by every thread. Without it, rhai's values use `Rc` and may
//! not sit in a `static`; but then no script thread can exist, so the thread that runs the
//! script is the only one that touches them: each registry becomes a per-thread value
//! (`thread_local!`, leaked once so the accessor keeps its `&'static` signature). A host that
//! runs runtimes on several threads of a threadless build gets one set per thread, which is
//! sound (no value crosses threads) and what such a host would expect.
//!
//! [`runtime_global!`] writes both forms from one definition; [`MaybeSync`] is the bound
//! (`Send + Sync`, or nothing) for trait objects stored in them.

/// `Send + Sync` in a build with threads; no bound without (see the module docs).
#[cfg(feature = "threads")]
pub trait MaybeSync: Send + Sync {}
#[cfg(feature = "threads")]
impl<T: Send + Sync + ?Sized> MaybeSync for T {}

/// `Send + Sync` in a build with threads; no bound without (see the module docs).
#[cfg(not(feature = "threads"))]
pub trait MaybeSync {}
#[cfg(not(feature = "threads"))]
impl<T: ?Sized> MaybeSync for T {}

/// Defines `fn name() -> &'static T`, initialised on first use by `init`: one value per process
/// with the `threads` feature, one per thread without (see the module docs).
#[macro_export]
#[doc(hidden)]
macro_rules! runtime_global {
    ($(#[$m:meta])* $vis:vis fn $name:ident() -> &'static $t:ty { $init:expr }) => {
        $(#[$m])*
        $vis fn $name() -> &'static $t {
            #[cfg(feature = "threads")]
            {
                static CELL: std::sync::OnceLock<$t> = std::sync::OnceLock::new();
                CELL.get_or_init(|| $init)
            }
            #[cfg(not(feature = "threads"))]
            {
                thread_local! {
                    static CELL: &'static $t = Box::leak(Box::new($init));
                }
                CELL.with(|c| *c)
            }
        }
    };
}
