//! SipHash-2-4 with a fixed key: the crate's one stable hash function.
//!
//! SipHash-2-4 is specified in J.-P. Aumasson and D. J. Bernstein, "SipHash: a fast short-input
//! PRF" (INDOCRYPT 2012): 64-bit output, 2 compression rounds per 8-byte little-endian message
//! word, 4 finalization rounds, the message length (mod 256) in the top byte of the last word.
//! The tests check this implementation against all 64 vectors of the reference implementation
//! (key `00 01 .. 0f`, messages `[]`, `[00]`, `[00 01]`, ...).
//!
//! Placement is persisted (rows live on the shard their hash chose), so the function must never
//! change. That rules out `std::collections::hash_map::DefaultHasher` (explicitly unstable across
//! Rust releases) and any crate whose output is not pinned by a specification. pg-router always
//! uses the all-zero key ([`ZERO_KEY`]): the key is not a secret here, it only selects one
//! member of the SipHash family once and for all.

use std::hash::{BuildHasher, Hasher};

/// The key pg-router uses everywhere: `k0 = k1 = 0`.
pub const ZERO_KEY: (u64, u64) = (0, 0);

#[derive(Clone, Copy, Debug)]
struct State {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
}

impl State {
    #[inline]
    fn new(k0: u64, k1: u64) -> Self {
        State {
            v0: k0 ^ 0x736f_6d65_7073_6575,
            v1: k1 ^ 0x646f_7261_6e64_6f6d,
            v2: k0 ^ 0x6c79_6765_6e65_7261,
            v3: k1 ^ 0x7465_6462_7974_6573,
        }
    }

    #[inline(always)]
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13);
        self.v1 ^= self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16);
        self.v3 ^= self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21);
        self.v3 ^= self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17);
        self.v1 ^= self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    #[inline(always)]
    fn compress(&mut self, m: u64) {
        self.v3 ^= m;
        self.round();
        self.round();
        self.v0 ^= m;
    }

    #[inline(always)]
    fn finish(mut self, tail: u64, len: usize) -> u64 {
        // Only the low 8 bits of the length enter the hash (specification, section 2).
        let b = ((len as u64) << 56) | tail;
        self.compress(b);
        self.v2 ^= 0xff;
        self.round();
        self.round();
        self.round();
        self.round();
        self.v0 ^ self.v1 ^ self.v2 ^ self.v3
    }
}

/// Little-endian load of up to 7 bytes into the low bytes of a word (a loop rather than a
/// variable-length copy, which would become a `memcpy` call on the hot path).
#[inline(always)]
fn load_tail(bytes: &[u8]) -> u64 {
    bytes.iter().enumerate().fold(0u64, |acc, (i, b)| acc | (u64::from(*b) << (8 * i)))
}

/// SipHash-2-4 of `data` under the key `(k0, k1)` (each key half read little-endian from the
/// 16 key bytes, as in the reference implementation).
#[must_use]
pub fn siphash24(k0: u64, k1: u64, data: &[u8]) -> u64 {
    let mut state = State::new(k0, k1);
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        state.compress(u64::from_le_bytes(word));
    }
    state.finish(load_tail(chunks.remainder()), data.len())
}

/// [`stable_hash`] of exactly 8 bytes, without the generic loop: the `hash` vindex's path for
/// integers and timestamps. Same result as `stable_hash(&bytes)`.
#[inline]
#[must_use]
pub fn stable_hash_8(bytes: [u8; 8]) -> u64 {
    let mut state = State::new(ZERO_KEY.0, ZERO_KEY.1);
    state.compress(u64::from_le_bytes(bytes));
    state.finish(0, 8)
}

/// SipHash-2-4 of `data` under [`ZERO_KEY`]: the function behind the `hash` vindex and the
/// consistent-hash ring.
#[inline]
#[must_use]
pub fn stable_hash(data: &[u8]) -> u64 {
    siphash24(ZERO_KEY.0, ZERO_KEY.1, data)
}

/// Streaming SipHash-2-4 as a [`Hasher`], for APIs that hash through `std::hash::Hash` (the
/// `hashring` crate). Feeding bytes in several `write` calls gives the same result as one
/// [`siphash24`] call over their concatenation.
///
/// The integer methods (`write_u32`, ...) feed **big-endian** bytes, so results do not depend on
/// the platform; `write_usize`/`write_isize` feed 8 bytes. Note that `impl Hash for str` appends
/// a `0xff` byte: hash explicit byte slices instead (see `consistent_hash.rs`).
#[derive(Clone, Debug)]
pub struct StableHasher {
    state: State,
    tail: [u8; 8],
    ntail: usize,
    length: usize,
}

impl StableHasher {
    /// A hasher with the all-zero key.
    #[must_use]
    pub fn new() -> Self {
        Self::with_keys(ZERO_KEY.0, ZERO_KEY.1)
    }

    /// A hasher with an explicit key.
    #[must_use]
    pub fn with_keys(k0: u64, k1: u64) -> Self {
        StableHasher { state: State::new(k0, k1), tail: [0; 8], ntail: 0, length: 0 }
    }
}

impl Default for StableHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher for StableHasher {
    fn write(&mut self, mut bytes: &[u8]) {
        self.length = self.length.wrapping_add(bytes.len());
        if self.ntail > 0 {
            let take = (8 - self.ntail).min(bytes.len());
            self.tail[self.ntail..self.ntail + take].copy_from_slice(&bytes[..take]);
            self.ntail += take;
            bytes = &bytes[take..];
            if self.ntail < 8 {
                return;
            }
            self.state.compress(u64::from_le_bytes(self.tail));
            self.ntail = 0;
        }
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.state.compress(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.ntail = rest.len();
    }

    fn finish(&self) -> u64 {
        self.state.finish(load_tail(&self.tail[..self.ntail]), self.length)
    }

    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }
    fn write_u16(&mut self, i: u16) {
        self.write(&i.to_be_bytes());
    }
    fn write_u32(&mut self, i: u32) {
        self.write(&i.to_be_bytes());
    }
    fn write_u64(&mut self, i: u64) {
        self.write(&i.to_be_bytes());
    }
    fn write_u128(&mut self, i: u128) {
        self.write(&i.to_be_bytes());
    }
    fn write_usize(&mut self, i: usize) {
        self.write(&(i as u64).to_be_bytes());
    }
    fn write_i8(&mut self, i: i8) {
        self.write(&i.to_be_bytes());
    }
    fn write_i16(&mut self, i: i16) {
        self.write(&i.to_be_bytes());
    }
    fn write_i32(&mut self, i: i32) {
        self.write(&i.to_be_bytes());
    }
    fn write_i64(&mut self, i: i64) {
        self.write(&i.to_be_bytes());
    }
    fn write_i128(&mut self, i: i128) {
        self.write(&i.to_be_bytes());
    }
    fn write_isize(&mut self, i: isize) {
        self.write(&(i as i64).to_be_bytes());
    }
}

/// [`BuildHasher`] producing zero-key [`StableHasher`]s; hand it to `hashring::HashRing`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StableBuildHasher;

impl BuildHasher for StableBuildHasher {
    type Hasher = StableHasher;

    fn build_hasher(&self) -> StableHasher {
        StableHasher::new()
    }
}

#[cfg(test)]
mod tests;
