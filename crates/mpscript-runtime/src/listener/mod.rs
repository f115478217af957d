//! Listener and Client: connections between programs, speaking Python's
//! `multiprocessing.connection` protocol (framing, authkey handshake, values as pickles of
//! plain data), so mpscript interoperates with CPython (API.md "Listener and Client").
//!
//! - [`auth`]: the HMAC challenge/response in both the ≤ 3.11 and ≥ 3.12 forms.
//! - [`pickle`]: plain-data pickles, refusing anything that would run code.
//! - [`net`]: `Listener`, `Client`.

pub mod auth;
pub mod net;
pub mod pickle;
