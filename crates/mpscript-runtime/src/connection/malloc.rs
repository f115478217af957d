//! Keeps freed message buffers in the process instead of handing them back to the kernel.
//!
//! Why: with glibc's default dynamic thresholds, a 1 MiB message (the blob a script sends is
//! copied once by Rhai when passed as an argument, once more on receipt) is served from fresh
//! pages: the heap top is trimmed (`brk` down) as soon as two such buffers are freed, and the
//! next one faults in and zeroes 256 new pages. Measured on `pipe_tput_1MiB`: 67% of the time
//! in page faults, 135–250 MB/s; with the thresholds fixed at the values below, 3.3–3.8 GB/s
//! (same machine, interleaved runs). The values are the ceiling glibc's own dynamic scheme
//! grows to (`DEFAULT_MMAP_THRESHOLD_MAX` = 32 MiB, trim at twice that), so a process keeps
//! at most 64 MiB of freed heap at its top, and buffers of 32 MiB and more are still mapped
//! and unmapped on their own.
//!
//! Process-wide, so it is done once, and never when the user tuned malloc through the
//! environment (`GLIBC_TUNABLES=glibc.malloc...`, `MALLOC_*_`): their setting wins.

/// Below this size an allocation comes from the heap (glibc's `M_MMAP_THRESHOLD`).
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free heap above this at the top is returned to the kernel (glibc's `M_TRIM_THRESHOLD`).
const TRIM_THRESHOLD: i32 = 64 << 20;

/// Sets the thresholds (once per process; a no-op off glibc or when the user set them).
pub fn keep_message_buffers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let user_tuned = std::env::var_os("GLIBC_TUNABLES")
            .is_some_and(|v| v.to_string_lossy().contains("glibc.malloc."))
            || std::env::vars_os().any(|(k, _)| {
                let k = k.to_string_lossy();
                k.starts_with("MALLOC_") && k.ends_with('_')
            });
        if !user_tuned {
            set_thresholds();
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() {
    // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() {
    let _ = (MMAP_THRESHOLD, TRIM_THRESHOLD);
}
