//! Pools on a broker (issue 15), against a real `redis-server` and real `mpscript worker`
//! processes: each test starts its own server on a Unix socket in a temp dir and its own
//! workers, and stops them all when it ends (even on failure).
//!
//! Without `redis-server` these tests skip with a printed reason — except under CI (`CI` set),
//! where they fail: `.ci/run` installs it.

use crate::common::{bin, run_env, wait_gone, Run};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// A redis-server and the workers started against it; everything is killed on drop.
struct Cluster {
    dir: PathBuf,
    server: Option<Child>,
    workers: Vec<Worker>,
    /// Extra redis-server arguments (a password, an ACL user, TLS).
    extra: Vec<String>,
    /// The URL scripts and workers use (default: the Unix socket).
    url: Option<String>,
}

/// A running `mpscript worker` and the lines it prints (stdout and stderr, merged).
struct Worker {
    child: Child,
    lines: Receiver<String>,
}

fn have_redis() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("redis-server is missing under CI (.ci/run installs it)");
        }
        eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
    }
    found
}

/// Forwards a pipe's lines to a channel.
fn lines_of(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (bounded) for a line containing `needle`; returns it.
fn expect_line(rx: &Receiver<String>, needle: &str, limit: Duration) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return l,
            Ok(_) => continue,
            Err(_) => panic!("no line with {needle:?} within {limit:?}"),
        }
    }
}

impl Cluster {
    /// A fresh server; `None` (skip) when redis-server is not installed outside CI.
    fn start(name: &str) -> Option<Cluster> {
        Cluster::start_with(name, |_| (Vec::new(), None))
    }

    /// A fresh server with extra arguments and its own URL, both made from the temp dir.
    fn start_with(
        name: &str,
        setup: impl FnOnce(&std::path::Path) -> (Vec<String>, Option<String>),
    ) -> Option<Cluster> {
        if !have_redis() {
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("mpscript-broker-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (extra, url) = setup(&dir);
        let mut c = Cluster {
            dir,
            server: None,
            workers: Vec::new(),
            extra,
            url,
        };
        c.start_server();
        Some(c)
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    fn url(&self) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| format!("unix://{}", self.sock().display()))
    }

    fn start_server(&mut self) {
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(self.sock())
            .args(["--unixsocketperm", "700", "--logfile", ""])
            .args(&self.extra)
            .current_dir(&self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("redis-server starts");
        let rx = lines_of(child.stdout.take().unwrap());
        self.server = Some(child);
        expect_line(&rx, "to accept connections", Duration::from_secs(20));
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
    }

    fn kill_server(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
    }

    /// Starts `mpscript worker` with `args` after the broker URL.
    fn worker(&mut self, args: &[&str]) -> usize {
        let url = self.url();
        self.worker_at(&url, args, &[])
    }

    /// Starts `mpscript worker` on `url` with `args` and extra environment variables.
    fn worker_at(&mut self, url: &str, args: &[&str], env: &[(&str, &str)]) -> usize {
        let mut child = Command::new(bin())
            .arg("worker")
            .arg("--broker")
            .arg(url)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("MPSCRIPT_AUTHKEY")
            .process_group(0)
            .spawn()
            .expect("mpscript worker starts");
        let out = lines_of(child.stdout.take().unwrap());
        let err = lines_of(child.stderr.take().unwrap());
        let (tx, rx) = channel();
        for src in [out, err] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                while let Ok(l) = src.recv() {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
        }
        expect_line(&rx, "serving", Duration::from_secs(20));
        self.workers.push(Worker { child, lines: rx });
        self.workers.len() - 1
    }

    /// Runs a script (written to the temp dir) with `MPSCRIPT_BROKER` set to this server.
    fn run(&self, name: &str, script: &str, limit: Duration) -> Run {
        let path = self.dir.join(format!("{name}.rhai"));
        std::fs::write(&path, script).unwrap();
        let url = self.url();
        run_env(
            &[path.to_str().unwrap()],
            "",
            Some(&self.dir),
            limit,
            &[("MPSCRIPT_BROKER", &url)],
        )
    }

    /// Starts a script without waiting for it (for tests that kill things under it).
    fn spawn_script(&self, name: &str, script: &str) -> (Child, Receiver<String>) {
        let path = self.dir.join(format!("{name}.rhai"));
        std::fs::write(&path, script).unwrap();
        let mut child = Command::new(bin())
            .arg(&path)
            .env("MPSCRIPT_BROKER", self.url())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let rx = lines_of(child.stdout.take().unwrap());
        (child, rx)
    }

    /// `redis-cli` on this server.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(self.sock())
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for w in &mut self.workers {
            // SAFETY: kill(2) on the process group we made for this worker.
            unsafe { libc::kill(-(w.child.id() as i32), libc::SIGKILL) };
            let _ = w.child.wait();
        }
        self.kill_server();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ok(r: &Run) {
    assert_eq!(r.status, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
}

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn broker_map_order_imap_callbacks_closures() {
    let Some(mut c) = Cluster::start("basics") else {
        return;
    };
    c.worker(&["--procs", "2"]);
    let r = c.run(
        "basics",
        r#"
        const OFFSET = 100;
        fn sq(x) { x * x }
        fn add(a, b) { a + b + global::OFFSET }
        let p = Pool(#{lease: 5});
        print(p.map(sq, range(0, 20)));
        print(p.map(sq, range(0, 7), 3));
        print(p.starmap(add, [[1, 2], [3, 4]]));
        let seen = [];
        for v in p.imap_unordered(sq, [1, 2, 3, 4, 5]) { seen.push(v) }
        seen.sort();
        print(seen);
        let ordered = [];
        for v in p.imap(sq, [3, 1, 2]) { ordered.push(v) }
        print(ordered);
        let k = 7;
        let curried = |x| x + k;
        print(p.map(curried, [1, 2, 3]));
        let got = [];
        let r = p.apply_async(add, [1, 1], #{callback: |v| print(`callback ${v}`)});
        print(r.get());
        let m = p.map_async(sq, [2, 3], #{callback: |v| print(`map callback ${v}`)});
        print(m.get());
        p.close();
        p.join();
        let ex = ProcessPoolExecutor();
        let fs = [ex.submit(sq, 4), ex.submit(add, 1, 2)];
        let done = [];
        for f in as_completed(fs) { done.push(f.result()) }
        done.sort();
        print(done);
        print(wait(fs).done.len());
        print(ex.map(sq, [5, 6]));
        ex.shutdown();
        "#,
        LIMIT,
    );
    ok(&r);
    assert_eq!(
        r.stdout,
        "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81, 100, 121, 144, 169, 196, 225, 256, 289, 324, 361]\n\
         [0, 1, 4, 9, 16, 25, 36]\n[103, 107]\n[1, 4, 9, 16, 25]\n[9, 1, 4]\n[8, 9, 10]\n\
         callback 102\n102\nmap callback [4, 9]\n[4, 9]\n[16, 103]\n2\n[25, 36]\n"
    );
    // Nothing of the finished pools is left on the broker.
    let keys = c.cli(&["--scan", "--pattern", "mpscript:pool:*"]);
    assert_eq!(keys.trim(), "", "pool keys left: {keys}");
}

#[test]
fn broker_remote_error_and_send_error() {
    let Some(mut c) = Cluster::start("errors") else {
        return;
    };
    c.worker(&["--procs", "1"]);
    let r = c.run(
        "errors",
        r#"
        fn bad(x) { if x == 2 { throw #{error: "ValueError", message: `bad ${x}`} } x }
        let p = Pool();
        try { p.map(bad, [1, 2, 3]); print("no error") } catch (e) {
            print(e.error);
            print(e.remote.error);
            print(e.remote.message);
            print(e.traceback.contains("bad"));
        }
        let q = Queue();
        try { p.apply(|q| 1, [q]); print("sent") } catch (e) { print(e.error); print(e.message) }
        let l = Lock();
        try { p.map(|x| x, [1, l]); print("sent") } catch (e) { print(e.error); print(e.message) }
        try { Pool(#{broker: "http://nowhere"}) } catch (e) { print(e.error) }
        try { Pool(#{broker: "unix:///nonexistent/mpscript.sock"}) } catch (e) { print(e.error) }
        let net = Manager(#{address: "127.0.0.1:0", authkey: "k"});
        let seen = net.list([]);
        p.map(|x| { seen.push(x); x }, [1, 2, 3]);
        print(seen.len());
        let local = Manager();
        let d = local.dict(#{});
        try { p.apply(|d| 1, [d]); print("sent") } catch (e) { print(e.error); print(e.message) }
        p.close();
        p.join();
        "#,
        LIMIT,
    );
    ok(&r);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[..4],
        ["RemoteError", "ValueError", "bad 2", "true"],
        "{}",
        r.stdout
    );
    assert_eq!(lines[4], "SendError");
    assert!(lines[5].contains("Queue") && lines[5].contains("not sendable to a remote worker"));
    assert_eq!(lines[6], "SendError");
    assert!(
        lines[7].contains("args[1]") && lines[7].contains("Lock"),
        "{}",
        lines[7]
    );
    // A bad scheme, an unreachable socket.
    assert_eq!(lines[8..10], ["ValueError", "OSError"], "{}", r.stdout);
    // A networked manager's proxies travel; a local (abstract-socket) manager's do not.
    assert_eq!(lines[10], "3");
    assert_eq!(lines[11], "SendError");
    assert!(lines[12].contains("DictProxy (not sendable to a remote worker)"));
}

/// Runs a one-task script whose task prints its pid and sleeps; SIGKILLs that worker.
fn kill_mid_task(retries: i64) -> (String, usize) {
    let Some(mut c) = Cluster::start(&format!("kill{retries}")) else {
        return (String::new(), 0);
    };
    let w = c.worker(&["--procs", "1"]);
    let script = format!(
        r#"
        let p = Pool(#{{lease: 2, retries: {retries}}});
        let r = p.apply_async(|| {{ print(`TASK ${{getpid()}}`); sleep(1.5); "finished" }}, []);
        try {{ print(r.get()) }} catch (e) {{ print(e.error); print(e.message) }}
        p.close();
        p.join();
        "#
    );
    let (mut child, out) = c.spawn_script("kill", &script);
    let line = expect_line(&c.workers[w].lines, "TASK ", LIMIT);
    let pid: i32 = line.trim_start_matches("TASK ").trim().parse().unwrap();
    // SAFETY: kill(2) on the worker process that printed its pid.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(wait_gone(pid, 10_000));
    let status = child.wait().unwrap();
    // The script has exited: its output ends (EOF) once the reader has it all.
    let text: Vec<String> = out.iter().collect();
    assert!(status.success(), "{text:?}");
    let runs = 1 + c.workers[w]
        .lines
        .try_iter()
        .filter(|l| l.contains("TASK "))
        .count();
    (text.join("\n"), runs)
}

#[test]
fn broker_sigkill_mid_task_no_retries_is_broken_pool() {
    let (out, _) = kill_mid_task(0);
    if out.is_empty() {
        return;
    }
    assert!(out.starts_with("BrokenProcessPool\n"), "{out}");
    assert!(out.contains("lease"), "{out}");
}

#[test]
fn broker_sigkill_mid_task_with_retries_runs_again() {
    let (out, runs) = kill_mid_task(2);
    if out.is_empty() {
        return;
    }
    assert_eq!(out, "finished");
    assert!(runs >= 1);
}

#[test]
fn broker_poison_task_fails_alone() {
    let Some(mut c) = Cluster::start("poison") else {
        return;
    };
    c.worker(&["--procs", "2"]);
    let r = c.run(
        "poison",
        r#"
        let p = Pool(#{lease: 2, retries: 1});
        let rs = [1, 2, 3, 4].map(|x| p.apply_async(|x| { if x == 3 { exit(9) } x * 10 }, [x]));
        for r in rs {
            try { print(r.get()) } catch (e) { print(e.error); print(e.message.contains("poison")) }
        }
        p.close();
        p.join();
        "#,
        LIMIT,
    );
    ok(&r);
    assert_eq!(r.stdout, "10\n20\nBrokenProcessPool\ntrue\n40\n");
}

#[test]
fn broker_without_workers_is_broken_pool() {
    let Some(c) = Cluster::start("noworkers") else {
        return;
    };
    let r = c.run(
        "noworkers",
        r#"
        let p = Pool(#{lease: 2});
        try { p.apply(|| 1, []) } catch (e) { print(e.error); print(e.message.contains("no live worker")) }
        let ex = ProcessPoolExecutor(#{lease: 2});
        let f = ex.submit(|| 1);
        try { f.result() } catch (e) { print(e.error) }
        try { ex.submit(|| 2) } catch (e) { print(e.error) }
        "#,
        LIMIT,
    );
    ok(&r);
    assert_eq!(
        r.stdout,
        "BrokenProcessPool\ntrue\nBrokenProcessPool\nBrokenProcessPool\n"
    );
}

#[test]
fn broker_killed_is_os_error() {
    let Some(mut c) = Cluster::start("brokerkilled") else {
        return;
    };
    let w = c.worker(&["--procs", "1"]);
    let (mut child, out) = c.spawn_script(
        "brokerkilled",
        r#"
        let p = Pool(#{lease: 2});
        let r = p.apply_async(|| { print(`TASK ${getpid()}`); sleep(30); 1 }, []);
        try { print(r.get()) } catch (e) { print(e.error) }
        "#,
    );
    expect_line(&c.workers[w].lines, "TASK ", LIMIT);
    c.kill_server();
    let status = child.wait().unwrap();
    // The script has exited: its output ends (EOF) once the reader has it all.
    let text: Vec<String> = out.iter().collect();
    assert!(status.success(), "{text:?}");
    assert_eq!(text, ["OSError"]);
}

#[test]
fn broker_wrong_authkey_is_refused() {
    let Some(mut c) = Cluster::start("authkey") else {
        return;
    };
    let w = c.worker(&["--procs", "1", "--authkey", "the-workers-key"]);
    let r = c.run(
        "authkey",
        r#"
        let p = Pool(#{authkey: "another-key"});
        try { p.apply(|| 1, []); print("ran") } catch (e) { print(e.error) }
        let q = Pool(#{authkey: "the-workers-key"});
        print(q.apply(|| 42, []));
        "#,
        LIMIT,
    );
    ok(&r);
    assert_eq!(r.stdout, "AuthenticationError\n42\n");
    expect_line(&c.workers[w].lines, "refusing", Duration::from_secs(10));
}

#[test]
fn broker_64_mib_blob_and_oversized_refused() {
    let Some(mut c) = Cluster::start("blob") else {
        return;
    };
    c.worker(&["--procs", "1"]);
    let r = c.run(
        "blob",
        r#"
        let p = Pool();
        let b = blob(64 * 1024 * 1024, 7);
        let back = p.apply(|b| { b[1000] = 9; b }, [b]);
        print(back.len());
        print(back[1000]);
        let big = blob(65 * 1024 * 1024);
        try { p.apply(|b| b.len(), [big]) } catch (e) { print(e.error); print(e.message.contains("limit")) }
        p.close();
        p.join();
        "#,
        Duration::from_secs(120),
    );
    ok(&r);
    assert_eq!(r.stdout, "67108864\n9\nSendError\ntrue\n");
}

#[test]
fn broker_master_killed_leaves_expiring_keys_and_workers_serve_on() {
    let Some(mut c) = Cluster::start("masterkilled") else {
        return;
    };
    let w = c.worker(&["--procs", "1"]);
    let (mut child, _out) = c.spawn_script(
        "masterkilled",
        r#"
        let p = Pool(#{lease: 2});
        let rs = p.map_async(|x| { print(`TASK ${x}`); sleep(0.2); x }, range(0, 20), 1);
        rs.get();
        "#,
    );
    expect_line(&c.workers[w].lines, "TASK ", LIMIT);
    let _ = child.kill();
    let _ = child.wait();
    // Every key a master made has a TTL (only the workers' shared stream and registry don't).
    let keys = c.cli(&["--scan", "--pattern", "mpscript:*"]);
    for k in keys.lines().filter(|k| !k.is_empty()) {
        if k == "mpscript:tasks" || k == "mpscript:workers" || k.starts_with("mpscript:hb:") {
            continue;
        }
        let ttl: i64 = c.cli(&["PTTL", k]).trim().parse().unwrap_or(-3);
        assert!(ttl > 0 || ttl == -2, "key {k} has no TTL ({ttl})");
    }
    // The same workers serve the next script.
    let r = c.run(
        "after",
        "let p = Pool(); print(p.map(|x| x + 1, [1, 2])); p.close(); p.join();",
        LIMIT,
    );
    ok(&r);
    assert_eq!(r.stdout, "[2, 3]\n");
}

#[test]
fn broker_script_the_worker_cannot_fetch_is_an_error() {
    let Some(mut c) = Cluster::start("nofetch") else {
        return;
    };
    let (mut child, out) = c.spawn_script(
        "nofetch",
        r#"
        let p = Pool(#{lease: 30, processes: 1});
        print("READY");
        try { print(p.apply(|| 1, [])) } catch (e) { print(e.error); print(e.message) }
        "#,
    );
    expect_line(&out, "READY", LIMIT);
    // The program vanishes from the broker before any worker fetched it.
    for k in c.cli(&["--scan", "--pattern", "mpscript:script:*"]).lines() {
        if !k.is_empty() {
            c.cli(&["DEL", k]);
        }
    }
    c.worker(&["--procs", "1"]);
    let status = child.wait().unwrap();
    // The script has exited: its output ends (EOF) once the reader has it all.
    let text: Vec<String> = out.iter().collect();
    assert!(status.success(), "{text:?}");
    assert_eq!(text[0], "OSError", "{text:?}");
    assert!(text[1].contains("cannot fetch script"), "{text:?}");
}

#[test]
fn broker_worker_maxtasksperchild_replaces_workers() {
    let Some(mut c) = Cluster::start("maxtasks") else {
        return;
    };
    c.worker(&["--procs", "1", "--maxtasksperchild", "1"]);
    let r = c.run(
        "maxtasks",
        r#"
        let p = Pool();
        let pids = p.map(|x| getpid(), [1, 2, 3, 4], 1);
        let distinct = [];
        for x in pids { if !distinct.contains(x) { distinct.push(x) } }
        print(distinct.len());
        p.close();
        p.join();
        "#,
        LIMIT,
    );
    ok(&r);
    assert_eq!(r.stdout, "4\n");
}

#[test]
fn broker_ctrl_c_interrupts_a_wait() {
    let Some(mut c) = Cluster::start("ctrlc") else {
        return;
    };
    let w = c.worker(&["--procs", "1"]);
    let (mut child, _out) = c.spawn_script(
        "ctrlc",
        r#"
        let p = Pool(#{lease: 30});
        p.apply(|| { print(`TASK ${getpid()}`); sleep(30); 1 }, []);
        print("not interrupted");
        "#,
    );
    expect_line(&c.workers[w].lines, "TASK ", LIMIT);
    let pid = child.id() as i32;
    // SAFETY: kill(2) on the script's process.
    unsafe { libc::kill(pid, libc::SIGINT) };
    assert!(wait_gone(pid, 10_000), "the script did not stop on Ctrl-C");
    assert_eq!(child.wait().unwrap().code(), Some(130));
}

/// A TCP port nobody listens on now (the kernel's pick; a tiny race with other binders).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn broker_password_from_the_url_and_wrong_password_is_authentication_error() {
    let port = free_port();
    let Some(mut c) = Cluster::start_with("requirepass", |_| {
        (
            vec![
                "--port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--requirepass".into(),
                "s3cret".into(),
            ],
            Some(format!("redis://:s3cret@127.0.0.1:{port}")),
        )
    }) else {
        return;
    };
    c.worker(&["--procs", "1"]);
    let r = c.run(
        "requirepass",
        &format!(
            r#"
            print(Pool().map(|x| x * 2, [1, 2, 3]));
            for url in ["redis://:wrong@127.0.0.1:{port}", "redis://127.0.0.1:{port}"] {{
                try {{ Pool(#{{broker: url}}); print("connected") }}
                catch (e) {{ print(e.error); print(e.message.contains("***") || !url.contains("wrong")) }}
            }}
            "#
        ),
        LIMIT,
    );
    ok(&r);
    assert_eq!(
        r.stdout,
        "[2, 4, 6]\nAuthenticationError\ntrue\nAuthenticationError\ntrue\n"
    );
    assert!(!r.stderr.contains("wrong@"), "password shown: {}", r.stderr);
}

#[test]
fn broker_acl_user_from_the_url() {
    let port = free_port();
    let Some(mut c) = Cluster::start_with("acluser", |_| {
        (
            vec![
                "--port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--user".into(),
                "default".into(),
                "off".into(),
                "--user".into(),
                "mp".into(),
                "on".into(),
                ">pw".into(),
                "~*".into(),
                "&*".into(),
                "+@all".into(),
            ],
            Some(format!("redis://mp:pw@127.0.0.1:{port}")),
        )
    }) else {
        return;
    };
    c.worker(&["--procs", "2"]);
    let r = c.run(
        "acluser",
        &format!(
            r#"
            let ex = ProcessPoolExecutor();
            print(ex.submit(|a, b| a + b, 2, 3).result());
            ex.shutdown();
            try {{ Pool(#{{broker: "redis://mp:nope@127.0.0.1:{port}"}}) }}
            catch (e) {{ print(e.error) }}
            "#
        ),
        LIMIT,
    );
    ok(&r);
    assert_eq!(r.stdout, "5\nAuthenticationError\n");
}

/// Makes a CA and a server certificate for 127.0.0.1/localhost with the `openssl` CLI;
/// `None` (skip, with the reason) when it is missing.
fn make_certs(dir: &std::path::Path) -> Option<()> {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output();
        match out {
            Ok(o) if o.status.success() => Some(()),
            Ok(o) => panic!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => {
                eprintln!("skipped: no openssl CLI ({e})");
                None
            }
        }
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=mpscript test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&ca)?;
    let mut req = vec!["req", "-nodes"];
    req.extend(ec);
    req.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&req)?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])
}

#[test]
fn broker_over_tls_with_a_private_ca() {
    let port = free_port();
    let mut certs = None;
    let Some(mut c) = Cluster::start_with("tls", |dir| {
        certs = make_certs(dir);
        let f = |n: &str| dir.join(n).display().to_string();
        let args = if certs.is_some() {
            vec![
                "--tls-port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--tls-cert-file".into(),
                f("server.pem"),
                "--tls-key-file".into(),
                f("server.key"),
                "--tls-ca-cert-file".into(),
                f("ca.pem"),
                "--tls-auth-clients".into(),
                "no".into(),
            ]
        } else {
            Vec::new()
        };
        (args, Some(format!("rediss://127.0.0.1:{port}")))
    }) else {
        return;
    };
    if certs.is_none() {
        return;
    }
    let ca = c.dir.join("ca.pem").display().to_string();
    let plain = format!("rediss://127.0.0.1:{port}");
    // The worker trusts the CA through the environment, the master through the URL.
    c.worker_at(&plain, &["--procs", "2"], &[("MPSCRIPT_BROKER_CA", &ca)]);
    let with_ca = format!("{plain}/?ca={ca}");
    let r = c.run(
        "tls",
        &format!(
            r#"
            let p = Pool(#{{broker: "{with_ca}"}});
            print(p.map(|x| x + 1, range(0, 10)));
            p.close();
            p.join();
            try {{ Pool(#{{broker: "{plain}"}}); print("trusted an unknown CA") }}
            catch (e) {{ print(e.error) }}
            "#
        ),
        LIMIT,
    );
    ok(&r);
    assert_eq!(r.stdout, "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nOSError\n");
}

#[test]
fn broker_callbacks_run_in_any_wait() {
    // API.md: a pool's callbacks run whenever the parent waits in a runtime call, not only
    // in waits on the pool itself: here `sleep` and `Queue.get` with a timeout.
    let Some(mut c) = Cluster::start("anywait") else {
        return;
    };
    c.worker(&["--procs", "1"]);
    let r = c.run(
        "anywait",
        r#"
        let p = Pool(#{lease: 5});
        let got = [];
        p.apply_async(|x| x * 10, [4], #{callback: |v| got.push(v)});
        let n = 0;
        while got.is_empty() && n < 600 { sleep(0.1); n += 1; }
        print(got);
        let q = Queue();
        let more = [];
        p.apply_async(|x| x + 1, [1], #{callback: |v| more.push(v)});
        let n = 0;
        while more.is_empty() && n < 600 {
            try { q.get(true, 0.1) } catch (e) { if e.error != "Empty" { throw e } }
            n += 1;
        }
        print(more);
        p.close();
        p.join();
        "#,
        LIMIT,
    );
    ok(&r);
    assert_eq!(r.stdout, "[40]\n[2]\n");
}

#[test]
fn broker_cancel_a_future_no_worker_took() {
    // After CPython's test_concurrent_futures FutureTests.test_cancel (True for a pending
    // future, False for a running one): with the only worker slot busy, a queued future
    // cancels, and never runs.
    let Some(mut c) = Cluster::start("cancel") else {
        return;
    };
    c.worker(&["--procs", "1"]);
    let r = c.run(
        "cancel",
        r#"
        let net = Manager(#{address: "127.0.0.1:0", authkey: "k"});
        let started = net.Event();
        let release = net.Event();
        let ran = net.list([]);
        let ex = ProcessPoolExecutor(#{max_workers: 1, lease: 5});
        let b = ex.submit(|s, r| { s.set(); r.wait(30); 2 }, started, release);
        let c = ex.submit(|l| { l.push("c ran"); 3 }, ran);
        print(started.wait(30));
        print(b.cancel());
        print(c.cancel());
        print(c.cancelled());
        print(c.done());
        print(c.cancel());
        try { c.result(); print("no error") } catch (e) { print(e.error) }
        release.set();
        print(b.result());
        print(ex.submit(|| 4).result());
        ex.shutdown();
        print(ran.len());
        "#,
        LIMIT,
    );
    ok(&r);
    assert_eq!(
        r.stdout,
        "true\nfalse\ntrue\ntrue\ntrue\ntrue\nCancelledError\n2\n4\n0\n"
    );
}

/// The master half of `broker_script_that_does_not_compile_on_the_worker`: a host that embeds
/// the runtime with its own operator (`mix`), which `mpscript worker` does not have. It runs
/// only when that test starts this test binary again with `MPSCRIPT_TEST_EMBEDDED_MASTER` set
/// (a process of its own: the runtime is one per process).
#[test]
fn broker_embedded_master_half() {
    let Ok(url) = std::env::var("MPSCRIPT_TEST_EMBEDDED_MASTER") else {
        return;
    };
    let mut engine = mpscript_runtime::new_engine();
    engine.register_custom_operator("mix", 160).unwrap();
    engine.register_fn("mix", |a: i64, b: i64| a * 100 + b);
    let rt = mpscript_runtime::Runtime::new(engine);
    let src = format!(
        r#"
        fn f(x) {{ x mix 1 }}
        print(`LOCAL ${{f(2)}}`);
        let p = Pool(#{{broker: "{url}", processes: 1, lease: 30}});
        try {{ print(`NO ERROR ${{p.apply(Fn("f"), [2])}}`) }}
        catch (e) {{ print(`CAUGHT ${{e.error}}: ${{e.message}}`) }}
        p.close(); p.join();
        print("MASTER DONE");
        "#
    );
    assert_eq!(rt.run_source("custom.rhai", &src, vec![]).unwrap(), 0);
}

#[test]
fn broker_script_that_does_not_compile_on_the_worker() {
    use wait_timeout::ChildExt;
    let Some(mut c) = Cluster::start("nocompile") else {
        return;
    };
    let w = c.worker(&["--procs", "1"]);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "broker::broker_embedded_master_half",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env("MPSCRIPT_TEST_EMBEDDED_MASTER", c.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let out = lines_of(child.stdout.take().unwrap());
    let err = lines_of(child.stderr.take().unwrap());
    let status = match child.wait_timeout(LIMIT).unwrap() {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the embedded master hung");
        }
    };
    let text: Vec<String> = out.iter().collect();
    let errs: Vec<String> = err.iter().collect();
    assert!(status.success(), "{text:?} {errs:?}");
    // The host's engine compiles and runs it locally ...
    // (The test harness prints its own words on the same lines: match the ends.)
    assert!(text.iter().any(|l| l.ends_with("LOCAL 201")), "{text:?}");
    // ... the worker's does not: a RemoteError naming the compile error, not a hang.
    let caught = text
        .iter()
        .find_map(|l| l.find("CAUGHT ").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("{text:?} {errs:?}"));
    assert!(caught.starts_with("CAUGHT RemoteError: "), "{caught}");
    assert!(
        caught.contains("does not compile on the worker"),
        "{caught}"
    );
    assert!(text.iter().any(|l| l.ends_with("MASTER DONE")), "{text:?}");
    // No worker died of it: the same worker serves the next pool.
    let r = c.run(
        "after_nocompile",
        "let p = Pool(#{processes: 1}); print(p.map(|x| x * 3, [1, 2])); p.close(); p.join();",
        LIMIT,
    );
    ok(&r);
    assert_eq!(r.stdout, "[3, 6]\n");
    assert!(
        c.workers[w].child.try_wait().unwrap().is_none(),
        "the worker supervisor exited"
    );
    let log: Vec<String> = c.workers[w].lines.try_iter().collect();
    assert!(
        !log.iter().any(|l| l.contains("exited with")),
        "a worker process died: {log:?}"
    );
}
