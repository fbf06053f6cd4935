//! `KeyRange`: a half-open interval `[start, end)` of keyspace ids, with the Vitess text form.
//!
//! Text form `START-END`, each side a hex prefix of the 8-byte big-endian keyspace id
//! (see [`crate::KeyspaceId`]); an empty start is `0`, an empty end is the end of the space
//! (2^64, which no `u64` can hold, hence `end: Option`). So `-80` is the lower half, `80-` the
//! upper half, `40-80` the second quarter and `-` the whole space. Parsing accepts 2..=16 hex
//! digits per side (an even number, case-insensitive); formatting is canonical: lowercase with
//! trailing zero bytes trimmed, so `4000-8000` prints as `40-80` and `00-80` as `-80`.
//!
//! A key range is never empty: `start < end` always holds.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::keyspace_id::{format_hex_prefix, parse_hex_prefix, KeyspaceId};

/// One past the largest keyspace id, as a `u128`.
const SPACE_END: u128 = 1 << 64;

/// A non-empty half-open range of keyspace ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyRange {
    start: u64,
    /// `None` = up to and including `u64::MAX`.
    end: Option<u64>,
}

impl KeyRange {
    /// The whole keyspace-id space (`-`).
    pub const FULL: KeyRange = KeyRange { start: 0, end: None };

    /// `[start, end)`; `end = None` means "to the end of the space". Fails if empty.
    pub fn new(start: KeyspaceId, end: Option<KeyspaceId>) -> Result<Self> {
        Self::from_bounds(u128::from(start.get()), end.map_or(SPACE_END, |e| e.get().into())).ok_or_else(
            || Error::InvalidKeyRange {
                input: format!(
                    "{}-{}",
                    format_hex_prefix(start.get()),
                    end.map(|e| format_hex_prefix(e.get())).unwrap_or_default()
                ),
                reason: "start must be below end",
            },
        )
    }

    /// From `u128` bounds where `end <= 2^64`; `None` if empty or out of the space.
    fn from_bounds(start: u128, end: u128) -> Option<Self> {
        if start >= end || end > SPACE_END {
            return None;
        }
        Some(KeyRange {
            start: u64::try_from(start).ok()?,
            end: if end == SPACE_END { None } else { Some(u64::try_from(end).ok()?) },
        })
    }

    /// First keyspace id in the range.
    #[must_use]
    pub fn start(&self) -> KeyspaceId {
        KeyspaceId::new(self.start)
    }

    /// One past the last keyspace id, or `None` if the range runs to the end of the space.
    #[must_use]
    pub fn end(&self) -> Option<KeyspaceId> {
        self.end.map(KeyspaceId::new)
    }

    fn start_u128(&self) -> u128 {
        u128::from(self.start)
    }

    fn end_u128(&self) -> u128 {
        self.end.map_or(SPACE_END, u128::from)
    }

    /// Number of keyspace ids in the range (up to 2^64).
    #[must_use]
    pub fn size(&self) -> u128 {
        self.end_u128() - self.start_u128()
    }

    /// Is this the whole space?
    #[must_use]
    pub fn is_full(&self) -> bool {
        *self == Self::FULL
    }

    /// Does the range hold `id`?
    #[must_use]
    pub fn contains(&self, id: KeyspaceId) -> bool {
        id.get() >= self.start && self.end.is_none_or(|e| id.get() < e)
    }

    /// Does the range hold every id of `other`?
    #[must_use]
    pub fn contains_range(&self, other: &KeyRange) -> bool {
        self.start <= other.start && other.end_u128() <= self.end_u128()
    }

    /// The common part of two ranges, if any.
    #[must_use]
    pub fn intersect(&self, other: &KeyRange) -> Option<KeyRange> {
        Self::from_bounds(self.start_u128().max(other.start_u128()), self.end_u128().min(other.end_u128()))
    }

    /// Do the ranges share at least one keyspace id?
    #[must_use]
    pub fn intersects(&self, other: &KeyRange) -> bool {
        self.intersect(other).is_some()
    }

    /// Split into `parts` adjacent ranges of equal size (sizes differ by at most one id when the
    /// size is not divisible), in key order. `split(1)` returns the range itself.
    pub fn split(&self, parts: u32) -> Result<Vec<KeyRange>> {
        if parts == 0 {
            return Err(Error::ZeroSplit);
        }
        let size = self.size();
        if size < u128::from(parts) {
            return Err(Error::KeyRangeTooSmall { range: *self, parts });
        }
        let start = self.start_u128();
        let n = u128::from(parts);
        // size * i fits: size <= 2^64 and i < 2^32.
        let boundary = |i: u128| start + size * i / n;
        (0..n)
            .map(|i| {
                Self::from_bounds(boundary(i), boundary(i + 1))
                    .ok_or(Error::KeyRangeTooSmall { range: *self, parts })
            })
            .collect()
    }

    /// Check that `ranges` cover the whole space exactly once: no gap, no overlap. The error
    /// names the first problem in key order (e.g. "gap between -40 and 80-: 40-80 is not
    /// covered", "overlap: 40-80 and 60-").
    pub fn check_cover(ranges: &[KeyRange]) -> Result<()> {
        let mut sorted: Vec<KeyRange> = ranges.to_vec();
        sorted.sort();
        let mut covered_to: u128 = 0;
        let mut previous: Option<KeyRange> = None;
        for r in &sorted {
            match r.start_u128().cmp(&covered_to) {
                Ordering::Greater => {
                    return Err(Error::KeyRangeGap {
                        missing: Self::from_bounds(covered_to, r.start_u128()).unwrap_or(Self::FULL),
                        before: previous,
                        after: Some(*r),
                    });
                }
                Ordering::Less => {
                    return Err(Error::KeyRangeOverlap { first: previous.unwrap_or(Self::FULL), second: *r });
                }
                Ordering::Equal => {}
            }
            covered_to = r.end_u128();
            previous = Some(*r);
        }
        match previous {
            None => Err(Error::NoKeyRanges),
            Some(last) if covered_to < SPACE_END => Err(Error::KeyRangeGap {
                missing: Self::from_bounds(covered_to, SPACE_END).unwrap_or(Self::FULL),
                before: Some(last),
                after: None,
            }),
            Some(_) => Ok(()),
        }
    }
}

impl Ord for KeyRange {
    /// By start, then by end (an open end sorts last).
    fn cmp(&self, other: &Self) -> Ordering {
        (self.start, self.end_u128()).cmp(&(other.start, other.end_u128()))
    }
}

impl PartialOrd for KeyRange {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", format_hex_prefix(self.start), self.end.map(format_hex_prefix).unwrap_or_default())
    }
}

impl FromStr for KeyRange {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidKeyRange { input: s.to_owned(), reason };
        let (start, end) =
            s.split_once('-').ok_or_else(|| bad("expected START-END, e.g. -80, 40-80, 80- or -"))?;
        let start = if start.is_empty() { 0 } else { parse_hex_prefix(start).map_err(bad)? };
        let end = if end.is_empty() { SPACE_END } else { u128::from(parse_hex_prefix(end).map_err(bad)?) };
        Self::from_bounds(u128::from(start), end).ok_or_else(|| bad("start must be below end"))
    }
}

impl Serialize for KeyRange {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
