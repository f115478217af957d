//! Queues across real forked processes: many producers and consumers, exactly-once delivery,
//! per-producer FIFO, delivery after the producer is SIGKILLed, consumers killed mid-get,
//! unbounded puts that never wait, and growth to large sizes.
//!
//! Tests fork, so they run one at a time (a global mutex) and children only touch the queue,
//! a pipe and `_exit`.

use mpscript_runtime::connection;
use mpscript_runtime::queues::{Handle, Kind, QueueCore};
use mpscript_runtime::waiting::Deadline;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{fork, reap, serial};

fn core(kind: Kind, maxsize: u64) -> Arc<QueueCore> {
    Handle::new(kind, maxsize).unwrap().core().unwrap()
}

fn forever() -> Option<Deadline> {
    Some(Deadline::after(Some(Duration::from_secs(60))))
}

fn item(p: u64, seq: u64) -> [u8; 8] {
    (p << 32 | seq).to_le_bytes()
}

// Acceptance: 4 producers x 4 consumers x 100 000 items, every item exactly once, FIFO per
// producer as seen by each consumer.
#[test]
fn four_by_four_by_100k_exactly_once() {
    let _s = serial();
    const P: u64 = 4;
    const C: usize = 4;
    const N: u64 = 100_000;
    let q = core(Kind::Queue, 0);
    let (rx, tx) = connection::pipe(false).unwrap();
    let mut pids = Vec::new();
    for p in 0..P {
        let q = q.clone();
        pids.push(fork(move || {
            for s in 0..N {
                q.put_raw(None, &item(p, s), &[], forever()).unwrap();
            }
        }));
    }
    for _ in 0..C {
        let (q, tx) = (q.clone(), tx.clone());
        pids.push(fork(move || {
            let mut got: Vec<u8> = Vec::new();
            loop {
                let (b, _) = q.get_raw(None, forever()).unwrap();
                if b.is_empty() {
                    break; // a stop marker
                }
                got.extend_from_slice(&b);
            }
            tx.send_raw(&got, &[]).unwrap();
        }));
    }
    for &pid in &pids[..P as usize] {
        assert_eq!(reap(pid), 0);
    }
    for _ in 0..C {
        q.put_raw(None, &[], &[], forever()).unwrap();
    }
    let mut seen = HashSet::new();
    for _ in 0..C {
        let f = rx.recv_raw(None).unwrap();
        let mut last = [None::<u64>; P as usize];
        for ch in f.bytes.chunks_exact(8) {
            let v = u64::from_le_bytes(ch.try_into().unwrap());
            let (p, s) = (v >> 32, v & 0xffff_ffff);
            if let Some(prev) = last[p as usize] {
                assert!(s > prev, "FIFO per producer broken: {prev} then {s}");
            }
            last[p as usize] = Some(s);
            assert!(seen.insert(v), "item {p}/{s} delivered twice");
        }
    }
    for &pid in &pids[P as usize..] {
        assert_eq!(reap(pid), 0);
    }
    assert_eq!(seen.len() as u64, P * N, "every item exactly once");
    assert_eq!(q.qsize().unwrap(), 0);
}

// An item whose put returned is delivered even if the producer is then SIGKILLed.
#[test]
fn items_survive_a_killed_producer() {
    let _s = serial();
    let q = core(Kind::Queue, 0);
    let (rx, tx) = connection::pipe(false).unwrap();
    let qc = q.clone();
    let pid = fork(move || {
        for i in 0..1000u64 {
            qc.put_raw(None, &i.to_le_bytes(), &[], forever()).unwrap();
        }
        tx.send_raw(b"put", &[]).unwrap();
        // SAFETY: the producer kills itself right after its puts returned.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    });
    assert_eq!(rx.recv_raw(None).unwrap().bytes, b"put");
    let st = reap(pid);
    assert!(libc::WIFSIGNALED(st));
    for i in 0..1000u64 {
        let (b, _) = q.get_raw(None, forever()).unwrap();
        assert_eq!(b, i.to_le_bytes());
    }
}

// Unbounded puts never wait for a consumer: a million items, then 1 GiB in 1 MiB items
// (growing the ring), all from one process with no consumer, then all read back in order.
#[test]
fn unbounded_put_never_waits_and_grows() {
    let _s = serial();
    let q = core(Kind::Queue, 0);
    for i in 0..1_000_000u64 {
        // No deadline: a put that had to wait would fail with Full instead.
        q.put_raw(None, &i.to_le_bytes(), &[], None).unwrap();
    }
    let big = vec![7u8; 1 << 20];
    for _ in 0..256 {
        q.put_raw(None, &big, &[], None).unwrap();
    }
    assert_eq!(q.qsize().unwrap(), 1_000_256);
    for i in 0..1_000_000u64 {
        let (b, _) = q.get_raw(None, None).unwrap();
        assert_eq!(b, i.to_le_bytes());
    }
    for _ in 0..256 {
        let (b, _) = q.get_raw(None, None).unwrap();
        assert!(b.len() == big.len() && b.iter().all(|&x| x == 7));
    }
    assert!(q.get_raw(None, None).is_err(), "Empty");
}

#[test]
#[ignore = "puts 4 GiB into a queue"]
fn four_gib_queued() {
    let _s = serial();
    let q = core(Kind::Queue, 0);
    let big = vec![3u8; 64 << 20];
    for _ in 0..64 {
        q.put_raw(None, &big, &[], None).unwrap();
    }
    for _ in 0..64 {
        assert_eq!(q.get_raw(None, None).unwrap().0.len(), big.len());
    }
}

// Growth while another process holds an old mapping: it remaps lazily and reads every item.
#[test]
fn growth_seen_by_another_process() {
    let _s = serial();
    let q = core(Kind::Queue, 0);
    let (rx, tx) = connection::pipe(false).unwrap();
    let (go_rx, go_tx) = connection::pipe(false).unwrap();
    let qc = q.clone();
    let pid = fork(move || {
        go_rx.recv_raw(None).unwrap();
        let mut ok = 0u64;
        for i in 0..20_000u64 {
            let (b, _) = qc.get_raw(None, forever()).unwrap();
            if b.len() == 1000 + (i % 7) as usize && b.iter().all(|&x| x == (i % 251) as u8) {
                ok += 1;
            }
        }
        tx.send_raw(&ok.to_le_bytes(), &[]).unwrap();
    });
    go_tx.send_raw(b"go", &[]).unwrap();
    for i in 0..20_000u64 {
        let v = vec![(i % 251) as u8; 1000 + (i % 7) as usize];
        q.put_raw(None, &v, &[], None).unwrap();
    }
    let ok = u64::from_le_bytes(rx.recv_raw(None).unwrap().bytes.try_into().unwrap());
    assert_eq!(ok, 20_000);
    assert_eq!(reap(pid), 0);
}

// Consumers SIGKILLed at random moments (sometimes inside the lock: OwnerDied) never make
// another consumer lose or duplicate an item: every item is reported at most once, and at
// most one item per kill is unaccounted for (taken by the killed consumer, not yet reported).
#[test]
fn killed_consumers_lose_nothing_they_did_not_take() {
    let _s = serial();
    const N: u64 = 200_000;
    let q = core(Kind::Queue, 0);
    for i in 0..N {
        q.put_raw(None, &i.to_le_bytes(), &[], None).unwrap();
    }
    let (rx, tx) = connection::pipe(false).unwrap();
    let spawn = |q: Arc<QueueCore>, tx: connection::Connection| {
        fork(move || loop {
            match q.get_raw(None, None) {
                Ok((b, _)) => tx.send_raw(&b, &[]).unwrap(),
                Err(_) => {
                    tx.send_raw(b"", &[]).unwrap();
                    break;
                }
            }
        })
    };
    let survivor = spawn(q.clone(), tx.clone());
    let mut kills = 0u64;
    let mut seen = HashSet::new();
    let mut done = false;
    for round in 0..30 {
        let victim = spawn(q.clone(), tx.clone());
        // Let it take some items, then kill it wherever it is.
        for _ in 0..(500 + round * 37) {
            let f = rx.recv_raw(None).unwrap();
            if f.bytes.is_empty() {
                done = true;
                break;
            }
            assert!(seen.insert(f.bytes), "an item was delivered twice");
        }
        // SAFETY: killing our own child.
        unsafe { libc::kill(victim, libc::SIGKILL) };
        reap(victim);
        kills += 1;
        if done {
            break;
        }
    }
    drop(tx);
    loop {
        match rx.recv_raw(None) {
            Ok(f) if f.bytes.is_empty() => {}
            Ok(f) => assert!(seen.insert(f.bytes), "an item was delivered twice"),
            Err(_) => break, // EOF: the survivor is done
        }
        if !done && q.qsize().unwrap() == 0 && !rx.poll(Some(Duration::from_secs(5))).unwrap() {
            break;
        }
    }
    reap(survivor);
    let missing = N - seen.len() as u64;
    assert!(
        missing <= kills,
        "{missing} items lost with only {kills} kills"
    );
    assert_eq!(q.qsize().unwrap(), 0);
}

// Bounded put: Full without blocking, or after its timeout; a put waiting for room is woken by
// a get in another process.
#[test]
fn bounded_queue_blocks_and_wakes() {
    let _s = serial();
    let q = core(Kind::Queue, 2);
    q.put_raw(None, b"a", &[], None).unwrap();
    q.put_raw(None, b"b", &[], None).unwrap();
    assert!(q.is_full().unwrap());
    assert!(q.put_raw(None, b"c", &[], None).is_err());
    assert!(q
        .put_raw(
            None,
            b"c",
            &[],
            Some(Deadline::after(Some(Duration::from_millis(50))))
        )
        .is_err());
    let qc = q.clone();
    let pid = fork(move || {
        let _ = qc.get_raw(None, forever());
    });
    q.put_raw(None, b"c", &[], forever()).unwrap();
    reap(pid);
    assert_eq!(q.qsize().unwrap(), 2);
}

// JoinableQueue: join returns when every item is task_done (done in another process); one
// task_done too many is an error.
#[test]
fn joinable_join_and_task_done() {
    let _s = serial();
    let q = core(Kind::Joinable, 0);
    for i in 0..100u64 {
        q.put_raw(None, &i.to_le_bytes(), &[], None).unwrap();
    }
    let qc = q.clone();
    let pid = fork(move || {
        for _ in 0..100 {
            qc.get_raw(None, forever()).unwrap();
            qc.task_done().unwrap();
        }
    });
    q.join(None).unwrap();
    assert!(q.task_done().is_err());
    reap(pid);
}
