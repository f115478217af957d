//! Memory: creating and dropping 10 000 Values and Arrays (and locks) returns the fd count and
//! the mappings of the process to where they started. Its own test binary, one test, so no
//! other test opens fds or maps memory meanwhile.

use mpscript_runtime::sharedmem::{Array, Shared, Typecode, Value};
use mpscript_runtime::synchronize::{Kind, LockObj};
use rhai::Dynamic;

fn maps_lines() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

fn vm_size_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let l = s.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    l.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn ten_thousand_values_and_arrays_leave_nothing_behind() {
    // Warm up whatever the first use allocates once (registries, thread-locals).
    drop(Value::new(Typecode('i'), &Dynamic::from(0_i64), true).unwrap());
    let (fds0, maps0, vm0) = (
        mpscript_runtime::hygiene::open_fds(),
        maps_lines(),
        vm_size_kb(),
    );
    let mut held = Vec::new();
    for i in 0..10_000_i64 {
        let v = Value::new(Typecode('q'), &Dynamic::from(i), true).unwrap();
        let a = Array(Shared::new(Kind::Array, Typecode('d'), 1000, true).unwrap());
        a.0.set(999, &Dynamic::from(1.0)).unwrap();
        let l = LockObj::new(true).unwrap();
        l.acquire(true, None).unwrap(); // dropped while held: unlocked, then unmapped
        if i % 1000 == 0 {
            held.push((v, a, l)); // some live a while, as a script's would
        }
    }
    assert!(
        mpscript_runtime::hygiene::open_fds() >= fds0 + 30,
        "the held ones are open"
    );
    drop(held);
    assert_eq!(
        mpscript_runtime::hygiene::open_fds(),
        fds0,
        "fds back to the start"
    );
    assert_eq!(maps_lines(), maps0, "mappings back to the start");
    assert!(
        vm_size_kb() <= vm0 + 1024,
        "VmSize back near the start: {} -> {}",
        vm0,
        vm_size_kb()
    );
}
