//! The frame reader fed random bytes (issue 8: "a fuzz or property test feeds random bytes to
//! the frame reader"): it returns a frame, end-of-file or an error — never a panic, never a
//! hang (the writer is closed, so every read ends), never a huge allocation.

use mpscript_runtime::connection::framing::recv_frame;
use proptest::prelude::*;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU64;

fn read_all(bytes: &[u8], max: Option<u64>) {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut w = b;
    w.write_all(bytes).unwrap();
    drop(w);
    let skip = AtomicU64::new(0);
    // Read frames until EOF or an error; each read consumes bytes, so this ends.
    for _ in 0..bytes.len() + 1 {
        match recv_frame(a.as_raw_fd(), max, &skip) {
            Ok(Some(f)) => assert!(f.bytes.len() <= bytes.len()),
            Ok(None) | Err(_) => break,
        }
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        read_all(&bytes, None);
        read_all(&bytes, Some(64));
    }

    #[test]
    fn random_frames_with_valid_headers(payload in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..310) {
        // A well-formed frame, possibly truncated anywhere.
        let mut b = (payload.len() as i32).to_be_bytes().to_vec();
        b.extend(&payload);
        b.truncate(cut.min(b.len()));
        read_all(&b, None);
    }
}

#[test]
fn huge_and_negative_lengths_are_errors() {
    for header in [
        (-2i32).to_be_bytes().to_vec(),
        i32::MAX.to_be_bytes().to_vec(),
        [(-1i32).to_be_bytes(), [0x7f; 4]]
            .concat()
            .into_iter()
            .chain([0xff; 4])
            .collect(),
    ] {
        read_all(&header, None);
    }
}
