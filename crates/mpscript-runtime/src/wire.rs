//! Wire: the encoding of every sendable value (API.md "Values that cross a process boundary").
//!
//! Why a hand codec and not serde: Rhai's `Dynamic` deserializes through `deserialize_any`, which
//! postcard cannot drive, and going through a mirror enum + postcard measured 2–3× slower than a
//! direct walk (rhai-notes §3: 1000 ints 41 µs vs 15 µs, 1 MiB blob 169 µs vs 64 µs). So values
//! are encoded straight from `Dynamic`: one tag byte, LEB128 varints for lengths and zigzag ints,
//! raw bytes for strings and blobs. postcard is kept for the runtime's own Rust-typed control
//! messages ([`to_control`]/[`from_control`]).
//!
//! The walk is also the send-time snapshot: it reads through shared (captured) cells, so a
//! closure travels as its function name plus a deep copy of its captured values. A value that
//! cannot travel fails with `SendError` naming its path (`args[1].config.handle: MyType`) before
//! a byte is sent. Runtime handles (queues, locks, shared memory...) register a [`HandleCodec`]:
//! their payload may carry file descriptors, collected in [`Encoder::fds`] for SCM_RIGHTS.
//! Decoding checks every length against the bytes left and bounds nesting, so random or
//! truncated input is an error, never a panic or a huge allocation.

use crate::errors::{mp_err, ErrorKind, RtResult};
use rhai::{Array, Blob, Dynamic, FnPtr, ImmutableString, Map, INT};
use std::any::TypeId;
use std::collections::HashMap;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::{OnceLock, RwLock};

const T_UNIT: u8 = 0;
const T_FALSE: u8 = 1;
const T_TRUE: u8 = 2;
const T_INT: u8 = 3;
const T_FLOAT: u8 = 4;
const T_CHAR: u8 = 5;
const T_STR: u8 = 6;
const T_BLOB: u8 = 7;
const T_ARRAY: u8 = 8;
const T_MAP: u8 = 9;
const T_FNPTR: u8 = 10;
const T_RANGE: u8 = 11;
const T_RANGE_INCL: u8 = 12;
const T_HANDLE: u8 = 13;

/// Deepest nesting encoded or decoded; deeper is almost surely a cycle through captured cells.
pub const MAX_DEPTH: usize = 256;

/// How a runtime handle type travels: a name (as `type_of` gives it) and its two directions.
#[derive(Clone, Copy)]
pub struct HandleCodec {
    /// The type name as scripts see it, also the tag on the wire.
    pub name: &'static str,
    /// Writes the handle's payload (and pushes any fds it needs) for a value of this type.
    pub encode: fn(&Dynamic, &mut Encoder) -> Result<(), String>,
    /// Reads a payload written by `encode` back into a handle.
    pub decode: fn(&mut Decoder) -> Result<Dynamic, String>,
}

struct Registry {
    by_type: HashMap<TypeId, HandleCodec>,
    by_name: HashMap<&'static str, HandleCodec>,
}

fn registry() -> &'static RwLock<Registry> {
    static REG: OnceLock<RwLock<Registry>> = OnceLock::new();
    REG.get_or_init(|| {
        RwLock::new(Registry {
            by_type: HashMap::new(),
            by_name: HashMap::new(),
        })
    })
}

/// Makes values of type `T` sendable (each handle module calls this once for its types).
pub fn register_handle<T: 'static>(codec: HandleCodec) {
    let mut r = registry().write().unwrap_or_else(|e| e.into_inner());
    r.by_type.insert(TypeId::of::<T>(), codec);
    r.by_name.insert(codec.name, codec);
}

/// Maps a Rust type name to the name scripts know it by (set by the engine owner).
pub type TypeNamer = dyn Fn(&str) -> String + Send + Sync;

fn type_namer() -> &'static RwLock<Option<Box<TypeNamer>>> {
    static N: OnceLock<RwLock<Option<Box<TypeNamer>>>> = OnceLock::new();
    N.get_or_init(|| RwLock::new(None))
}

/// Installs the mapping used to name unsendable types in `SendError` (e.g. the engine's
/// `map_type_name`, so users see `MyType`, not `my_crate::MyType`).
pub fn set_type_namer(f: Box<TypeNamer>) {
    *type_namer().write().unwrap_or_else(|e| e.into_inner()) = Some(f);
}

/// The script-facing name of a value's type.
pub fn script_type_name(v: &Dynamic) -> String {
    let raw = v.type_name();
    if let Some(c) = registry()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .by_type
        .get(&v.type_id())
    {
        return c.name.to_string();
    }
    match type_namer()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        Some(f) => f(raw),
        None => raw.rsplit("::").next().unwrap_or(raw).to_string(),
    }
}

/// Names the captured variables of a closure: (fn name, capture count) -> names.
pub type CaptureNamer = dyn Fn(&str, usize) -> Vec<String>;

/// One step of an error path below its root. Kept unformatted, because the path is only read
/// when a value cannot be sent: formatting `[i]` for every array element cost most of an
/// item's encoding.
enum Seg {
    /// `[i]`.
    Index(usize),
    /// `.key` or `["key"]`.
    Key(rhai::Identifier),
}

/// A value being written: the bytes, the fds to pass beside them, and the path for errors.
pub struct Encoder {
    /// The encoded bytes.
    pub bytes: Vec<u8>,
    /// File descriptors that must travel with the bytes (borrowed from live handles).
    pub fds: Vec<RawFd>,
    /// The path's root (`args`, `item`, `capture NAME`): inline for short names, and the
    /// path below it starts empty, so a new encoder allocates nothing but its bytes.
    root: rhai::Identifier,
    path: Vec<Seg>,
    /// Names of captured variables, for `capture NAME` paths: fn name -> param names.
    capture_names: Option<Box<CaptureNamer>>,
}

impl Encoder {
    /// A new encoder whose error paths start at `root` (`args`, `item`, ...).
    pub fn new(root: &str) -> Self {
        Self::with_bytes(root, Vec::with_capacity(64))
    }

    /// An encoder appending to `bytes` (a buffer reused across messages, or one that already
    /// holds a frame's header).
    pub fn with_bytes(root: &str, bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            fds: Vec::new(),
            root: root.into(),
            path: Vec::new(),
            capture_names: None,
        }
    }

    /// Names captured variables in error paths (given the fn name and capture count).
    pub fn with_capture_names(mut self, f: Box<CaptureNamer>) -> Self {
        self.capture_names = Some(f);
        self
    }

    /// Appends one byte.
    pub fn byte(&mut self, b: u8) {
        self.bytes.push(b);
    }

    /// Appends an unsigned LEB128 varint.
    pub fn uvar(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.bytes.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.bytes.push(v as u8);
    }

    /// Appends a zigzag varint.
    pub fn ivar(&mut self, v: i64) {
        self.uvar(((v << 1) ^ (v >> 63)) as u64);
    }

    /// Appends a length-prefixed byte string.
    pub fn raw(&mut self, b: &[u8]) {
        self.uvar(b.len() as u64);
        self.bytes.extend_from_slice(b);
    }

    /// Appends an array's header: `n` encoded values must follow (the pool writes its task
    /// batches straight from its chunks this way, without building a `Dynamic` message).
    pub fn array_header(&mut self, n: usize) {
        self.byte(T_ARRAY);
        self.uvar(n as u64);
    }

    /// Appends an int value (as [`Encoder::value`] would encode it).
    pub fn int(&mut self, i: INT) {
        self.byte(T_INT);
        self.ivar(i);
    }

    /// Appends a bool value.
    pub fn bool(&mut self, b: bool) {
        self.byte(if b { T_TRUE } else { T_FALSE });
    }

    /// Appends the unit value.
    pub fn unit(&mut self) {
        self.byte(T_UNIT);
    }

    /// Records a file descriptor to pass beside the bytes; returns its index.
    pub fn fd(&mut self, fd: RawFd) -> usize {
        self.fds.push(fd);
        self.uvar((self.fds.len() - 1) as u64);
        self.fds.len() - 1
    }

    fn path_string(&self) -> String {
        let mut out = self.root.to_string();
        for seg in &self.path {
            match seg {
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
                Seg::Key(k) if is_ident(k) => out.push_str(&format!(".{k}")),
                Seg::Key(k) => out.push_str(&format!("[{:?}]", k.as_str())),
            }
        }
        out
    }

    fn send_error(&self, type_name: &str, why: Option<&str>) -> Box<rhai::EvalAltResult> {
        let path = self.path_string();
        let msg = match why {
            Some(w) => format!("cannot send {path}: {type_name} ({w})"),
            None => format!("cannot send {path}: {type_name}"),
        };
        mp_err(ErrorKind::SendError, msg)
    }

    /// Encodes one value (recursively), or fails with `SendError` naming its path.
    pub fn value(&mut self, v: &Dynamic) -> RtResult<()> {
        self.value_at(v, 0)
    }

    fn value_at(&mut self, v: &Dynamic, depth: usize) -> RtResult<()> {
        if depth > MAX_DEPTH {
            return Err(self.send_error("value", Some("nested too deeply, or a cycle")));
        }
        if v.is_shared() {
            // A captured variable: snapshot its current content.
            let inner = match v.read_lock::<Dynamic>() {
                Some(g) => g.clone(),
                None => return Err(self.send_error("value", Some("locked by another thread"))),
            };
            return self.value_at(&inner, depth + 1);
        }
        // The type tag is tested first (`is_int`...), and the value read only once it is known:
        // rhai's `as_int`/`as_bool` build an error naming the type on every mismatch, which
        // was a chain of failed conversions per value (`Dynamic::type_name` in the profiles).
        if v.is_int() {
            self.byte(T_INT);
            self.ivar(v.as_int().unwrap_or_default());
        } else if v.is_unit() {
            self.byte(T_UNIT);
        } else if v.is_bool() {
            let b = v.as_bool().unwrap_or_default();
            self.byte(if b { T_TRUE } else { T_FALSE });
        } else if v.is_float() {
            self.byte(T_FLOAT);
            let f = v.as_float().unwrap_or_default();
            self.bytes.extend_from_slice(&f.to_le_bytes());
        } else if v.is_char() {
            self.byte(T_CHAR);
            self.uvar(v.as_char().unwrap_or_default() as u64);
        } else if let Some(s) = v
            .is_string()
            .then(|| v.read_lock::<ImmutableString>())
            .flatten()
        {
            self.byte(T_STR);
            self.raw(s.as_bytes());
        } else if let Some(b) = v.is_blob().then(|| v.read_lock::<Blob>()).flatten() {
            self.byte(T_BLOB);
            self.raw(&b);
        } else if let Some(a) = v.is_array().then(|| v.read_lock::<Array>()).flatten() {
            self.byte(T_ARRAY);
            self.uvar(a.len() as u64);
            for (i, x) in a.iter().enumerate() {
                self.path.push(Seg::Index(i));
                self.value_at(x, depth + 1)?;
                self.path.pop();
            }
        } else if let Some(m) = v.is_map().then(|| v.read_lock::<Map>()).flatten() {
            self.byte(T_MAP);
            self.uvar(m.len() as u64);
            for (k, x) in m.iter() {
                self.raw(k.as_bytes());
                self.path.push(Seg::Key(k.clone()));
                self.value_at(x, depth + 1)?;
                self.path.pop();
            }
        } else if let Some(f) = v.is_fnptr().then(|| v.read_lock::<FnPtr>()).flatten() {
            self.fn_ptr(&f, depth)?;
        } else if let Some(r) = v.read_lock::<std::ops::Range<INT>>() {
            self.byte(T_RANGE);
            self.ivar(r.start);
            self.ivar(r.end);
        } else if let Some(r) = v.read_lock::<std::ops::RangeInclusive<INT>>() {
            self.byte(T_RANGE_INCL);
            self.ivar(*r.start());
            self.ivar(*r.end());
        } else if let Some(t) = v.read_lock::<rhai::Instant>() {
            // API.md: a timestamp travels as float seconds (its age, the only portable form).
            self.byte(T_FLOAT);
            self.bytes
                .extend_from_slice(&t.elapsed().as_secs_f64().to_le_bytes());
        } else {
            let codec = registry()
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .by_type
                .get(&v.type_id())
                .copied();
            match codec {
                Some(c) => {
                    self.byte(T_HANDLE);
                    self.raw(c.name.as_bytes());
                    (c.encode)(v, self).map_err(|why| self.send_error(c.name, Some(&why)))?;
                }
                None => return Err(self.send_error(&script_type_name(v), None)),
            }
        }
        Ok(())
    }

    /// Enters element `i` of an array written piece by piece (for error paths: `[i]`);
    /// [`Encoder::leave`] when it is written.
    pub fn enter(&mut self, i: usize) {
        self.path.push(Seg::Index(i));
    }

    /// Leaves the element entered last.
    pub fn leave(&mut self) {
        self.path.pop();
    }

    /// Appends a function pointer value (its name, then its captured values).
    pub fn fnptr(&mut self, f: &FnPtr) -> RtResult<()> {
        self.fn_ptr(f, 0)
    }

    /// Appends an array value from its elements (error paths name each `[i]`).
    pub fn array(&mut self, a: &[Dynamic]) -> RtResult<()> {
        self.array_header(a.len());
        for (i, x) in a.iter().enumerate() {
            self.path.push(Seg::Index(i));
            self.value_at(x, 1)?;
            self.path.pop();
        }
        Ok(())
    }

    fn fn_ptr(&mut self, f: &FnPtr, depth: usize) -> RtResult<()> {
        self.byte(T_FNPTR);
        self.raw(f.fn_name().as_bytes());
        let curry = f.curry();
        self.uvar(curry.len() as u64);
        let names = self
            .capture_names
            .as_ref()
            .map(|n| n(f.fn_name(), curry.len()))
            .unwrap_or_default();
        for (i, c) in curry.iter().enumerate() {
            let label = names.get(i).cloned().unwrap_or_else(|| i.to_string());
            let saved_root = std::mem::replace(&mut self.root, format!("capture {label}").into());
            let saved = std::mem::take(&mut self.path);
            let r = self.value_at(c, depth + 1);
            self.path = saved;
            self.root = saved_root;
            r?;
        }
        Ok(())
    }
}

fn is_ident(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(ch) if ch.is_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_alphanumeric() || ch == '_')
}

/// Rebuilds a function pointer from its name in the receiver (anonymous closures need the
/// receiver's function library: see `Module::get_script_fn`).
pub type FnResolver<'a> = dyn Fn(&str) -> Result<FnPtr, String> + 'a;

/// A value being read: bytes, the fds received beside them, and how to find functions.
pub struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
    fds: Vec<Option<OwnedFd>>,
    resolver: Option<&'a FnResolver<'a>>,
}

impl<'a> Decoder<'a> {
    /// Reads `bytes`; `fds` are those that arrived with them (in order).
    pub fn new(bytes: &'a [u8], fds: Vec<OwnedFd>, resolver: Option<&'a FnResolver<'a>>) -> Self {
        Self {
            bytes,
            pos: 0,
            fds: fds.into_iter().map(Some).collect(),
            resolver,
        }
    }

    /// True when every byte has been read.
    pub fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    /// Reads one byte.
    pub fn byte(&mut self) -> Result<u8, String> {
        let b = *self.bytes.get(self.pos).ok_or("truncated message")?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads an unsigned varint.
    pub fn uvar(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("bad varint".into())
    }

    /// Reads a zigzag varint.
    pub fn ivar(&mut self) -> Result<i64, String> {
        let u = self.uvar()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// Reads a length that must fit in the bytes left (each item takes at least `min` bytes).
    pub fn len(&mut self, min: usize) -> Result<usize, String> {
        let n = self.uvar()?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min.max(1) as u64) > left {
            return Err("length beyond the end of the message".into());
        }
        Ok(n as usize)
    }

    /// Reads a length-prefixed byte string.
    pub fn raw(&mut self) -> Result<&'a [u8], String> {
        let n = self.len(1)?;
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.raw()?.to_vec()).map_err(|_| "invalid UTF-8".to_string())
    }

    /// Takes the file descriptor whose index is next in the payload.
    pub fn fd(&mut self) -> Result<OwnedFd, String> {
        let i = self.uvar()? as usize;
        self.fds
            .get_mut(i)
            .and_then(Option::take)
            .ok_or_else(|| "missing file descriptor".to_string())
    }

    /// Reads an array's header: its length (the values follow).
    pub fn array_header(&mut self) -> Result<usize, String> {
        match self.byte()? {
            T_ARRAY => self.len(1),
            t => Err(format!("expected an array, found tag {t}")),
        }
    }

    /// Reads an int value.
    pub fn int(&mut self) -> Result<INT, String> {
        match self.byte()? {
            T_INT => self.ivar(),
            t => Err(format!("expected an int, found tag {t}")),
        }
    }

    /// Reads a bool value.
    pub fn bool(&mut self) -> Result<bool, String> {
        match self.byte()? {
            T_TRUE => Ok(true),
            T_FALSE => Ok(false),
            t => Err(format!("expected a bool, found tag {t}")),
        }
    }

    /// Decodes one value.
    pub fn value(&mut self) -> Result<Dynamic, String> {
        self.value_at(0)
    }

    fn value_at(&mut self, depth: usize) -> Result<Dynamic, String> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".into());
        }
        Ok(match self.byte()? {
            T_UNIT => Dynamic::UNIT,
            T_FALSE => false.into(),
            T_TRUE => true.into(),
            T_INT => self.ivar()?.into(),
            T_FLOAT => {
                let b = self
                    .bytes
                    .get(self.pos..self.pos + 8)
                    .ok_or("truncated message")?;
                self.pos += 8;
                f64::from_le_bytes(b.try_into().map_err(|_| "truncated message")?).into()
            }
            T_CHAR => {
                let c = u32::try_from(self.uvar()?).map_err(|_| "bad char")?;
                char::from_u32(c).ok_or("bad char")?.into()
            }
            T_STR => self.string()?.into(),
            T_BLOB => Dynamic::from_blob(self.raw()?.to_vec()),
            T_ARRAY => {
                let n = self.len(1)?;
                let mut a = Array::with_capacity(n);
                for _ in 0..n {
                    a.push(self.value_at(depth + 1)?);
                }
                a.into()
            }
            T_MAP => {
                let n = self.len(2)?;
                let mut m = Map::new();
                for _ in 0..n {
                    let k = self.string()?;
                    let v = self.value_at(depth + 1)?;
                    m.insert(k.into(), v);
                }
                m.into()
            }
            T_FNPTR => {
                let name = self.string()?;
                let n = self.len(1)?;
                let mut curry = Vec::with_capacity(n);
                for _ in 0..n {
                    curry.push(self.value_at(depth + 1)?);
                }
                let mut f = match self.resolver {
                    Some(r) => r(&name)?,
                    None => FnPtr::new(name).map_err(|e| e.to_string())?,
                };
                f.set_curry(curry);
                Dynamic::from(f)
            }
            T_RANGE => {
                let (a, b) = (self.ivar()?, self.ivar()?);
                Dynamic::from(a..b)
            }
            T_RANGE_INCL => {
                let (a, b) = (self.ivar()?, self.ivar()?);
                Dynamic::from(a..=b)
            }
            T_HANDLE => {
                let name = self.string()?;
                let codec = registry()
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .by_name
                    .get(name.as_str())
                    .copied()
                    .ok_or_else(|| format!("unknown handle type {name}"))?;
                (codec.decode)(self)?
            }
            t => return Err(format!("bad tag {t}")),
        })
    }
}

/// Encodes `v` as one message; errors name paths under `root`.
pub fn encode(v: &Dynamic, root: &str) -> RtResult<(Vec<u8>, Vec<RawFd>)> {
    let mut e = Encoder::new(root);
    e.value(v)?;
    Ok((e.bytes, e.fds))
}

/// A blob of `len` bytes encodes as this prefix followed by the bytes themselves, so a
/// connection can send a blob straight from the script's buffer, and receive one straight
/// into the Blob it returns ([`blob_prefix_len`] says where a received one would start).
pub fn blob_prefix(len: u64) -> ([u8; 11], usize) {
    let mut out = [0u8; 11];
    out[0] = T_BLOB;
    let (mut v, mut n) = (len, 1);
    while v >= 0x80 {
        out[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    (out, n + 1)
}

/// If a message of `total` bytes can be the encoding of one blob, the length of its prefix.
pub fn blob_prefix_len(total: u64) -> Option<usize> {
    (2..=11).find(|&p| total >= p as u64 && blob_prefix(total - p as u64).1 == p)
}

/// Checks that `v` could be sent, without keeping the bytes (`SendError` naming the path).
pub fn check_sendable(v: &Dynamic, root: &str) -> RtResult<()> {
    encode(v, root).map(|_| ())
}

/// Decodes one whole message (trailing bytes are an error).
pub fn decode(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    resolver: Option<&FnResolver<'_>>,
) -> Result<Dynamic, String> {
    let mut d = Decoder::new(bytes, fds, resolver);
    let v = d.value()?;
    if !d.at_end() {
        return Err("trailing bytes after the value".into());
    }
    Ok(v)
}

/// Encodes a Rust-typed control message with postcard.
pub fn to_control<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_allocvec(msg).expect("control messages always serialize")
}

/// Decodes a Rust-typed control message written by [`to_control`].
pub fn from_control<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| e.to_string())
}

fn encode_serde<T: serde::Serialize + Clone + 'static>(
    v: &Dynamic,
    e: &mut Encoder,
) -> Result<(), String> {
    let t = v
        .read_lock::<T>()
        .ok_or_else(|| "not a value of the registered type".to_string())?;
    let bytes = postcard::to_allocvec(&*t).map_err(|err| err.to_string())?;
    e.raw(&bytes);
    Ok(())
}

fn decode_serde<T>(d: &mut Decoder) -> Result<Dynamic, String>
where
    T: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    let bytes = d.raw()?;
    let t: T = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
    Ok(Dynamic::from(t))
}

/// Makes a host type sendable (API.md "Embedding"): registers `T` with the engine under `name`
/// (what `type_of` says) and lets its values cross process boundaries through its serde impls.
/// Any other host type raises `SendError` when sent.
pub fn register_sendable<T>(engine: &mut rhai::Engine, name: &str)
where
    T: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    let name: &'static str = Box::leak(name.to_string().into_boxed_str());
    engine.register_type_with_name::<T>(name);
    register_handle::<T>(HandleCodec {
        name,
        encode: encode_serde::<T>,
        decode: decode_serde::<T>,
    });
}

/// Like [`check_sendable`], but a `SendError` inside a closure's captured values names the
/// captured variable (`capture data[0]`), found in the caller's function libraries.
pub fn check_sendable_in(ctx: &rhai::NativeCallContext, v: &Dynamic, root: &str) -> RtResult<()> {
    if check_sendable(v, root).is_ok() {
        return Ok(());
    }
    let libs: Vec<rhai::Shared<rhai::Module>> = ctx.namespaces().to_vec();
    let namer = move |name: &str, n: usize| -> Vec<String> {
        for m in &libs {
            for arity in n..=32 {
                if let Some(def) = m.get_script_fn(name, arity) {
                    return def.params.iter().take(n).map(|p| p.to_string()).collect();
                }
            }
        }
        Vec::new()
    };
    let mut e = Encoder::new(root).with_capture_names(Box::new(namer));
    e.value(v)
}
