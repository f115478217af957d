//! The [`Broker`] on a Redis-protocol server (Redis ≥ 6.2, Valkey), with the synchronous
//! `redis` crate: no async runtime, no thread; one connection per process, opened after fork.
//!
//! Keys (all under `mpscript:`):
//! - `tasks`: one stream of chunks for every pool, read by the consumer group `workers`; an
//!   entry is acknowledged and deleted once answered, dropped, or replaced by a new attempt.
//!   A delivery's idle time in the group's pending list is its lease (supervisors reset it
//!   with `XCLAIM ... JUSTID` while the task runs; the master finds expired ones with
//!   `XPENDING ... IDLE`).
//! - `script:<sha256>`: a signed program (source units + constants), with a TTL.
//! - `pool:<id>`: present while the master lives (a TTL it keeps renewing); workers skip the
//!   tasks of a pool without it, so a dead master's work is dropped, not run.
//! - `results:<id>`: the pool's result stream, with the same TTL.
//! - `workers` (hash supervisor → slots) and `hb:<supervisor>` (its heartbeat, with a TTL).
//!
//! Blocking reads carry a bound (`BLOCK ms`), and the socket a read timeout, so a broker that
//! vanishes (or a machine between) is an error within the caller's bound, never a hang.

use super::{Broker, Claimed, Expired, ResultKind, ResultMsg, TaskMsg};
use crate::errors::{mp_err, os_error_msg, ErrorKind, RtResult};
use redis::Value;
use std::collections::HashMap;
use std::time::Duration;

const TASKS: &str = "mpscript:tasks";
const GROUP: &str = "workers";
const WORKERS: &str = "mpscript:workers";

fn script_key(h: &str) -> String {
    format!("mpscript:script:{h}")
}
fn pool_key(p: &str) -> String {
    format!("mpscript:pool:{p}")
}
fn results_key(p: &str) -> String {
    format!("mpscript:results:{p}")
}
fn hb_key(w: &str) -> String {
    format!("mpscript:hb:{w}")
}

/// Deletes stream entry ARGV[2] of KEYS[1] if the group ARGV[1] has not delivered it yet
/// (its id is above the group's last-delivered-id): 1 if deleted, else 0. A script, so no
/// `XREADGROUP` can come between the check and the delete.
const CANCEL_PENDING: &str = r#"
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local last = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, ld
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'last-delivered-id' then ld = g[i + 1] end
  end
  if name == ARGV[1] then last = ld end
end
if not last then return 0 end
local lm, ls = parse(last)
local em, es = parse(ARGV[2])
if not em or em < lm or (em == lm and es <= ls) then return 0 end
return redis.call('XDEL', KEYS[1], ARGV[2])
"#;

/// A connection to a Redis-protocol broker.
pub struct RedisBroker {
    con: redis::Connection,
    shown: String,
    group_ready: bool,
    /// Per pool: the last result entry taken, and the ones to delete with the next read.
    cursors: HashMap<String, (String, Vec<String>)>,
}

fn ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

impl RedisBroker {
    /// Connects (TLS for `rediss://`), with `timeout` on the connect and on every read.
    pub fn connect(url: &super::url::BrokerUrl, timeout: Duration) -> RtResult<RedisBroker> {
        if url.tls {
            // rustls needs a process-wide crypto provider; installing it twice is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let fail = |e: redis::RedisError| {
            if is_auth_error(&e) {
                return mp_err(
                    ErrorKind::AuthenticationError,
                    format!(
                        "the broker {} refused the credentials (user and password of the URL): {e}",
                        url.shown
                    ),
                );
            }
            os_error_msg(format!("cannot connect to the broker {}: {e}", url.shown))
        };
        let client = match (&url.ca, url.tls) {
            (Some(ca), true) => {
                let pem = std::fs::read(ca).map_err(|e| {
                    os_error_msg(format!(
                        "cannot read the broker's CA file {} (the `ca` URL parameter or \
                         MPSCRIPT_BROKER_CA): {e}",
                        ca.display()
                    ))
                })?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(url.info.clone(), certs).map_err(fail)?
            }
            _ => redis::Client::open(url.info.clone()).map_err(fail)?,
        };
        let mut con = client.get_connection_with_timeout(timeout).map_err(fail)?;
        let io = Some(timeout.max(Duration::from_secs(2)));
        con.set_read_timeout(io).map_err(fail)?;
        con.set_write_timeout(io).map_err(fail)?;
        // A server that wants a password the URL lacks accepts the connection and refuses the
        // first command: ask now, so that is an AuthenticationError here, not a later OSError.
        redis::cmd("PING").query::<Value>(&mut con).map_err(fail)?;
        Ok(RedisBroker {
            con,
            shown: url.shown.clone(),
            group_ready: false,
            cursors: HashMap::new(),
        })
    }

    fn err(&self, e: redis::RedisError) -> Box<rhai::EvalAltResult> {
        os_error_msg(format!("broker {}: {e}", self.shown))
    }

    fn ensure_group(&mut self) -> RtResult<()> {
        if self.group_ready {
            return Ok(());
        }
        let r: redis::RedisResult<Value> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(TASKS)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query(&mut self.con);
        match r {
            Ok(_) => {}
            Err(e) if e.to_string().contains("BUSYGROUP") => {}
            Err(e) => return Err(self.err(e)),
        }
        self.group_ready = true;
        Ok(())
    }

    /// Runs `f`; if the group vanished (the stream was deleted), makes it again and retries.
    fn with_group<T>(
        &mut self,
        f: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> RtResult<T> {
        self.ensure_group()?;
        match f(&mut self.con) {
            Err(e) if e.to_string().contains("NOGROUP") => {
                self.group_ready = false;
                self.ensure_group()?;
                f(&mut self.con).map_err(|e| self.err(e))
            }
            r => r.map_err(|e| self.err(e)),
        }
    }

    /// Each consumer's pending entries (at most `count` each), in one round trip.
    fn pending_of(&mut self, consumers: &[String], count: usize) -> RtResult<Vec<Value>> {
        self.ensure_group()?;
        let mut p = redis::pipe();
        for c in consumers {
            p.cmd("XPENDING")
                .arg(TASKS)
                .arg(GROUP)
                .arg("-")
                .arg("+")
                .arg(count)
                .arg(c);
        }
        p.query(&mut self.con).map_err(|e| self.err(e))
    }
}

/// True for a refused password or user (`WRONGPASS`, `NOAUTH`, `NOPERM`).
fn is_auth_error(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other).and_then(|s| s.parse().ok()),
    }
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

/// Stream entries of a read reply: `[[key, [[id, [f, v, ...]], ...]], ...]` (RESP2) or a map
/// of key → entries (RESP3).
fn entries(reply: &Value) -> Vec<(String, HashMap<String, Vec<u8>>)> {
    let mut out = Vec::new();
    let streams: Vec<&Value> = match reply {
        Value::Map(m) => m.iter().map(|(_, v)| v).collect(),
        other => items(other)
            .iter()
            .filter_map(|s| items(s).get(1))
            .collect(),
    };
    for list in streams {
        for e in items(list) {
            let [id, fields] = items(e) else { continue };
            let Some(id) = text(id) else { continue };
            let mut map = HashMap::new();
            for kv in items(fields).chunks(2) {
                if let [k, v] = kv {
                    if let (Some(k), Some(v)) = (text(k), bytes(v)) {
                        map.insert(k, v);
                    }
                }
            }
            out.push((id, map));
        }
    }
    out
}

fn task_of(f: &HashMap<String, Vec<u8>>) -> Result<TaskMsg, String> {
    let get = |k: &str| f.get(k).ok_or_else(|| format!("no field {k:?}"));
    let s = |k: &str| -> Result<String, String> {
        String::from_utf8(get(k)?.clone()).map_err(|_| format!("field {k:?} is not text"))
    };
    Ok(TaskMsg {
        pool: s("p")?,
        script: s("h")?,
        task: s("t")?.parse().map_err(|_| "bad task number".to_string())?,
        attempt: s("a")?.parse().map_err(|_| "bad attempt".to_string())?,
        body: get("b")?.clone(),
        mac: f.get("m").cloned().unwrap_or_default(),
    })
}

fn result_of(f: &HashMap<String, Vec<u8>>) -> Option<ResultMsg> {
    let t = std::str::from_utf8(f.get("t")?).ok()?.parse().ok()?;
    let kind = match f.get("k")?.as_slice() {
        b"done" => ResultKind::Done,
        b"refused" => ResultKind::Refused,
        _ => return None,
    };
    Some(ResultMsg {
        task: t,
        kind,
        body: f.get("b").cloned().unwrap_or_default(),
        worker: f
            .get("w")
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .unwrap_or_default(),
        mac: f.get("m").cloned().unwrap_or_default(),
    })
}

impl Broker for RedisBroker {
    fn put_script(&mut self, hash: &str, signed: &[u8], ttl: Duration) -> RtResult<()> {
        redis::cmd("SET")
            .arg(script_key(hash))
            .arg(signed)
            .arg("PX")
            .arg(ms(ttl))
            .query::<Value>(&mut self.con)
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn fetch_script(&mut self, hash: &str) -> RtResult<Option<Vec<u8>>> {
        redis::cmd("GET")
            .arg(script_key(hash))
            .query::<Option<Vec<u8>>>(&mut self.con)
            .map_err(|e| self.err(e))
    }

    fn heartbeat_pool(&mut self, pool: &str, ttl: Duration) -> RtResult<()> {
        redis::pipe()
            .cmd("SET")
            .arg(pool_key(pool))
            .arg(1)
            .arg("PX")
            .arg(ms(ttl))
            .ignore()
            .cmd("PEXPIRE")
            .arg(results_key(pool))
            .arg(ms(ttl))
            .ignore()
            .query::<()>(&mut self.con)
            .map_err(|e| self.err(e))
    }

    fn pool_alive(&mut self, pool: &str) -> RtResult<bool> {
        redis::cmd("EXISTS")
            .arg(pool_key(pool))
            .query::<i64>(&mut self.con)
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    fn submit(&mut self, tasks: &[TaskMsg]) -> RtResult<Vec<String>> {
        self.ensure_group()?;
        let mut p = redis::pipe();
        for t in tasks {
            p.cmd("XADD")
                .arg(TASKS)
                .arg("*")
                .arg("p")
                .arg(&t.pool)
                .arg("h")
                .arg(&t.script)
                .arg("t")
                .arg(t.task)
                .arg("a")
                .arg(t.attempt)
                .arg("b")
                .arg(&t.body)
                .arg("m")
                .arg(&t.mac);
        }
        p.query::<Vec<String>>(&mut self.con)
            .map_err(|e| self.err(e))
    }

    fn take_results(&mut self, pool: &str, block: Duration) -> RtResult<Vec<ResultMsg>> {
        let key = results_key(pool);
        let (last, done) = self
            .cursors
            .entry(pool.to_string())
            .or_insert_with(|| ("0-0".to_string(), Vec::new()))
            .clone();
        let mut p = redis::pipe();
        if !done.is_empty() {
            // Results taken last time are deleted with this read (one round trip for both).
            p.cmd("XDEL").arg(&key).arg(&done).ignore();
        }
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT").arg(1024);
        if !block.is_zero() {
            read.arg("BLOCK").arg(ms(block));
        }
        read.arg("STREAMS").arg(&key).arg(&last);
        p.add_command(read);
        let reply: Vec<Value> = p.query(&mut self.con).map_err(|e| self.err(e))?;
        let got = reply.first().map(entries).unwrap_or_default();
        let cursor = self.cursors.entry(pool.to_string()).or_default();
        cursor.1.clear();
        let mut out = Vec::with_capacity(got.len());
        for (id, fields) in got {
            cursor.0 = id.clone();
            cursor.1.push(id);
            if let Some(r) = result_of(&fields) {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn put_result(
        &mut self,
        pool: &str,
        r: &ResultMsg,
        ttl: Duration,
        done: &[String],
    ) -> RtResult<()> {
        let key = results_key(pool);
        let kind = match r.kind {
            ResultKind::Done => "done",
            ResultKind::Refused => "refused",
        };
        let mut p = redis::pipe();
        if !done.is_empty() {
            p.cmd("XACK").arg(TASKS).arg(GROUP).arg(done).ignore();
            p.cmd("XDEL").arg(TASKS).arg(done).ignore();
        }
        p.cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("t")
            .arg(r.task)
            .arg("k")
            .arg(kind)
            .arg("b")
            .arg(&r.body)
            .arg("w")
            .arg(&r.worker)
            .arg("m")
            .arg(&r.mac)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ms(ttl))
            .ignore()
            .query::<()>(&mut self.con)
            .map_err(|e| self.err(e))
    }

    fn expired(&mut self, lease: Duration) -> RtResult<Vec<Expired>> {
        let reply: Value = self.with_group(|con| {
            redis::cmd("XPENDING")
                .arg(TASKS)
                .arg(GROUP)
                .arg("IDLE")
                .arg(ms(lease))
                .arg("-")
                .arg("+")
                .arg(10_000)
                .query(con)
        })?;
        Ok(items(&reply)
            .iter()
            .filter_map(|e| match items(e) {
                [id, _consumer, _idle, n] => Some(Expired {
                    entry: text(id)?,
                    deliveries: int(n)? as u64,
                }),
                _ => None,
            })
            .collect())
    }

    fn ack(&mut self, entries: &[String]) -> RtResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        redis::pipe()
            .cmd("XACK")
            .arg(TASKS)
            .arg(GROUP)
            .arg(entries)
            .ignore()
            .cmd("XDEL")
            .arg(TASKS)
            .arg(entries)
            .ignore()
            .query::<()>(&mut self.con)
            .map_err(|e| self.err(e))
    }

    fn cancel_pool(&mut self, pool: &str, entries: &[String]) -> RtResult<()> {
        redis::cmd("DEL")
            .arg(pool_key(pool))
            .arg(results_key(pool))
            .query::<()>(&mut self.con)
            .map_err(|e| self.err(e))?;
        self.cursors.remove(pool);
        self.ack(entries)
    }

    fn live_slots(&mut self) -> RtResult<usize> {
        let all: HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(WORKERS)
            .query(&mut self.con)
            .map_err(|e| self.err(e))?;
        if all.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&String> = all.keys().collect();
        let mut p = redis::pipe();
        for id in &ids {
            p.cmd("EXISTS").arg(hb_key(id));
        }
        let alive: Vec<i64> = p.query(&mut self.con).map_err(|e| self.err(e))?;
        let mut slots = 0usize;
        let mut dead = Vec::new();
        for (id, a) in ids.iter().zip(alive) {
            if a > 0 {
                slots += all[*id].max(0) as usize;
            } else {
                dead.push((*id).clone());
            }
        }
        if !dead.is_empty() {
            let _ = redis::cmd("HDEL")
                .arg(WORKERS)
                .arg(&dead)
                .query::<Value>(&mut self.con);
        }
        Ok(slots)
    }

    fn claim(&mut self, consumer: &str, block: Duration) -> RtResult<Option<Claimed>> {
        let reply: Value = self.with_group(|con| {
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(consumer)
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(ms(block))
                .arg("STREAMS")
                .arg(TASKS)
                .arg(">")
                .query(con)
        })?;
        Ok(entries(&reply)
            .into_iter()
            .next()
            .map(|(entry, fields)| Claimed {
                entry,
                msg: task_of(&fields),
            }))
    }

    fn heartbeat_worker(&mut self, id: &str, slots: usize, ttl: Duration) -> RtResult<()> {
        redis::pipe()
            .cmd("HSET")
            .arg(WORKERS)
            .arg(id)
            .arg(slots)
            .ignore()
            .cmd("SET")
            .arg(hb_key(id))
            .arg(slots)
            .arg("PX")
            .arg(ms(ttl))
            .ignore()
            .query::<()>(&mut self.con)
            .map_err(|e| self.err(e))
    }

    fn renew(&mut self, consumers: &[String]) -> RtResult<()> {
        if consumers.is_empty() {
            return Ok(());
        }
        let held = self.pending_of(consumers, 100)?;
        let mut claims = redis::pipe();
        let mut any = false;
        for (c, list) in consumers.iter().zip(&held) {
            let ids: Vec<String> = items(list)
                .iter()
                .filter_map(|e| items(e).first().and_then(text))
                .collect();
            if ids.is_empty() {
                continue;
            }
            any = true;
            // JUSTID: resets the idle time without counting a delivery.
            claims
                .cmd("XCLAIM")
                .arg(TASKS)
                .arg(GROUP)
                .arg(c)
                .arg(0)
                .arg(&ids)
                .arg("JUSTID")
                .ignore();
        }
        if any {
            claims.query::<()>(&mut self.con).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn forget_consumers(&mut self, consumers: &[String]) -> RtResult<Vec<String>> {
        if consumers.is_empty() {
            return Ok(Vec::new());
        }
        let held = self.pending_of(consumers, 1)?;
        let mut keep = Vec::new();
        let mut del = redis::pipe();
        for (c, list) in consumers.iter().zip(&held) {
            if items(list).is_empty() {
                del.cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(TASKS)
                    .arg(GROUP)
                    .arg(c)
                    .ignore();
            } else {
                keep.push(c.clone());
            }
        }
        if keep.len() < consumers.len() {
            del.query::<()>(&mut self.con).map_err(|e| self.err(e))?;
        }
        Ok(keep)
    }

    fn cancel_pending(&mut self, entry: &str) -> RtResult<bool> {
        let n: i64 = self.with_group(|con| {
            redis::cmd("EVAL")
                .arg(CANCEL_PENDING)
                .arg(1)
                .arg(TASKS)
                .arg(GROUP)
                .arg(entry)
                .query(con)
        })?;
        Ok(n > 0)
    }

    fn withdraw_worker(&mut self, id: &str) -> RtResult<()> {
        redis::pipe()
            .cmd("HDEL")
            .arg(WORKERS)
            .arg(id)
            .ignore()
            .cmd("DEL")
            .arg(hb_key(id))
            .ignore()
            .query::<()>(&mut self.con)
            .map_err(|e| self.err(e))
    }
}
