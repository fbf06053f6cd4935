//! `KeyspaceId`: the 64-bit position of a row in the keyspace-id space.
//!
//! Every row of a sharded table has a keyspace id, computed by the table's primary vindex. Shards
//! own half-open ranges of keyspace ids ([`crate::KeyRange`]). Keyspace ids compare as unsigned
//! 64-bit integers, which is the same order as their 8-byte big-endian encoding (the order Vitess
//! uses for its byte-string keyspace ids).
//!
//! Text form: hex digits that are a prefix of the 8-byte big-endian encoding, so `80` is
//! `0x8000_0000_0000_0000` and `0123456789abcdef` is itself. 2 to 16 digits, an even number
//! (whole bytes, as in Vitess), case-insensitive. [`Display`](std::fmt::Display) always prints
//! all 16 digits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// A 64-bit keyspace id (newtype over `u64`, ordered as unsigned).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyspaceId(u64);

impl KeyspaceId {
    /// The smallest keyspace id.
    pub const MIN: KeyspaceId = KeyspaceId(0);
    /// The largest keyspace id.
    pub const MAX: KeyspaceId = KeyspaceId(u64::MAX);

    /// Wrap a raw value.
    #[must_use]
    pub const fn new(raw: u64) -> Self {
        KeyspaceId(raw)
    }

    /// The raw value.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The 8-byte big-endian encoding (the form stored in lookup tables).
    #[must_use]
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// From the 8-byte big-endian encoding.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 8]) -> Self {
        KeyspaceId(u64::from_be_bytes(bytes))
    }

    /// From a byte slice that must be exactly 8 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 8] = bytes.try_into().map_err(|_| Error::InvalidKeyspaceId {
            input: format!("{} bytes", bytes.len()),
            reason: "a keyspace id is exactly 8 bytes",
        })?;
        Ok(Self::from_bytes(arr))
    }
}

impl From<u64> for KeyspaceId {
    fn from(raw: u64) -> Self {
        KeyspaceId(raw)
    }
}

impl fmt::Display for KeyspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for KeyspaceId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse_hex_prefix(s)
            .map(KeyspaceId)
            .map_err(|reason| Error::InvalidKeyspaceId { input: s.to_owned(), reason })
    }
}

impl Serialize for KeyspaceId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyspaceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parse 2..=16 hex digits (even count) as a prefix of an 8-byte big-endian number.
pub(crate) fn parse_hex_prefix(s: &str) -> std::result::Result<u64, &'static str> {
    let digits = s.as_bytes();
    if digits.len() < 2 || digits.len() > 16 {
        return Err("expected 2 to 16 hex digits");
    }
    if !digits.len().is_multiple_of(2) {
        return Err("expected an even number of hex digits (whole bytes)");
    }
    let mut value: u64 = 0;
    for &c in digits {
        let d = (c as char).to_digit(16).ok_or("expected only hex digits 0-9, a-f")?;
        value = (value << 4) | u64::from(d);
    }
    Ok(value << (4 * (16 - digits.len())))
}

/// Hex of the big-endian bytes of `v` with trailing zero bytes trimmed; `0` is the empty string.
pub(crate) fn format_hex_prefix(v: u64) -> String {
    if v == 0 {
        return String::new();
    }
    let full = format!("{v:016x}");
    let keep_bytes = 8 - (v.trailing_zeros() / 8) as usize;
    full[..keep_bytes * 2].to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefix_parse() {
        assert_eq!(parse_hex_prefix("80"), Ok(0x8000_0000_0000_0000));
        assert_eq!(parse_hex_prefix("4000"), Ok(0x4000_0000_0000_0000));
        assert_eq!(parse_hex_prefix("C0"), Ok(0xc000_0000_0000_0000));
        assert_eq!(parse_hex_prefix("0123456789abcdef"), Ok(0x0123_4567_89ab_cdef));
        assert!(parse_hex_prefix("8").is_err());
        assert!(parse_hex_prefix("").is_err());
        assert!(parse_hex_prefix("808").is_err());
        assert!(parse_hex_prefix("0123456789abcdef00").is_err());
        assert!(parse_hex_prefix("zz").is_err());
        assert!(parse_hex_prefix("+1").is_err());
    }

    #[test]
    fn prefix_format_trims_trailing_zero_bytes() {
        assert_eq!(format_hex_prefix(0), "");
        assert_eq!(format_hex_prefix(0x8000_0000_0000_0000), "80");
        assert_eq!(format_hex_prefix(0x4080_0000_0000_0000), "4080");
        assert_eq!(format_hex_prefix(0x0100_0000_0000_0000), "01");
        assert_eq!(format_hex_prefix(0x0000_0000_0000_0001), "0000000000000001");
        assert_eq!(format_hex_prefix(0x0800_0000_0000_0000), "08");
    }

    #[test]
    fn display_and_bytes() {
        let k: KeyspaceId = "80".parse().unwrap();
        assert_eq!(k.to_string(), "8000000000000000");
        assert_eq!(k.to_bytes(), [0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(KeyspaceId::from_slice(&k.to_bytes()).unwrap(), k);
        assert!(KeyspaceId::from_slice(&[1, 2]).is_err());
        assert!(KeyspaceId::new(1) < KeyspaceId::new(0x8000_0000_0000_0000));
    }

    #[test]
    fn serde_as_string() {
        let k = KeyspaceId::new(0xdead_beef);
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, "\"00000000deadbeef\"");
        assert_eq!(serde_json::from_str::<KeyspaceId>(&json).unwrap(), k);
    }

    proptest! {
        #[test]
        fn roundtrip(raw in any::<u64>()) {
            let k = KeyspaceId::new(raw);
            prop_assert_eq!(k.to_string().parse::<KeyspaceId>().unwrap(), k);
            let short = format_hex_prefix(raw);
            if raw != 0 {
                prop_assert_eq!(parse_hex_prefix(&short), Ok(raw));
            }
        }
    }
}
