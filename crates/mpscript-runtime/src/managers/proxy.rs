//! Proxies: handles on a manager's shared objects. A proxy is (address, authkey, object id),
//! so it travels to any process (the receiver connects on its own) and compares equal when it
//! names the same object. Each script-visible kind is its own type, so `type_of` tells them
//! apart (`DictProxy`, `ListProxy`, ...).

use super::{call, Address};
use crate::errors::RtResult;
use crate::wire::{Decoder, Encoder, HandleCodec};
use rhai::{Array, Dynamic, NativeCallContext};
use std::sync::Arc;

/// The common part of every proxy.
#[derive(Clone)]
pub struct Proxy {
    /// The manager's address.
    pub address: Address,
    /// The manager's authkey.
    pub authkey: Arc<Vec<u8>>,
    /// The object's id on the server.
    pub id: u64,
    /// `dict`, `list`, `ns`, `value`, `queue`, `lock`, `event`.
    pub kind: String,
}

impl PartialEq for Proxy {
    fn eq(&self, o: &Self) -> bool {
        self.address == o.address && self.id == o.id
    }
}

impl Proxy {
    /// A proxy for object `id`.
    pub fn new(address: &Address, authkey: &[u8], id: u64, kind: &str) -> Proxy {
        Proxy {
            address: address.clone(),
            authkey: Arc::new(authkey.to_vec()),
            id,
            kind: kind.to_string(),
        }
    }

    /// Calls `method` on the object: one round trip.
    pub fn call(
        &self,
        ctx: Option<&NativeCallContext>,
        method: &str,
        args: Vec<Dynamic>,
    ) -> RtResult<Dynamic> {
        let mut req: Array = vec![method.into(), (self.id as i64).into()];
        req.extend(args);
        call(ctx, &self.address, &self.authkey, req)
    }

    fn encode(&self, e: &mut Encoder) {
        e.raw(self.address.text().as_bytes());
        e.raw(&self.authkey);
        e.uvar(self.id);
        e.raw(self.kind.as_bytes());
    }

    fn decode(d: &mut Decoder) -> Result<Proxy, String> {
        let addr = String::from_utf8(d.raw()?.to_vec()).map_err(|_| "bad address")?;
        let address = Address::parse(&addr).map_err(|e| e.to_string())?;
        let authkey = d.raw()?.to_vec();
        let id = d.uvar()?;
        let kind = String::from_utf8(d.raw()?.to_vec()).map_err(|_| "bad kind")?;
        Ok(Proxy {
            address,
            authkey: Arc::new(authkey),
            id,
            kind,
        })
    }
}

macro_rules! proxy_types {
    ($($ty:ident => $name:literal),* $(,)?) => {
        $(
            #[doc = concat!("A `", $name, "` (see [`Proxy`]).")]
            #[derive(Clone, PartialEq)]
            pub struct $ty(pub Proxy);
        )*

        /// Wraps a proxy in the script type of its kind.
        pub fn to_dynamic(p: Proxy) -> Dynamic {
            match p.kind.as_str() {
                "dict" => Dynamic::from(DictProxy(p)),
                "list" => Dynamic::from(ListProxy(p)),
                "ns" => Dynamic::from(NamespaceProxy(p)),
                "value" => Dynamic::from(ValueProxy(p)),
                "queue" => Dynamic::from(QueueProxy(p)),
                "lock" => Dynamic::from(LockProxy(p)),
                _ => Dynamic::from(EventProxy(p)),
            }
        }

        /// Makes every proxy type sendable.
        pub fn register_codecs() {
            $(
                crate::wire::register_handle::<$ty>(HandleCodec {
                    name: $name,
                    encode: |v, e| {
                        let p = v.read_lock::<$ty>().ok_or("not a proxy")?;
                        p.0.encode(e);
                        Ok(())
                    },
                    decode: |d| Ok(to_dynamic(Proxy::decode(d)?)),
                });
            )*
        }
    };
}

proxy_types! {
    DictProxy => "DictProxy",
    ListProxy => "ListProxy",
    NamespaceProxy => "NamespaceProxy",
    ValueProxy => "ValueProxy",
    QueueProxy => "QueueProxy",
    LockProxy => "LockProxy",
    EventProxy => "EventProxy",
}
