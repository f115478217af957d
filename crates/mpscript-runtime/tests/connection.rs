//! Connections across real forked processes: messages never torn or merged (1 B … 64 MiB,
//! 1 GiB ignored by default), several senders and several receivers on one end, EOF when the
//! peer is SIGKILLed, a receiver killed mid-message, corrupt or truncated frames.

use mpscript_runtime::connection::{self, framing};
mod common;
use common::{fork, reap, serial};

fn kind(e: &rhai::EvalAltResult) -> String {
    mpscript_runtime::errors::kind_of(e).unwrap_or_default()
}

fn pattern(len: usize, tag: u8) -> Vec<u8> {
    (0..len).map(|i| tag ^ (i as u8).wrapping_mul(31)).collect()
}

const SIZES: [usize; 8] = [1, 7, 4096, 65_535, 212_993, 1 << 20, 8 << 20, 64 << 20];

// Three processes send every size at once on one end; each message arrives whole.
#[test]
fn never_torn_or_merged_with_concurrent_senders() {
    let _s = serial();
    let (a, b) = connection::pipe(true).unwrap();
    let mut pids = Vec::new();
    for tag in 1..=3u8 {
        let b = b.clone();
        pids.push(fork(move || {
            for &n in &SIZES {
                b.send_raw(&pattern(n, tag), &[]).unwrap();
            }
        }));
    }
    let mut count = 0;
    for _ in 0..3 * SIZES.len() {
        let m = a.recv_raw(None).unwrap().bytes;
        assert!(
            SIZES.contains(&m.len()),
            "a torn or merged message: {} bytes",
            m.len()
        );
        let tag = m[0];
        assert_eq!(m, pattern(m.len(), tag), "content mixed between senders");
        count += 1;
    }
    for p in pids {
        assert_eq!(reap(p), 0);
    }
    assert_eq!(count, 24);
    assert!(!a.poll(Some(std::time::Duration::ZERO)).unwrap());
}

// Several receiving processes on one end: each gets whole messages, none twice, none lost.
#[test]
fn several_receivers_get_whole_messages() {
    let _s = serial();
    let (a, b) = connection::pipe(true).unwrap();
    let (rrx, rtx) = connection::pipe(false).unwrap();
    let mut pids = Vec::new();
    for _ in 0..3 {
        let (a, rtx) = (a.clone(), rtx.clone());
        pids.push(fork(move || loop {
            let m = a.recv_raw(None).unwrap().bytes;
            if m.is_empty() {
                break;
            }
            let ok = m == pattern(m.len(), m[0]);
            let mut report = (m.len() as u64).to_le_bytes().to_vec();
            report.push(m[0]);
            report.push(ok as u8);
            rtx.send_raw(&report, &[]).unwrap();
        }));
    }
    let n = 300;
    // Send from another process, so the reports can be read here meanwhile.
    let bs = b.clone();
    let sender = fork(move || {
        for i in 0..n {
            let len = [10usize, 100_000, 1 << 20][i % 3];
            bs.send_raw(&pattern(len, i as u8), &[]).unwrap();
        }
    });
    let mut got = 0;
    for _ in 0..n {
        let r = rrx.recv_raw(None).unwrap().bytes;
        assert_eq!(r[9], 1, "a receiver got a mixed message");
        got += 1;
    }
    reap(sender);
    for _ in 0..3 {
        b.send_raw(&[], &[]).unwrap();
    }
    for p in pids {
        assert_eq!(reap(p), 0);
    }
    assert_eq!(got, n);
}

#[test]
#[ignore = "sends a 1 GiB message and a 2 GiB + 1 B one (the long header)"]
fn one_gib_message_and_long_header() {
    let _s = serial();
    let (a, b) = connection::pipe(true).unwrap();
    for n in [1usize << 30, (2usize << 30) + 1] {
        let b = b.clone();
        let pid = fork(move || {
            b.send_raw(&vec![0x5a; n], &[]).unwrap();
        });
        let m = a.recv_raw(None).unwrap().bytes;
        assert_eq!(m.len(), n);
        assert!(m.iter().all(|&x| x == 0x5a));
        reap(pid);
    }
}

// recv on an end whose peer process was SIGKILLed: what was sent arrives, then EOFError.
#[test]
fn eof_after_peer_sigkilled() {
    let _s = serial();
    let (a, b) = connection::pipe(true).unwrap();
    let bc = b.clone();
    let pid = fork(move || {
        bc.send_raw(b"last words", &[]).unwrap();
        // SAFETY: the child kills itself, its fds closed by the kernel.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    });
    b.close();
    reap(pid);
    assert_eq!(a.recv_raw(None).unwrap().bytes, b"last words");
    let e = a.recv_raw(None).err().unwrap();
    assert_eq!(kind(&e), "EOFError");
}

// A receiver killed in the middle of a big message: the next receiver skips the rest and gets
// the following message whole.
#[test]
fn receiver_killed_mid_message_keeps_the_stream_framed() {
    let _s = serial();
    use std::io::Write;
    const N: usize = 32 << 20;
    let (a, b) = connection::pipe(true).unwrap();
    let (half_rx, half_tx) = connection::pipe(false).unwrap();
    let (go_rx, go_tx) = connection::pipe(false).unwrap();
    let sender = {
        let b = b.clone();
        fork(move || {
            // Half a frame, written raw, then wait until told to finish it.
            let fd = b.fileno().unwrap() as i32;
            // SAFETY: a dup of our own socket, closed when the File drops.
            let mut f =
                unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(libc::dup(fd)) };
            let data = pattern(N, 1);
            f.write_all(&framing::header(N as u64).0[..4]).unwrap();
            f.write_all(&data[..N / 2]).unwrap();
            half_tx.send_raw(b"half", &[]).unwrap();
            go_rx.recv_raw(None).unwrap();
            f.write_all(&data[N / 2..]).unwrap();
            b.send_raw(b"next", &[]).unwrap();
        })
    };
    let ac = a.clone();
    let victim = fork(move || {
        let _ = ac.recv_raw(None);
    });
    half_rx.recv_raw(None).unwrap();
    // The victim has read the header and everything sent so far once nothing is left to read.
    while a.poll(Some(std::time::Duration::from_millis(20))).unwrap() {}
    // SAFETY: killing our own child, blocked inside the message.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    reap(victim);
    go_tx.send_raw(b"go", &[]).unwrap();
    // On a loaded machine the victim may not have started before the kill: then the big
    // message comes whole first. Never a torn one.
    let m = a.recv_raw(None).unwrap().bytes;
    if m != b"next" {
        assert!(m == pattern(N, 1), "torn: {} bytes", m.len());
        assert_eq!(a.recv_raw(None).unwrap().bytes, b"next");
    }
    assert_eq!(reap(sender), 0);
}

// Corrupt or truncated frames are errors, never panics or hangs.
#[test]
fn corrupt_and_truncated_frames() {
    let _s = serial();
    use std::io::Write;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        ((-5i32).to_be_bytes().to_vec(), "OSError"),
        (vec![0, 0, 0, 10, 1, 2], "OSError"),
        (vec![0, 0], "OSError"),
        (
            [
                (-1i32).to_be_bytes().to_vec(),
                (1u64 << 62).to_be_bytes().to_vec(),
            ]
            .concat(),
            "OSError",
        ),
        (
            [
                (-1i32).to_be_bytes().to_vec(),
                (1u64 << 40).to_be_bytes().to_vec(),
                vec![1; 10],
            ]
            .concat(),
            "OSError",
        ),
    ];
    for (bytes, want) in cases {
        let (a, b) = connection::pipe(true).unwrap();
        let fd = b.fileno().unwrap() as i32;
        // SAFETY: writing raw bytes on our own socket, then closing our handle to it.
        let mut f =
            unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(libc::dup(fd)) };
        f.write_all(&bytes).unwrap();
        drop(f);
        b.close();
        let e = a.recv_raw(None).err().expect("an error");
        assert_eq!(kind(&e), want, "for {bytes:?}");
    }
    // A frame that is not a value's encoding: recv gives ValueError.
    let (a, b) = connection::pipe(true).unwrap();
    b.send_raw(&[0xff, 0xfe], &[]).unwrap();
    assert_eq!(kind(&a.recv(None).err().unwrap()), "ValueError");
}

// The long header: a length above 2 GiB - 1 is framed as -1 then 8 bytes (CPython's format).
#[test]
fn header_format_is_cpythons() {
    assert_eq!(framing::header(5).0[..4], [0, 0, 0, 5]);
    assert_eq!(framing::header(5).1, 4);
    let (h, n) = framing::header(0x8000_0000);
    assert_eq!(n, 12);
    assert_eq!(h[..4], [0xff; 4]);
    assert_eq!(
        u64::from_be_bytes(h[4..12].try_into().unwrap()),
        0x8000_0000
    );
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

// CPython's _TestConnection.test_connection sends a "really_big_msg" (16 MB); here blobs of
// every size around the receive paths' thresholds (the 16 KiB direct-blob read, a socket
// buffer, the 1 MiB send buffer; a buffer that grows past 64 MiB is covered above) go
// through `send`/`recv` from another process, with a plain value between each: all arrive
// intact and in order, and no fd is left behind.
#[test]
fn big_messages_across_the_thresholds_in_order() {
    let _s = serial();
    const BLOBS: [usize; 12] = [
        0,
        1,
        (16 << 10) - 1,
        16 << 10,
        (16 << 10) + 1,
        (32 << 10) + 5,
        212_993,
        (1 << 20) + 3,
        (2 << 20) - 1,
        8 << 20,
        (10 << 20) + 1,
        17 << 20,
    ];
    let before = open_fds();
    let (a, b) = connection::pipe(true).unwrap();
    let bc = b.clone();
    let pid = fork(move || {
        for (i, &n) in BLOBS.iter().enumerate() {
            bc.send(&rhai::Dynamic::from_blob(pattern(n, i as u8 + 1)))
                .unwrap();
            bc.send(&rhai::Dynamic::from_int(i as i64)).unwrap();
        }
    });
    b.close();
    for (i, &n) in BLOBS.iter().enumerate() {
        let v = a.recv(None).unwrap();
        let blob = v.into_blob().expect("a blob");
        assert_eq!(blob.len(), n, "message {i}");
        assert!(blob == pattern(n, i as u8 + 1), "message {i} corrupted");
        assert_eq!(a.recv(None).unwrap().as_int().unwrap(), i as i64);
    }
    assert_eq!(kind(&a.recv(None).err().unwrap()), "EOFError");
    assert_eq!(reap(pid), 0);
    // The handles hold the socket and the pair's lock region; all gone, nothing is left.
    drop((a, b));
    assert_eq!(open_fds(), before, "an fd leaked");
}

// A sender that dies in the middle of a large message's body (the receiver busy-polls, then
// blocks, for the rest): the receiver gets CPython's error for an end of file inside a
// message, never a hang or a short message; a blob `recv` (read straight into the Blob) too.
#[test]
fn sender_dies_mid_body() {
    let _s = serial();
    use std::io::Write;
    const N: usize = 4 << 20;
    for as_value in [false, true] {
        let (a, b) = connection::pipe(true).unwrap();
        let bc = b.clone();
        let pid = fork(move || {
            let fd = bc.fileno().unwrap() as i32;
            // SAFETY: a dup of our own socket, closed when the process dies.
            let mut f =
                unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(libc::dup(fd)) };
            let (prefix, np) = mpscript_runtime::wire::blob_prefix(N as u64);
            f.write_all(&framing::header((np + N) as u64).0[..4])
                .unwrap();
            f.write_all(&prefix[..np]).unwrap();
            f.write_all(&pattern(N / 3, 1)).unwrap();
            // SAFETY: the child kills itself mid-frame; the kernel closes its fds.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        });
        b.close();
        let e = if as_value {
            a.recv(None).err()
        } else {
            a.recv_raw(None).err()
        }
        .expect("an error, not a short message");
        assert_eq!(kind(&e), "OSError", "{e}");
        assert!(e.to_string().contains("end of file"), "{e}");
        reap(pid);
    }
}
