//! Wiring between concepts that know nothing of each other (each sits below the register
//! layer): a shared `Array` as the items of a pool map, and as the target of
//! `recv_bytes_into` (API.md: a shared `Array('B', n)`, `'b'` or `'c'`).

use crate::sharedmem::Array;
use rhai::Dynamic;

fn array_items(v: &Dynamic) -> Option<rhai::Array> {
    let a = v.read_lock::<Array>()?;
    let n = a.0.len();
    a.0.locked(|| a.0.read_range(0, n)).ok()
}

struct BytesOf(Array);

impl crate::connection::ByteTarget for BytesOf {
    fn byte_len(&self) -> usize {
        self.0 .0.len()
    }
    fn write_at(&self, offset: usize, bytes: &[u8]) -> crate::errors::RtResult<()> {
        self.0 .0.locked(|| {
            for (k, b) in bytes.iter().enumerate() {
                self.0 .0.set_raw(offset + k, *b as u64);
            }
            Ok(())
        })
    }
}

fn byte_target(v: &Dynamic) -> Option<Box<dyn crate::connection::ByteTarget>> {
    let a = v.read_lock::<Array>()?.clone();
    if a.0.code().size() != 1 {
        return None;
    }
    Some(Box::new(BytesOf(a)))
}

/// Installs the hooks (idempotent enough: hooks are set once per process).
pub fn register() {
    crate::pool::api::set_items_hook(array_items);
    crate::connection::register_byte_target(byte_target);
}
