//! Listener/Client building blocks checked against real Python: plain-data pickles both ways
//! (protocols 2–5 read, 3 written), refusal of pickles that would run code, and the authkey
//! handshake's known answers (≥ 3.12 SHA-256 form and the legacy MD5 form).

use mpscript_runtime::listener::{auth, pickle};
use proptest::prelude::*;
use rhai::Dynamic;
use std::process::Command;

fn python(code: &str) -> Vec<u8> {
    let out = Command::new("python3")
        .args(["-c", code])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn py_pickle(expr: &str, proto: u8) -> Vec<u8> {
    python(&format!(
        "import pickle,sys; sys.stdout.buffer.write(pickle.dumps({expr}, protocol={proto}))"
    ))
}

#[test]
fn reads_python_plain_data_in_every_protocol() {
    let cases = [
        ("None", "()"),
        ("True", "true"),
        ("-7", "-7"),
        ("2**40", "1099511627776"),
        ("-(2**63)", "-9223372036854775808"),
        ("1.5", "1.5"),
        ("'héllo'", "\"héllo\""),
        ("b'\\x00\\xffab'", "[00ff6162]"),
        ("bytearray(b'xy')", "[7879]"),
        ("[1, [2, 3], ()]", "[1, [2, 3], []]"),
        ("(1, 'a')", "[1, \"a\"]"),
        ("{'a': 1, 2: 'b'}", "#{\"2\": \"b\", \"a\": 1}"),
        (
            "['Hello World', 100, '你好'.encode('utf-8')]",
            "[\"Hello World\", 100, [e4bda0e5a5bd]]",
        ),
    ];
    for proto in 2..=5 {
        for (expr, want) in cases {
            let v = pickle::loads(&py_pickle(expr, proto))
                .unwrap_or_else(|e| panic!("protocol {proto} {expr}: {e}"));
            assert_eq!(format!("{v:?}"), want, "protocol {proto} {expr}");
        }
    }
}

#[test]
fn shared_references_keep_their_contents() {
    // The same list twice: pickled once, then referenced through the memo.
    let v = pickle::loads(&py_pickle("(lambda l: [l, l])([1, 2])", 4)).unwrap();
    assert_eq!(format!("{v:?}"), "[[1, 2], [1, 2]]");
}

#[test]
fn python_reads_what_we_write() {
    let mut m = rhai::Map::new();
    m.insert("k".into(), Dynamic::from_blob(vec![1, 2]));
    let v = Dynamic::from_array(vec![
        Dynamic::UNIT,
        true.into(),
        (-(1_i64 << 40)).into(),
        2.5_f64.into(),
        "s".into(),
        m.into(),
    ]);
    let bytes = pickle::dumps(&v, "item").unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let out = python(&format!(
        "import pickle; print(repr(pickle.loads(bytes.fromhex('{hex}'))))"
    ));
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        "[None, True, -1099511627776, 2.5, 's', {'k': b'\\x01\\x02'}]"
    );
}

#[test]
fn refuses_pickles_that_would_run_code() {
    let evil = [
        "__import__('os').system",                    // GLOBAL / STACK_GLOBAL
        "__import__('collections').OrderedDict(a=1)", // REDUCE of a class
        "__import__('fractions').Fraction(1, 3)",     // REDUCE
        "type('X', (), {})",                          // a class by reference: fails to pickle
    ];
    for expr in &evil[..3] {
        for proto in 2..=5 {
            let e = pickle::loads(&py_pickle(expr, proto)).unwrap_err();
            let d = mpscript_runtime::errors::describe(&e);
            assert_eq!(d.kind, "ValueError", "{expr}: {}", d.message);
            assert!(d.message.contains("refused"), "{expr}: {}", d.message);
        }
    }
    // Hand-made: os.system('echo pwned') through GLOBAL + REDUCE (protocol 0 style).
    let raw = b"cos\nsystem\n(S'echo pwned'\ntR.";
    assert!(pickle::loads(raw).is_err());
    // An object built with BUILD from a custom class (as pickled by Python 2 / protocol 2).
    let obj = py_pickle("__import__('argparse').Namespace(a=1)", 2);
    assert!(pickle::loads(&obj).is_err());
}

#[test]
fn big_ints_and_recursive_lists_are_value_errors() {
    let e = pickle::loads(&py_pickle("2**70", 4)).unwrap_err();
    assert_eq!(mpscript_runtime::errors::describe(&e).kind, "ValueError");
    let e = pickle::loads(&py_pickle("(lambda a: (a.append(a), a)[1])([])", 4)).unwrap_err();
    assert_eq!(mpscript_runtime::errors::describe(&e).kind, "ValueError");
}

#[test]
fn unpicklable_values_name_their_path() {
    let v = Dynamic::from_array(vec![1_i64.into(), 'c'.into()]);
    let e = pickle::dumps(&v, "item").unwrap_err();
    let d = mpscript_runtime::errors::describe(&e);
    assert_eq!(d.kind, "SendError");
    assert!(d.message.contains("item[1]: char"), "{}", d.message);
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = pickle::loads(&bytes);
    }

    #[test]
    fn random_bytes_after_a_header_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut b = vec![0x80, 4];
        b.extend(bytes);
        let _ = pickle::loads(&b);
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn handshake_known_answers() {
    let key = b"Hello World!";
    // >= 3.12: {sha256} + HMAC-SHA256 over the whole message, prefix included.
    let mut msg = b"{sha256}".to_vec();
    msg.extend(0u8..40);
    let resp = auth::create_response(key, &msg).unwrap();
    let mut want = b"{sha256}".to_vec();
    want.extend(unhex(
        "0749b1fa051cda9bdc9d3ec0c1aad5e5d7b2f68d99e1ca9ac60b69e6b8670aed",
    ));
    assert_eq!(resp, want);
    auth::verify_response(key, &msg, &resp).unwrap();
    // A legacy (<= 3.11) peer answers a modern challenge with raw HMAC-MD5 of it.
    auth::verify_response(key, &msg, &unhex("f74c9f37dbbe34879fec590ce40d73c7")).unwrap();
    // A legacy challenge: 20 bytes, answered with raw HMAC-MD5.
    let legacy: Vec<u8> = (100u8..120).collect();
    assert_eq!(
        auth::create_response(key, &legacy).unwrap(),
        unhex("bbff91fb9c513d9f2a16ca1076c7f12b")
    );
    // Wrong key.
    let e = auth::verify_response(b"wrong", &msg, &resp).unwrap_err();
    assert_eq!(
        mpscript_runtime::errors::describe(&e).kind,
        "AuthenticationError"
    );
}

/// Two ends of an in-memory message pipe, one per thread.
struct Chan(
    std::sync::mpsc::Sender<Vec<u8>>,
    std::sync::mpsc::Receiver<Vec<u8>>,
);

impl auth::MessageIo for Chan {
    fn send_msg(&mut self, b: &[u8]) -> mpscript_runtime::errors::RtResult<()> {
        self.0.send(b.to_vec()).map_err(|_| "closed".into())
    }
    fn recv_msg(&mut self, max: usize) -> mpscript_runtime::errors::RtResult<Vec<u8>> {
        let m = self.1.recv().map_err(|_| "closed")?;
        assert!(m.len() <= max);
        Ok(m)
    }
}

fn pair() -> (Chan, Chan) {
    let (a_tx, b_rx) = std::sync::mpsc::channel();
    let (b_tx, a_rx) = std::sync::mpsc::channel();
    (Chan(a_tx, a_rx), Chan(b_tx, b_rx))
}

#[test]
fn handshake_both_roles_right_and_wrong_key() {
    for (k1, k2, ok) in [
        (&b"secret"[..], &b"secret"[..], true),
        (b"secret", b"other", false),
    ] {
        let (mut a, mut b) = pair();
        let (k1, k2) = (k1.to_vec(), k2.to_vec());
        let t = std::thread::spawn(move || auth::answer_challenge(&mut b, &k2).is_ok());
        let server = auth::deliver_challenge(&mut a, &k1).is_ok();
        let client = t.join().unwrap();
        assert_eq!((server, client), (ok, ok));
    }
}
