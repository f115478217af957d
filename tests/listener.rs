//! Listener/Client against the real `python3` (API.md "Listener and Client"): a Python
//! Listener with an mpscript Client and the reverse, right and wrong authkeys, nested values,
//! a 10 MiB bytes message; and a listener that is fed garbage, silence and oversized frames
//! keeps serving. Each side prints its address or results on stdout; the test reads lines
//! (bounded by the processes' own timeouts), never sleeps.

use crate::common::bin;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("MPSCRIPT_LEAK_CHECK", "1")
        .spawn()
        .expect("process starts")
}

fn first_line(child: &mut Child) -> (String, BufReader<std::process::ChildStdout>) {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (line.trim().to_string(), out)
}

fn finish(
    mut child: Child,
    mut rest: BufReader<std::process::ChildStdout>,
) -> (i32, String, String) {
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut rest, &mut text);
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
    let st = child.wait().unwrap();
    (st.code().unwrap_or(-1), text, err)
}

const PY_SERVER: &str = r#"
import sys
from multiprocessing.connection import Listener
from multiprocessing import AuthenticationError
l = Listener(('127.0.0.1', 0), authkey=b'Hello World!')
print(l.address[1], flush=True)
for _ in range(2):
    try:
        c = l.accept()
    except AuthenticationError as e:
        print('server: AuthenticationError', flush=True)
        continue
    while True:
        try:
            m = c.recv()
        except EOFError:
            break
        c.send(m)
    print('server: done', flush=True)
"#;

#[test]
fn python_listener_mpscript_client() {
    let mut py = spawn(Command::new("timeout").args(["60", "python3", "-c", PY_SERVER]));
    let (port, rest) = first_line(&mut py);
    let script = format!(
        r#"
try {{ Client("127.0.0.1:{port}", "wrong"); }} catch (e) {{ print(`client: ${{e.error}}`); }}
let c = Client(["127.0.0.1", {port}], "Hello World!");
c.send(["Hello World", 100, "你好".to_blob(), #{{nested: [1, [2.5, ()], true]}}]);
print(c.recv());
c.send(blob(10485760, 7));
let b = c.recv();
print(`${{b.len()}} ${{b[0]}} ${{b[10485759]}}`);
c.close();
"#
    );
    let out = Command::new(bin())
        .args(["-e", &script])
        .env("MPSCRIPT_LEAK_CHECK", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "client: AuthenticationError\n[\"Hello World\", 100, [e4bda0e5a5bd], #{\"nested\": [1, [2.5, ()], true]}]\n10485760 7 7\n"
    );
    let (code, text, err) = finish(py, rest);
    assert_eq!(code, 0, "{err}");
    assert_eq!(text, "server: AuthenticationError\nserver: done\n");
}

const PY_CLIENT: &str = r#"
import sys
from multiprocessing.connection import Client
from multiprocessing import AuthenticationError
host, port = sys.argv[1].rsplit(':', 1)
try:
    Client((host, int(port)), authkey=b'wrong key')
except AuthenticationError:
    print('python: AuthenticationError')
c = Client(('localhost', int(port)), authkey=b'Hello World!')
c.send(['Hello World', 100, '你好'.encode('utf-8'), {'k': (1, 2), 3: None}])
print(c.recv())
c.send(b'x' * (10 << 20))
print(len(c.recv()))
c.close()
"#;

const MP_SERVER: &str = r#"
let serv = Listener(["127.0.0.1", 0], "Hello World!");
print(serv.address);
let served = 0;
while served < 1 {
    try {
        let c = serv.accept();
        try { loop { c.send(c.recv()); } } catch (e) { print(`mpscript: ${e.error}`); }
        served += 1;
    } catch (e) { print(`mpscript: accept ${e.error}`); }
}
serv.close();
"#;

#[test]
fn mpscript_listener_python_client() {
    let mut mp = spawn(Command::new(bin()).args(["-e", MP_SERVER]));
    let (addr, rest) = first_line(&mut mp);
    let out = Command::new("timeout")
        .args(["60", "python3", "-c", PY_CLIENT, &addr])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "python: AuthenticationError\n['Hello World', 100, b'\\xe4\\xbd\\xa0\\xe5\\xa5\\xbd', {'3': None, 'k': [1, 2]}]\n10485760\n"
    );
    let (code, text, err) = finish(mp, rest);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        text,
        "mpscript: accept AuthenticationError\nmpscript: EOFError\n"
    );
}

#[test]
fn listener_survives_garbage_silence_and_oversized_frames() {
    let server = r#"
let serv = Listener(["127.0.0.1", 0], "k");
print(serv.address);
let good = 0;
while good < 1 {
    try {
        let c = serv.accept();
        try { loop { c.send(c.recv()); } } catch (e) { print(`conn: ${e.error}`); }
        good += 1;
    } catch (e) { print(`accept: ${e.error}`); }
}
"#;
    let mut mp = spawn(Command::new(bin()).args(["-e", server]));
    let (addr, rest) = first_line(&mut mp);
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    // Garbage instead of a handshake answer.
    {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 64];
        let _ = std::io::Read::read(&mut s, &mut buf); // the challenge
        s.write_all(b"\xff\xff\xff\xf0garbage garbage").unwrap();
        let _ = std::io::Read::read(&mut s, &mut buf);
    }
    // Connects and never speaks: dropped after the handshake timeout.
    {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 256];
        let mut s2 = &s;
        let _ = std::io::Read::read(&mut s2, &mut buf); // the challenge
        let _ = std::io::Read::read(&mut s2, &mut buf); // EOF when the server gives up
    }
    // A real client sends a frame over the listener's 64 MiB limit: that connection closes.
    let client = format!(
        r#"
let c = Client("{addr}", "k");
c.send([1, 2]);
print(c.recv());
try {{
    c.send_bytes(blob(67108865, 0));   // the server refuses it part way (reset) ...
    c.recv();                          // ... or once it is sent (end of file)
}} catch (e) {{ print(`client: closed (${{e.error == "OSError" || e.error == "EOFError"}})`); }}
"#
    );
    let out = Command::new(bin()).args(["-e", &client]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[1, 2]\nclient: closed (true)\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, text, err) = finish(mp, rest);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        text,
        "accept: AuthenticationError\naccept: AuthenticationError\nconn: OSError\n"
    );
}
