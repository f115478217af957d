//! Typecodes of Python's `array` module (`b B h H i I l L q Q f d` and `c`): element sizes,
//! and reads/writes of one element in shared memory with range checks.
//!
//! A value that does not fit its typecode raises `ValueError` (CPython's ctypes wraps it
//! silently; API.md promises it never does here). Integers read back as Rhai ints (`l`, `q`
//! are 64-bit as on Linux; `L`, `Q` hold 0..=i64::MAX, the ints a script can write); `f` and
//! `d` read back as floats and accept ints; `c` holds a char with a code below 256.
//! Elements are read and written with volatile accesses: other processes change them.

use crate::errors::{type_error, value_error, RtResult};
use rhai::{Dynamic, FLOAT, INT};

/// One element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Typecode(pub char);

const CODES: &str = "bBhHiIlLqQfdc";

impl Typecode {
    /// Reads a typecode argument (a char like `'d'`, or a one-character string).
    pub fn parse(v: &Dynamic) -> RtResult<Typecode> {
        let c = if let Ok(c) = v.as_char() {
            c
        } else if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
            let mut it = s.chars();
            match (it.next(), it.next()) {
                (Some(c), None) => c,
                _ => return Err(bad_code(&format!("{:?}", s.as_str()))),
            }
        } else {
            return Err(type_error(format!(
                "a typecode must be a char like 'd', not {}",
                crate::wire::script_type_name(v)
            )));
        };
        Self::from_char(c).ok_or_else(|| bad_code(&format!("'{c}'")))
    }

    /// The typecode for `c`, if it is one.
    pub fn from_char(c: char) -> Option<Typecode> {
        CODES.contains(c).then_some(Typecode(c))
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self.0 {
            'b' | 'B' | 'c' => 1,
            'h' | 'H' => 2,
            'i' | 'I' | 'f' => 4,
            _ => 8,
        }
    }

    /// Converts a script value to the bits stored for it (ValueError if it does not fit).
    pub fn to_bits(self, v: &Dynamic) -> RtResult<u64> {
        let code = self.0;
        match code {
            'f' | 'd' => {
                let f = if let Ok(f) = v.as_float() {
                    f
                } else if let Ok(i) = v.as_int() {
                    i as FLOAT
                } else {
                    return Err(self.wrong_type(v, "a float"));
                };
                if code == 'd' {
                    Ok(f.to_bits())
                } else if f.is_finite() && f.abs() > f32::MAX as f64 {
                    Err(value_error(format!(
                        "{f} does not fit typecode 'f' (a 32-bit float)"
                    )))
                } else {
                    Ok((f as f32).to_bits() as u64)
                }
            }
            'c' => {
                let c = if let Ok(c) = v.as_char() {
                    c
                } else if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
                    let mut it = s.chars();
                    match (it.next(), it.next()) {
                        (Some(c), None) => c,
                        _ => return Err(self.wrong_type(v, "a char")),
                    }
                } else {
                    return Err(self.wrong_type(v, "a char"));
                };
                if (c as u32) < 256 {
                    Ok(c as u64)
                } else {
                    Err(value_error(format!(
                        "'{c}' does not fit typecode 'c' (a char with a code below 256)"
                    )))
                }
            }
            _ => {
                let i: INT = if let Ok(i) = v.as_int() {
                    i
                } else if let Ok(b) = v.as_bool() {
                    b as INT
                } else {
                    return Err(self.wrong_type(v, "an int"));
                };
                let (lo, hi): (i128, i128) = match code {
                    'b' => (i8::MIN as i128, i8::MAX as i128),
                    'B' => (0, u8::MAX as i128),
                    'h' => (i16::MIN as i128, i16::MAX as i128),
                    'H' => (0, u16::MAX as i128),
                    'i' => (i32::MIN as i128, i32::MAX as i128),
                    'I' => (0, u32::MAX as i128),
                    'L' | 'Q' => (0, u64::MAX as i128),
                    _ => (i64::MIN as i128, i64::MAX as i128),
                };
                if (i as i128) < lo || (i as i128) > hi {
                    return Err(value_error(format!(
                        "{i} does not fit typecode '{code}' ({lo}..={hi})"
                    )));
                }
                Ok(i as u64)
            }
        }
    }

    fn wrong_type(self, v: &Dynamic, want: &str) -> Box<rhai::EvalAltResult> {
        type_error(format!(
            "typecode '{}' holds {want}, not {}",
            self.0,
            crate::wire::script_type_name(v)
        ))
    }

    /// Turns stored bits back into a script value.
    pub fn from_bits(self, bits: u64) -> Dynamic {
        match self.0 {
            'b' => Dynamic::from(bits as u8 as i8 as INT),
            'B' => Dynamic::from(bits as u8 as INT),
            'h' => Dynamic::from(bits as u16 as i16 as INT),
            'H' => Dynamic::from(bits as u16 as INT),
            'i' => Dynamic::from(bits as u32 as i32 as INT),
            'I' => Dynamic::from(bits as u32 as INT),
            'f' => Dynamic::from(f32::from_bits(bits as u32) as FLOAT),
            'd' => Dynamic::from(f64::from_bits(bits)),
            'c' => Dynamic::from(char::from(bits as u8)),
            _ => Dynamic::from(bits as INT),
        }
    }

    /// Reads the element at `p`.
    ///
    /// # Safety
    /// `p` must point to a live, aligned element of this typecode's size.
    pub unsafe fn read(self, p: *const u8) -> u64 {
        // SAFETY: per the contract.
        unsafe {
            match self.size() {
                1 => p.read_volatile() as u64,
                2 => (p as *const u16).read_volatile() as u64,
                4 => (p as *const u32).read_volatile() as u64,
                _ => (p as *const u64).read_volatile(),
            }
        }
    }

    /// Writes the element at `p`.
    ///
    /// # Safety
    /// As [`Typecode::read`], and writable.
    pub unsafe fn write(self, p: *mut u8, bits: u64) {
        // SAFETY: per the contract.
        unsafe {
            match self.size() {
                1 => p.write_volatile(bits as u8),
                2 => (p as *mut u16).write_volatile(bits as u16),
                4 => (p as *mut u32).write_volatile(bits as u32),
                _ => (p as *mut u64).write_volatile(bits),
            }
        }
    }

    /// How an element prints inside a repr (`'a'` for a char, Rhai's own form otherwise).
    pub fn repr_of(self, v: &Dynamic) -> String {
        match v.as_char() {
            Ok(c) => format!("'{c}'"),
            Err(_) => v.to_string(),
        }
    }
}

fn bad_code(got: &str) -> Box<rhai::EvalAltResult> {
    value_error(format!(
        "bad typecode {got} (must be b, B, h, H, i, I, l, L, q, Q, f, d or c)"
    ))
}
