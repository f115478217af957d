//! Pickle, plain data only: how values travel over a Listener/Client connection, so that a
//! Python `multiprocessing.connection` peer can talk to an mpscript one (API.md "Listener and
//! Client").
//!
//! Written by hand rather than with serde-pickle because the contract is a refusal: any opcode
//! that would import or call code (GLOBAL, STACK_GLOBAL, REDUCE, BUILD, INST, OBJ, NEWOBJ, ...)
//! is a `ValueError` and is never acted on, while serde-pickle turns object pickles into empty
//! dicts without an error. The only globals accepted are the data constructors CPython itself
//! uses for plain data in protocols 2–4 (`_codecs.encode` for bytes, `bytearray`, `set`,
//! `frozenset`), interpreted, not called. Protocols 2–5 are read; protocol 3 is written.
//!
//! Decoding builds a small graph first (lists are memoised empty and filled later, so memo
//! references must share the node), then turns it into Rhai values; a recursive structure is
//! refused. Every length is checked against the bytes left, so random input is an error.

use crate::errors::{mp_err, value_error, ErrorKind, RtResult};
use rhai::{Array, Blob, Dynamic, ImmutableString, Map};

/// Deepest nesting accepted when turning a pickle into values.
const MAX_DEPTH: usize = 256;

#[derive(Clone, Debug)]
enum Node {
    None,
    Bool(bool),
    Int(i64),
    BigInt, // outside i64: refused when used
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<usize>),
    Tuple(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Set(Vec<usize>),
    /// A whitelisted data constructor (only ever the callee of REDUCE).
    Ctor(Ctor),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ctor {
    CodecsEncode,
    Bytearray,
    Set,
}

#[derive(Clone, Copy, Debug)]
enum Item {
    Mark,
    Ref(usize),
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    nodes: Vec<Node>,
    stack: Vec<Item>,
    memo: std::collections::HashMap<u64, usize>,
}

fn bad(msg: impl Into<String>) -> Box<rhai::EvalAltResult> {
    value_error(format!("bad pickle: {}", msg.into()))
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> RtResult<&'a [u8]> {
        if n > self.b.len() - self.pos {
            return Err(bad("truncated"));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> RtResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn le(&mut self, n: usize) -> RtResult<u64> {
        let s = self.take(n)?;
        let mut v = 0u64;
        for (i, b) in s.iter().enumerate() {
            v |= (*b as u64) << (8 * i);
        }
        Ok(v)
    }
    fn line(&mut self) -> RtResult<&'a [u8]> {
        let rest = &self.b[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| bad("unterminated line"))?;
        self.pos += n + 1;
        Ok(&rest[..n])
    }
    fn push(&mut self, n: Node) {
        self.nodes.push(n);
        self.stack.push(Item::Ref(self.nodes.len() - 1));
    }
    fn pop(&mut self) -> RtResult<usize> {
        match self.stack.pop() {
            Some(Item::Ref(i)) => Ok(i),
            _ => Err(bad("stack underflow")),
        }
    }
    fn top(&self) -> RtResult<usize> {
        match self.stack.last() {
            Some(Item::Ref(i)) => Ok(*i),
            _ => Err(bad("stack underflow")),
        }
    }
    fn pop_mark(&mut self) -> RtResult<Vec<usize>> {
        let at = self
            .stack
            .iter()
            .rposition(|i| matches!(i, Item::Mark))
            .ok_or_else(|| bad("no mark"))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        // No mark can follow the last mark, so every item is a reference.
        Ok(items
            .into_iter()
            .filter_map(|i| match i {
                Item::Ref(r) => Some(r),
                Item::Mark => None,
            })
            .collect())
    }
    fn string(&mut self, n: usize) -> RtResult<()> {
        let s = self.take(n)?;
        let s = std::str::from_utf8(s).map_err(|_| bad("invalid UTF-8"))?;
        self.push(Node::Str(s.to_string()));
        Ok(())
    }
    fn bytes(&mut self, n: usize) -> RtResult<()> {
        let s = self.take(n)?.to_vec();
        self.push(Node::Bytes(s));
        Ok(())
    }
    fn memo_put(&mut self, key: u64) -> RtResult<()> {
        let t = self.top()?;
        self.memo.insert(key, t);
        Ok(())
    }
    fn memo_get(&mut self, key: u64) -> RtResult<()> {
        let n = *self.memo.get(&key).ok_or_else(|| bad("memo key missing"))?;
        self.stack.push(Item::Ref(n));
        Ok(())
    }
    fn append(&mut self, list: usize, items: Vec<usize>) -> RtResult<()> {
        match &mut self.nodes[list] {
            Node::List(v) | Node::Set(v) => {
                v.extend(items);
                Ok(())
            }
            _ => Err(bad("append to a non-list")),
        }
    }
    fn set_items(&mut self, dict: usize, items: Vec<usize>) -> RtResult<()> {
        if items.len() % 2 != 0 {
            return Err(bad("odd number of dict items"));
        }
        let pairs: Vec<(usize, usize)> = items.chunks(2).map(|c| (c[0], c[1])).collect();
        match &mut self.nodes[dict] {
            Node::Dict(v) => {
                v.extend(pairs);
                Ok(())
            }
            _ => Err(bad("setitem on a non-dict")),
        }
    }
    fn global(&mut self, module: &[u8], name: &[u8]) -> RtResult<()> {
        let ctor = match (module, name) {
            (b"_codecs", b"encode") => Ctor::CodecsEncode,
            (b"builtins" | b"__builtin__", b"bytearray") => Ctor::Bytearray,
            (b"builtins" | b"__builtin__", b"set" | b"frozenset") => Ctor::Set,
            _ => {
                return Err(value_error(format!(
                    "pickle refers to code ({}.{}): refused",
                    String::from_utf8_lossy(module),
                    String::from_utf8_lossy(name)
                )))
            }
        };
        self.push(Node::Ctor(ctor));
        Ok(())
    }
    fn reduce(&mut self) -> RtResult<()> {
        let args = self.pop()?;
        let f = self.pop()?;
        let Node::Ctor(ctor) = self.nodes[f] else {
            return Err(value_error("pickle calls code (REDUCE): refused"));
        };
        let args = match &self.nodes[args] {
            Node::Tuple(a) => a.clone(),
            _ => return Err(bad("REDUCE arguments are not a tuple")),
        };
        let node = match (ctor, args.as_slice()) {
            // bytes in protocol 2: _codecs.encode(str, 'latin1')
            (Ctor::CodecsEncode, [s, enc]) => match (&self.nodes[*s], &self.nodes[*enc]) {
                (Node::Str(s), Node::Str(e)) if e == "latin1" || e == "latin-1" => {
                    let mut out = Vec::with_capacity(s.len());
                    for c in s.chars() {
                        out.push(u8::try_from(c as u32).map_err(|_| bad("latin1 out of range"))?);
                    }
                    Node::Bytes(out)
                }
                _ => {
                    return Err(value_error(
                        "pickle calls _codecs.encode unusually: refused",
                    ))
                }
            },
            (Ctor::Bytearray, []) => Node::Bytes(Vec::new()),
            (Ctor::Bytearray, [b]) => match &self.nodes[*b] {
                Node::Bytes(b) => Node::Bytes(b.clone()),
                _ => return Err(value_error("pickle calls bytearray unusually: refused")),
            },
            (Ctor::Set, []) => Node::Set(Vec::new()),
            (Ctor::Set, [l]) => match &self.nodes[*l] {
                Node::List(v) | Node::Set(v) | Node::Tuple(v) => Node::Set(v.clone()),
                _ => return Err(value_error("pickle calls set unusually: refused")),
            },
            _ => return Err(value_error("pickle calls code (REDUCE): refused")),
        };
        self.push(node);
        Ok(())
    }

    fn run(&mut self) -> RtResult<usize> {
        loop {
            let op = self.u8()?;
            match op {
                b'\x80' => {
                    let proto = self.u8()?;
                    if !(2..=5).contains(&proto) {
                        return Err(bad(format!("unsupported protocol {proto}")));
                    }
                }
                b'\x95' => {
                    self.le(8)?; // FRAME: a hint only
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Item::Mark),
                b'0' => {
                    self.stack.pop().ok_or_else(|| bad("stack underflow"))?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let t = self.top()?;
                    self.stack.push(Item::Ref(t));
                }
                b'N' => self.push(Node::None),
                b'\x88' => self.push(Node::Bool(true)),
                b'\x89' => self.push(Node::Bool(false)),
                b'I' => {
                    let l = self.line()?;
                    let node = match l {
                        b"00" => Node::Bool(false),
                        b"01" => Node::Bool(true),
                        _ => Node::Int(
                            std::str::from_utf8(l)
                                .ok()
                                .and_then(|s| s.parse().ok())
                                .ok_or_else(|| bad("bad INT"))?,
                        ),
                    };
                    self.push(node);
                }
                b'J' => {
                    let v = self.le(4)? as u32 as i32 as i64;
                    self.push(Node::Int(v));
                }
                b'K' => {
                    let v = self.u8()? as i64;
                    self.push(Node::Int(v));
                }
                b'M' => {
                    let v = self.le(2)? as i64;
                    self.push(Node::Int(v));
                }
                b'L' => {
                    let l = self.line()?;
                    let s = std::str::from_utf8(l).map_err(|_| bad("bad LONG"))?;
                    let node = s
                        .trim_end_matches('L')
                        .parse::<i64>()
                        .map_or(Node::BigInt, Node::Int);
                    self.push(node);
                }
                b'\x8a' | b'\x8b' => {
                    let n = if op == b'\x8a' {
                        self.u8()? as usize
                    } else {
                        self.le(4)? as usize
                    };
                    let s = self.take(n)?;
                    self.push(long_le(s));
                }
                b'F' => {
                    let l = self.line()?;
                    let f = std::str::from_utf8(l)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| bad("bad FLOAT"))?;
                    self.push(Node::Float(f));
                }
                b'G' => {
                    let s = self.take(8)?;
                    let f = f64::from_be_bytes(s.try_into().map_err(|_| bad("truncated"))?);
                    self.push(Node::Float(f));
                }
                b'X' => {
                    let n = self.le(4)? as usize;
                    self.string(n)?;
                }
                b'\x8c' => {
                    let n = self.u8()? as usize;
                    self.string(n)?;
                }
                b'\x8d' => {
                    let n = self.le(8)? as usize;
                    self.string(n)?;
                }
                b'V' => {
                    let l = self.line()?;
                    let s = String::from_utf8(l.to_vec()).map_err(|_| bad("bad UNICODE"))?;
                    self.push(Node::Str(s));
                }
                b'B' => {
                    let n = self.le(4)? as usize;
                    self.bytes(n)?;
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    self.bytes(n)?;
                }
                b'\x8e' | b'\x96' => {
                    let n = self.le(8)? as usize;
                    self.bytes(n)?;
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    self.bytes(n)?; // py2 str: bytes
                }
                b'T' => {
                    let n = self.le(4)? as usize;
                    self.bytes(n)?;
                }
                b']' => self.push(Node::List(Vec::new())),
                b'a' => {
                    let v = self.pop()?;
                    let l = self.top()?;
                    self.append(l, vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let l = self.top()?;
                    self.append(l, items)?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items));
                }
                b')' => self.push(Node::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items));
                }
                b'\x85' | b'\x86' | b'\x87' => {
                    let n = (op - b'\x84') as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Node::Tuple(items));
                }
                b'}' => self.push(Node::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Dict(Vec::new()));
                    let d = self.top()?;
                    self.set_items(d, items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top()?;
                    self.set_items(d, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let d = self.top()?;
                    self.set_items(d, items)?;
                }
                b'\x8f' => self.push(Node::Set(Vec::new())),
                b'\x90' => {
                    let items = self.pop_mark()?;
                    let s = self.top()?;
                    self.append(s, items)?;
                }
                b'\x91' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Set(items));
                }
                b'g' => {
                    let l = self.line()?;
                    let k = std::str::from_utf8(l)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| bad("bad GET"))?;
                    self.memo_get(k)?;
                }
                b'h' => {
                    let k = self.u8()? as u64;
                    self.memo_get(k)?;
                }
                b'j' => {
                    let k = self.le(4)?;
                    self.memo_get(k)?;
                }
                b'p' => {
                    let l = self.line()?;
                    let k = std::str::from_utf8(l)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| bad("bad PUT"))?;
                    self.memo_put(k)?;
                }
                b'q' => {
                    let k = self.u8()? as u64;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.le(4)?;
                    self.memo_put(k)?;
                }
                b'\x94' => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?;
                }
                b'c' => {
                    let module = self.line()?.to_vec();
                    let name = self.line()?.to_vec();
                    self.global(&module, &name)?;
                }
                b'\x93' => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&self.nodes[module], &self.nodes[name]) {
                        (Node::Str(m), Node::Str(n)) => {
                            let (m, n) = (m.clone().into_bytes(), n.clone().into_bytes());
                            self.global(&m, &n)?;
                        }
                        _ => return Err(bad("STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' => self.reduce()?,
                b'i' | b'o' | b'\x81' | b'\x92' | b'b' => {
                    return Err(value_error(format!(
                        "pickle builds an object (opcode {:?}): refused",
                        op as char
                    )))
                }
                b'P' | b'Q' | b'\x82' | b'\x83' | b'\x84' | b'\x97' | b'\x98' => {
                    return Err(value_error(format!(
                        "pickle opcode {:?} is not plain data: refused",
                        op as char
                    )))
                }
                other => return Err(bad(format!("unknown opcode 0x{other:02x}"))),
            }
        }
    }

    fn to_dynamic(&self, n: usize, depth: usize, path: &mut Vec<usize>) -> RtResult<Dynamic> {
        if depth > MAX_DEPTH || path.contains(&n) {
            return Err(value_error(
                "pickle holds a recursive or too deeply nested structure",
            ));
        }
        path.push(n);
        let v = match &self.nodes[n] {
            Node::None => Dynamic::UNIT,
            Node::Bool(b) => (*b).into(),
            Node::Int(i) => (*i).into(),
            Node::BigInt => return Err(value_error("integer does not fit in 64 bits")),
            Node::Float(f) => (*f).into(),
            Node::Str(s) => s.clone().into(),
            Node::Bytes(b) => Dynamic::from_blob(b.clone()),
            Node::List(v) | Node::Tuple(v) | Node::Set(v) => {
                let mut a = Array::with_capacity(v.len());
                for i in v {
                    a.push(self.to_dynamic(*i, depth + 1, path)?);
                }
                a.into()
            }
            Node::Dict(kv) => {
                let mut m = Map::new();
                for (k, v) in kv {
                    let key = match &self.nodes[*k] {
                        Node::Str(s) => s.clone(),
                        Node::Int(i) => i.to_string(),
                        Node::Bool(b) => if *b { "True" } else { "False" }.to_string(),
                        Node::None => "None".to_string(),
                        Node::Float(f) => f.to_string(),
                        _ => return Err(value_error("dict key is not a string or a number")),
                    };
                    m.insert(key.into(), self.to_dynamic(*v, depth + 1, path)?);
                }
                m.into()
            }
            Node::Ctor(_) => return Err(value_error("pickle refers to code: refused")),
        };
        path.pop();
        Ok(v)
    }
}

fn long_le(s: &[u8]) -> Node {
    if s.is_empty() {
        return Node::Int(0);
    }
    if s.len() > 8 {
        // Longer encodings may still be in range (sign padding): check.
        let neg = s[s.len() - 1] & 0x80 != 0;
        let pad = if neg { 0xff } else { 0 };
        if s[8..].iter().any(|&b| b != pad) || ((s[7] & 0x80 != 0) != neg) {
            return Node::BigInt;
        }
        return long_le(&s[..8]);
    }
    let mut v: u64 = 0;
    for (i, b) in s.iter().enumerate() {
        v |= (*b as u64) << (8 * i);
    }
    let bits = 8 * s.len();
    let v = if bits < 64 && s[s.len() - 1] & 0x80 != 0 {
        (v | (!0u64 << bits)) as i64
    } else {
        v as i64
    };
    Node::Int(v)
}

/// Decodes a pickle of plain data (protocols 2–5) into a value; anything that would run code
/// is refused with `ValueError`.
pub fn loads(bytes: &[u8]) -> RtResult<Dynamic> {
    let mut r = Reader {
        b: bytes,
        pos: 0,
        nodes: Vec::new(),
        stack: Vec::new(),
        memo: Default::default(),
    };
    let root = r.run()?;
    r.to_dynamic(root, 0, &mut Vec::new())
}

/// Encodes a value as a protocol-3 pickle; values with no Python twin (char, range,
/// timestamp, function pointer, handles) raise `SendError` naming their path under `root`.
pub fn dumps(v: &Dynamic, root: &str) -> RtResult<Vec<u8>> {
    let mut out = vec![0x80, 3];
    write(&mut out, v, &mut vec![root.to_string()], 0)?;
    out.push(b'.');
    Ok(out)
}

fn write(out: &mut Vec<u8>, v: &Dynamic, path: &mut Vec<String>, depth: usize) -> RtResult<()> {
    if depth > MAX_DEPTH {
        return Err(mp_err(ErrorKind::SendError, "value nested too deeply"));
    }
    if v.is_shared() {
        let inner = v.read_lock::<Dynamic>().map(|g| g.clone());
        if let Some(inner) = inner {
            return write(out, &inner, path, depth + 1);
        }
    }
    if v.is_unit() {
        out.push(b'N');
    } else if let Ok(b) = v.as_bool() {
        out.push(if b { 0x88 } else { 0x89 });
    } else if let Ok(i) = v.as_int() {
        if let Ok(small) = i32::try_from(i) {
            out.push(b'J');
            out.extend_from_slice(&small.to_le_bytes());
        } else {
            out.push(0x8a);
            out.push(8);
            out.extend_from_slice(&i.to_le_bytes());
        }
    } else if let Ok(f) = v.as_float() {
        out.push(b'G');
        out.extend_from_slice(&f.to_be_bytes());
    } else if let Some(s) = v.read_lock::<ImmutableString>() {
        out.push(b'X');
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    } else if let Some(b) = v.read_lock::<Blob>() {
        if b.len() > u32::MAX as usize {
            return Err(mp_err(ErrorKind::SendError, "bytes over 4 GiB"));
        }
        out.push(b'B');
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(&b);
    } else if let Some(a) = v.read_lock::<Array>() {
        out.push(b']');
        if !a.is_empty() {
            out.push(b'(');
            for (i, x) in a.iter().enumerate() {
                path.push(format!("[{i}]"));
                write(out, x, path, depth + 1)?;
                path.pop();
            }
            out.push(b'e');
        }
    } else if let Some(m) = v.read_lock::<Map>() {
        out.push(b'}');
        if !m.is_empty() {
            out.push(b'(');
            for (k, x) in m.iter() {
                out.push(b'X');
                out.extend_from_slice(&(k.len() as u32).to_le_bytes());
                out.extend_from_slice(k.as_bytes());
                path.push(format!(".{k}"));
                write(out, x, path, depth + 1)?;
                path.pop();
            }
            out.push(b'u');
        }
    } else {
        return Err(mp_err(
            ErrorKind::SendError,
            format!(
                "cannot send {}: {} (only plain data travels as a pickle)",
                path.concat(),
                crate::wire::script_type_name(v)
            ),
        ));
    }
    Ok(())
}
