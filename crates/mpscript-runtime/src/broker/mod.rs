//! The broker (issue 15): a `Pool` or `ProcessPoolExecutor` whose workers are `mpscript worker`
//! processes on any number of machines, meeting through a Redis-protocol server (Redis ≥ 6.2,
//! Valkey) used through Streams and consumer groups.
//!
//! Design, and why:
//! - **A small interface, [`Broker`]**, is all the master ([`pool`]) and the workers
//!   ([`worker`]) know of the engine: submit a chunk, take results, heartbeat, cancel a pool,
//!   fetch a script, claim a task. [`redis`] implements it; a second engine (NATS JetStream)
//!   would be one more file, with no change to the pool.
//! - **Workers never run a script's top level**: a master publishes its program (the source
//!   units and global constants, as the spawn start method ships them) under its SHA-256; each
//!   task names that hash, and a worker compiles each script once, functions only.
//! - **The master owns the policy**: it finds tasks whose lease expired (a worker's supervisor
//!   renews the leases of running tasks; a dead worker or machine stops renewing), runs them
//!   again up to `retries` times, fails them with `BrokenProcessPool` after that, and fails
//!   everything when no worker has been alive for a lease or the broker has been gone for one.
//!   Delivery is therefore at least once: results are de-duplicated by task index, but a
//!   retried task's side effects may happen twice.
//! - **Signed**: every script, task and result carries an HMAC-SHA256 with the authkey
//!   ([`sign`]); a worker refuses (and logs) anything else, so write access to the broker is
//!   not enough to run code on the workers.
//! - **No thread, no sleep loop**: connections are opened after fork, in the process that uses
//!   them; blocking is the server's (`XREADGROUP`/`XREAD` with `BLOCK` and a bound) or the
//!   kernel's (`poll` on pidfds). A master's pool is also a background source
//!   ([`background`]), so its callbacks run in any wait of the script.

pub mod background;
pub mod pool;
pub mod redis;
pub mod sign;
pub mod url;
pub mod values;
pub mod worker;

use crate::errors::{mp_err, ErrorKind, RtResult};
use std::time::Duration;

/// The largest message (task or result payload) the broker carries: a 64 MiB value plus its
/// encoding. Larger ones are refused with `SendError` before anything is sent.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024 + 64 * 1024;

/// Checks a payload's size against [`MAX_MESSAGE`].
pub fn check_size(n: usize, what: &str) -> RtResult<()> {
    if n > MAX_MESSAGE {
        return Err(mp_err(
            ErrorKind::SendError,
            format!(
                "{what} is {n} bytes, over the broker's limit of {MAX_MESSAGE} bytes (64 MiB of \
                 data): split it, or pass it through shared storage"
            ),
        ));
    }
    Ok(())
}

/// One chunk of a job on its way to a worker.
#[derive(Clone, Debug)]
pub struct TaskMsg {
    /// The pool it belongs to.
    pub pool: String,
    /// The SHA-256 (hex) of the script it runs in.
    pub script: String,
    /// The task's number in its pool.
    pub task: u64,
    /// How many times it was handed out before (0 the first time).
    pub attempt: u32,
    /// `[f, star, items]`, wire-encoded.
    pub body: Vec<u8>,
    /// HMAC over all of the above (see [`sign::task_mac`]).
    pub mac: Vec<u8>,
}

/// What a worker hands back for a task.
#[derive(Clone, Debug, PartialEq)]
pub enum ResultKind {
    /// `body` is the wire-encoded array of `[ok, value]` entries.
    Done,
    /// The worker refused the task; `body` is its reason (UTF-8).
    Refused,
}

/// One result message.
#[derive(Clone, Debug)]
pub struct ResultMsg {
    /// The task it answers.
    pub task: u64,
    /// Results or refusal.
    pub kind: ResultKind,
    /// The payload (see [`ResultKind`]).
    pub body: Vec<u8>,
    /// The worker that sent it (for messages).
    pub worker: String,
    /// HMAC over task, kind and body (see [`sign::result_mac`]).
    pub mac: Vec<u8>,
}

/// A task a worker received: the message and the broker's handle on it (to acknowledge it).
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The broker's id of the delivery (a stream entry id).
    pub entry: String,
    /// The message, or why it could not be read.
    pub msg: Result<TaskMsg, String>,
}

/// A task whose lease expired: its delivery id and how often it was delivered.
#[derive(Clone, Debug)]
pub struct Expired {
    /// The broker's id of the delivery.
    pub entry: String,
    /// Deliveries so far.
    pub deliveries: u64,
}

/// What the pool and the workers need of a broker engine. Every call is bounded in time: a
/// blocking one takes its bound, the others fail with `OSError` when the broker is gone.
pub trait Broker: Send {
    /// Stores a signed script under its hash for `ttl`.
    fn put_script(&mut self, hash: &str, signed: &[u8], ttl: Duration) -> RtResult<()>;
    /// Fetches a signed script by hash (`None`: not on the broker).
    fn fetch_script(&mut self, hash: &str) -> RtResult<Option<Vec<u8>>>;
    /// Marks a pool alive for `ttl` (workers skip the tasks of a pool that is not).
    fn heartbeat_pool(&mut self, pool: &str, ttl: Duration) -> RtResult<()>;
    /// True while the pool is alive.
    fn pool_alive(&mut self, pool: &str) -> RtResult<bool>;
    /// Queues chunks; returns their delivery ids, in order.
    fn submit(&mut self, tasks: &[TaskMsg]) -> RtResult<Vec<String>>;
    /// Results of `pool` after the last one taken, waiting up to `block` for the first.
    fn take_results(&mut self, pool: &str, block: Duration) -> RtResult<Vec<ResultMsg>>;
    /// Posts a result for `pool`, keeping its results for `ttl`, and forgets the deliveries
    /// `done` (the task answered) in the same round trip.
    fn put_result(
        &mut self,
        pool: &str,
        r: &ResultMsg,
        ttl: Duration,
        done: &[String],
    ) -> RtResult<()>;
    /// Deliveries whose lease (idle time) is over `lease`.
    fn expired(&mut self, lease: Duration) -> RtResult<Vec<Expired>>;
    /// Forgets deliveries (done, cancelled, or replaced by a new attempt).
    fn ack(&mut self, entries: &[String]) -> RtResult<()>;
    /// Cancels a pool: its keys go, its queued deliveries are dropped.
    fn cancel_pool(&mut self, pool: &str, entries: &[String]) -> RtResult<()>;
    /// The worker slots alive now (sum over supervisors whose heartbeat is fresh).
    fn live_slots(&mut self) -> RtResult<usize>;
    /// Worker side: the next task for `consumer`, waiting up to `block`.
    fn claim(&mut self, consumer: &str, block: Duration) -> RtResult<Option<Claimed>>;
    /// Supervisor side: announces `slots` worker slots for `ttl`.
    fn heartbeat_worker(&mut self, id: &str, slots: usize, ttl: Duration) -> RtResult<()>;
    /// Supervisor side: renews the leases of the deliveries held by `consumers`.
    fn renew(&mut self, consumers: &[String]) -> RtResult<()>;
    /// Supervisor side: forgets consumers (dead workers) that hold nothing any more; returns
    /// the ones that still hold deliveries.
    fn forget_consumers(&mut self, consumers: &[String]) -> RtResult<Vec<String>>;
    /// Supervisor side: withdraws a supervisor's heartbeat (it is stopping).
    fn withdraw_worker(&mut self, id: &str) -> RtResult<()>;
    /// Drops a queued delivery no worker has taken yet; false (and nothing changed) once one
    /// has. Atomic on the broker, so a task is either cancelled or run, never both.
    fn cancel_pending(&mut self, entry: &str) -> RtResult<bool>;
}

/// Opens a broker connection for a URL (in the process that will use it).
pub fn connect(url: &url::BrokerUrl, timeout: Duration) -> RtResult<Box<dyn Broker>> {
    Ok(Box::new(redis::RedisBroker::connect(url, timeout)?))
}

/// The `broker` option or `MPSCRIPT_BROKER`, if either says to use one.
pub fn broker_url_of(opt: Option<&rhai::Dynamic>) -> RtResult<Option<String>> {
    if let Some(v) = opt {
        if v.is_unit() {
            return Ok(None);
        }
        return match v.clone().into_immutable_string() {
            Ok(s) => Ok(Some(s.to_string())),
            Err(t) => Err(crate::errors::type_error(format!(
                "broker must be a URL string, not {t}"
            ))),
        };
    }
    Ok(std::env::var("MPSCRIPT_BROKER")
        .ok()
        .filter(|s| !s.is_empty()))
}
