//! Shared memory of API.md "Shared memory": `Value` and `Array` of a typecode, living in a
//! memfd region mapped `MAP_SHARED` — real shared memory, never copies: every process that
//! has the handle (inherited through fork, or received with its memfd) maps the same pages,
//! so an `Array('d', 10_000_000)` costs 80 MB once, and the kernel zero-fills it lazily.
//!
//! One region per object holds the header (id, kind, typecode, length, lock flag), the RLock
//! ([`crate::synchronize::mutex`], robust: a holder that dies gives `OwnerDied`) and then the
//! elements. `v.value` / `a[i]` take the RLock for that one access unless the object was made
//! without a lock; `with_lock` and `update` hold it across a closure (re-entrant, so element
//! accesses inside still work). [`Shared`] is the common body: a Value is a one-element Shared.

pub mod typecode;

use crate::errors::{value_error, RtResult};
use crate::synchronize::lock::LockObj;
use crate::synchronize::{Kind, SharedObject, BODY_AT};
use crate::wire::{self, Decoder, Encoder, HandleCodec};
use rhai::{Dynamic, INT};
use std::sync::Arc;
pub use typecode::Typecode;

const CODE_AT: usize = 12;
const LEN_AT: usize = 16;
const LOCKED_AT: usize = 24;

/// Largest number of elements (bounded so the region length never overflows).
pub const MAX_LEN: usize = 1 << 40;

/// Elements of one typecode in a shared region, with an optional RLock.
#[derive(Clone)]
pub struct Shared {
    obj: Arc<SharedObject>,
    code: Typecode,
    len: usize,
    locked: bool,
}

/// A `Value` handle.
#[derive(Clone)]
pub struct Value(pub Shared);

/// An `Array` handle.
#[derive(Clone)]
pub struct Array(pub Shared);

impl PartialEq for Shared {
    fn eq(&self, o: &Self) -> bool {
        self.obj.id() == o.obj.id()
    }
}
impl PartialEq for Value {
    fn eq(&self, o: &Self) -> bool {
        self.0 == o.0
    }
}
impl PartialEq for Array {
    fn eq(&self, o: &Self) -> bool {
        self.0 == o.0
    }
}

impl Shared {
    /// `len` zeroed elements of `code` (`lock`: with an RLock).
    pub fn new(kind: Kind, code: Typecode, len: usize, lock: bool) -> RtResult<Shared> {
        if len > MAX_LEN {
            return Err(value_error(format!("{len} elements is too many")));
        }
        let obj = SharedObject::new(kind, (len * code.size()).max(8), true)?;
        // SAFETY: header fields inside the first BODY_AT bytes, written before anyone else
        // can see the object.
        unsafe {
            (obj.ptr(CODE_AT) as *mut u32).write(code.0 as u32);
            (obj.ptr(LEN_AT) as *mut u64).write(len as u64);
            (obj.ptr(LOCKED_AT) as *mut u32).write(lock as u32);
        }
        Ok(Shared {
            obj,
            code,
            len,
            locked: lock,
        })
    }

    /// The typecode.
    pub fn code(&self) -> Typecode {
        self.code
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty array.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if element accesses take the lock.
    pub fn has_lock(&self) -> bool {
        self.locked
    }

    /// The RLock (also for an object made without one: `get_lock` refuses those).
    pub fn lock(&self) -> LockObj {
        LockObj::inside(self.obj.clone())
    }

    /// The lock as `get_lock()` gives it: ValueError for an object made with `false`.
    pub fn get_lock(&self, what: &str) -> RtResult<LockObj> {
        if self.locked {
            Ok(self.lock())
        } else {
            Err(value_error(format!(
                "this {what} was made without a lock (its last argument was false)"
            )))
        }
    }

    fn elem(&self, i: usize) -> *mut u8 {
        debug_assert!(i < self.len);
        self.obj.ptr(BODY_AT + i * self.code.size())
    }

    /// Runs `f` under the object's lock if it has one.
    #[inline]
    pub fn locked<T>(&self, f: impl FnOnce() -> RtResult<T>) -> RtResult<T> {
        if !self.locked {
            return f();
        }
        self.lock().with(f)
    }

    /// Element `i` (no lock taken: callers hold it or the object has none).
    pub fn get_raw(&self, i: usize) -> Dynamic {
        // SAFETY: i < len (callers check), so the element is inside the mapped body.
        self.code.from_bits(unsafe { self.code.read(self.elem(i)) })
    }

    /// Sets element `i` to already-checked bits (no lock taken).
    pub fn set_raw(&self, i: usize, bits: u64) {
        // SAFETY: as `get_raw`.
        unsafe { self.code.write(self.elem(i), bits) }
    }

    /// Reads a script index (negative counts from the end): ValueError out of range.
    pub fn index(&self, i: INT) -> RtResult<usize> {
        let n = self.len as INT;
        let j = if i < 0 { i + n } else { i };
        if j < 0 || j >= n {
            return Err(value_error(format!(
                "index {i} out of range for an Array of length {n}"
            )));
        }
        Ok(j as usize)
    }

    /// `a[i]`, under the lock for that one access.
    pub fn get(&self, i: INT) -> RtResult<Dynamic> {
        let i = self.index(i)?;
        self.locked(|| Ok(self.get_raw(i)))
    }

    /// `a[i] = v`, under the lock for that one access.
    pub fn set(&self, i: INT, v: &Dynamic) -> RtResult<()> {
        let i = self.index(i)?;
        let bits = self.code.to_bits(v)?;
        self.locked(|| {
            self.set_raw(i, bits);
            Ok(())
        })
    }

    /// Elements `start..end` (already clamped) as a Rhai array, under one lock.
    pub fn read_range(&self, start: usize, end: usize) -> RtResult<rhai::Array> {
        self.locked(|| Ok((start..end).map(|i| self.get_raw(i)).collect()))
    }

    /// Python's `a[start:end]` bounds: negative counts from the end, then clamped.
    pub fn clamp(&self, start: INT, end: INT) -> (usize, usize) {
        let n = self.len as INT;
        let fix = |x: INT| {
            let x = if x < 0 { x + n } else { x };
            x.clamp(0, n) as usize
        };
        let (s, e) = (fix(start), fix(end));
        (s, e.max(s))
    }

    /// `fill(x)`: every element set to `x`, under one lock.
    pub fn fill(&self, v: &Dynamic) -> RtResult<()> {
        let bits = self.code.to_bits(v)?;
        self.locked(|| {
            for i in 0..self.len {
                self.set_raw(i, bits);
            }
            Ok(())
        })
    }

    /// Sets elements from `items` (for constructors: no lock needed, nobody else sees it).
    pub fn init_from(&self, items: impl Iterator<Item = Dynamic>) -> RtResult<()> {
        for (i, v) in items.enumerate() {
            let bits = self.code.to_bits(&v)?;
            self.set_raw(i, bits);
        }
        Ok(())
    }

    fn encode(&self, e: &mut Encoder) {
        self.obj.encode(e);
    }

    fn decode(d: &mut Decoder, kind: Kind) -> Result<Shared, String> {
        let (obj, _) = SharedObject::decode(d, &[kind])?;
        // SAFETY: header fields inside the first BODY_AT bytes of a region of that kind.
        let (code, len, locked) = unsafe {
            (
                (obj.ptr(CODE_AT) as *const u32).read_volatile(),
                (obj.ptr(LEN_AT) as *const u64).read_volatile() as usize,
                (obj.ptr(LOCKED_AT) as *const u32).read_volatile() != 0,
            )
        };
        let code = char::from_u32(code)
            .and_then(Typecode::from_char)
            .ok_or("shared memory has a bad typecode")?;
        if len > MAX_LEN || BODY_AT + len * code.size() > obj.len() {
            return Err("shared memory is smaller than its header says".into());
        }
        Ok(Shared {
            obj,
            code,
            len,
            locked,
        })
    }
}

impl Value {
    /// `Value(code, x)` / `Value(code, x, lock)`.
    pub fn new(code: Typecode, x: &Dynamic, lock: bool) -> RtResult<Value> {
        let bits = code.to_bits(x)?;
        let s = Shared::new(Kind::Value, code, 1, lock)?;
        s.set_raw(0, bits);
        Ok(Value(s))
    }

    /// `v.value`.
    pub fn get(&self) -> RtResult<Dynamic> {
        self.0.get(0)
    }

    /// `v.value = x`.
    pub fn set(&self, x: &Dynamic) -> RtResult<()> {
        self.0.set(0, x)
    }

    /// `Value('d', 3.14)`.
    pub fn repr(&self) -> String {
        let v = self.get().unwrap_or_else(|_| self.0.get_raw(0));
        format!("Value('{}', {})", self.0.code.0, self.0.code.repr_of(&v))
    }
}

impl Array {
    /// `Array('i', [0, -1])`.
    pub fn repr(&self) -> String {
        let items = self
            .0
            .read_range(0, self.0.len)
            .unwrap_or_else(|_| (0..self.0.len).map(|i| self.0.get_raw(i)).collect());
        let parts: Vec<String> = items.iter().map(|v| self.0.code.repr_of(v)).collect();
        format!("Array('{}', [{}])", self.0.code.0, parts.join(", "))
    }
}

/// `for x in a`: reads each element when the loop reaches it (as CPython's iteration does).
pub struct ArrayIter {
    a: Shared,
    i: usize,
}

impl Iterator for ArrayIter {
    type Item = RtResult<Dynamic>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.i >= self.a.len {
            return None;
        }
        let i = self.i;
        self.i += 1;
        Some(self.a.locked(|| Ok(self.a.get_raw(i))))
    }
}

impl IntoIterator for Array {
    type Item = RtResult<Dynamic>;
    type IntoIter = ArrayIter;
    fn into_iter(self) -> ArrayIter {
        ArrayIter { a: self.0, i: 0 }
    }
}

fn enc_value(v: &Dynamic, e: &mut Encoder) -> Result<(), String> {
    v.clone()
        .try_cast::<Value>()
        .ok_or("not a Value")?
        .0
        .encode(e);
    Ok(())
}
fn dec_value(d: &mut Decoder) -> Result<Dynamic, String> {
    Ok(Dynamic::from(Value(Shared::decode(d, Kind::Value)?)))
}
fn enc_array(v: &Dynamic, e: &mut Encoder) -> Result<(), String> {
    v.clone()
        .try_cast::<Array>()
        .ok_or("not an Array")?
        .0
        .encode(e);
    Ok(())
}
fn dec_array(d: &mut Decoder) -> Result<Dynamic, String> {
    Ok(Dynamic::from(Array(Shared::decode(d, Kind::Array)?)))
}

/// Makes Value and Array sendable (their memfd travels; the receiver maps the same pages).
pub fn register_codecs() {
    wire::register_handle::<Value>(HandleCodec {
        name: "Value",
        encode: enc_value,
        decode: dec_value,
    });
    wire::register_handle::<Array>(HandleCodec {
        name: "Array",
        encode: enc_array,
        decode: dec_array,
    });
}
