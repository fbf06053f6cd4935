#![allow(clippy::unwrap_used)]

use super::*;
use crate::testing::{arb_cover, arb_key_range};
use proptest::prelude::*;

fn kr(s: &str) -> KeyRange {
    s.parse().unwrap()
}

fn ks(raw: u64) -> KeyspaceId {
    KeyspaceId::new(raw)
}

#[test]
fn parse_vitess_forms() {
    assert_eq!(kr("-"), KeyRange::FULL);
    assert!(kr("-").is_full());
    let lower = kr("-80");
    assert_eq!(lower.start(), ks(0));
    assert_eq!(lower.end(), Some(ks(0x8000_0000_0000_0000)));
    let upper = kr("80-");
    assert_eq!(upper.start(), ks(0x8000_0000_0000_0000));
    assert_eq!(upper.end(), None);
    assert_eq!(kr("40-80").size(), 1u128 << 62);
    assert_eq!(kr("-").size(), 1u128 << 64);
}

#[test]
fn format_is_canonical() {
    assert_eq!(kr("4000-8000").to_string(), "40-80");
    assert_eq!(kr("00-80").to_string(), "-80");
    assert_eq!(kr("C0-").to_string(), "c0-");
    assert_eq!(kr("-").to_string(), "-");
    assert_eq!(kr("4080-50").to_string(), "4080-50");
    assert_eq!(kr("0000000000000001-0000000000000002").to_string(), "0000000000000001-0000000000000002");
}

#[test]
fn parse_rejects_bad_input() {
    for bad in
        ["", "80", "8-", "-8", "80-40", "80-80", "xx-", "-00", "--", "0-1", "123-", "0123456789abcdef00-"]
    {
        assert!(bad.parse::<KeyRange>().is_err(), "{bad:?} should not parse");
    }
    let msg = "80-40".parse::<KeyRange>().unwrap_err().to_string();
    assert!(msg.contains("80-40") && msg.contains("start must be below end"), "{msg}");
}

#[test]
fn contains_is_half_open() {
    let r = kr("40-80");
    assert!(!r.contains(ks(0x3fff_ffff_ffff_ffff)));
    assert!(r.contains(ks(0x4000_0000_0000_0000)));
    assert!(r.contains(ks(0x7fff_ffff_ffff_ffff)));
    assert!(!r.contains(ks(0x8000_0000_0000_0000)));
    assert!(kr("80-").contains(KeyspaceId::MAX));
    assert!(kr("-80").contains(KeyspaceId::MIN));
    assert!(kr("-").contains_range(&kr("40-80")));
    assert!(!kr("40-80").contains_range(&kr("40-")));
}

#[test]
fn intersect() {
    assert_eq!(kr("-80").intersect(&kr("40-")), Some(kr("40-80")));
    assert_eq!(kr("-80").intersect(&kr("80-")), None);
    assert_eq!(kr("-").intersect(&kr("c0-")), Some(kr("c0-")));
    assert!(kr("-40").intersects(&kr("20-30")));
    assert!(!kr("-40").intersects(&kr("40-50")));
}

#[test]
fn split_halves_and_quarters() {
    assert_eq!(kr("-").split(2).unwrap(), vec![kr("-80"), kr("80-")]);
    assert_eq!(kr("-").split(4).unwrap(), vec![kr("-40"), kr("40-80"), kr("80-c0"), kr("c0-")]);
    assert_eq!(kr("40-80").split(2).unwrap(), vec![kr("40-60"), kr("60-80")]);
    assert_eq!(kr("40-80").split(1).unwrap(), vec![kr("40-80")]);
    let thirds = kr("-").split(3).unwrap();
    assert_eq!(thirds[0].to_string(), "-5555555555555555");
    assert_eq!(thirds[2].to_string(), "aaaaaaaaaaaaaaaa-");
}

#[test]
fn split_errors() {
    assert!(matches!(kr("-").split(0), Err(Error::ZeroSplit)));
    let tiny = KeyRange::new(ks(5), Some(ks(7))).unwrap();
    assert_eq!(tiny.split(2).unwrap().len(), 2);
    let err = tiny.split(3).unwrap_err();
    assert!(matches!(err, Error::KeyRangeTooSmall { parts: 3, .. }), "{err}");
}

#[test]
fn cover_errors_name_the_problem() {
    let gap = KeyRange::check_cover(&[kr("-40"), kr("80-")]).unwrap_err();
    assert_eq!(gap.to_string(), "gap between -40 and 80-: 40-80 is not covered");
    let overlap = KeyRange::check_cover(&[kr("-40"), kr("40-80"), kr("60-")]).unwrap_err();
    assert_eq!(overlap.to_string(), "overlap: 40-80 and 60-");
    let start = KeyRange::check_cover(&[kr("40-")]).unwrap_err();
    assert_eq!(start.to_string(), "gap before 40-: -40 is not covered");
    let end = KeyRange::check_cover(&[kr("-c0")]).unwrap_err();
    assert_eq!(end.to_string(), "gap after -c0: c0- is not covered");
    assert!(matches!(KeyRange::check_cover(&[]), Err(Error::NoKeyRanges)));
    let dup = KeyRange::check_cover(&[kr("-80"), kr("-80"), kr("80-")]).unwrap_err();
    assert_eq!(dup.to_string(), "overlap: -80 and -80");
    KeyRange::check_cover(&[kr("80-"), kr("-80")]).unwrap();
    KeyRange::check_cover(&[kr("-")]).unwrap();
}

#[test]
fn serde_as_string() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Doc {
        range: KeyRange,
    }
    let doc: Doc = toml::from_str("range = \"40-80\"").unwrap();
    assert_eq!(doc.range, kr("40-80"));
    assert_eq!(toml::to_string(&doc).unwrap().trim(), "range = \"40-80\"");
    assert!(toml::from_str::<Doc>("range = \"80-40\"").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn parse_format_roundtrip(r in arb_key_range()) {
        let text = r.to_string();
        prop_assert_eq!(text.parse::<KeyRange>().unwrap(), r);
        // Upper-case input parses to the same range.
        prop_assert_eq!(text.to_uppercase().parse::<KeyRange>().unwrap(), r);
    }

    #[test]
    fn split_covers_the_same_space(r in arb_key_range(), parts in 1u32..9) {
        prop_assume!(r.size() >= u128::from(parts));
        let pieces = r.split(parts).unwrap();
        prop_assert_eq!(pieces.len(), parts as usize);
        prop_assert_eq!(pieces[0].start(), r.start());
        prop_assert_eq!(pieces[pieces.len() - 1].end(), r.end());
        for w in pieces.windows(2) {
            prop_assert_eq!(w[0].end(), Some(w[1].start()));
        }
        let total: u128 = pieces.iter().map(KeyRange::size).sum();
        prop_assert_eq!(total, r.size());
        let (min, max) = pieces.iter().fold((u128::MAX, 0), |(lo, hi), p| (lo.min(p.size()), hi.max(p.size())));
        prop_assert!(max - min <= 1, "parts differ by more than one id");
    }

    #[test]
    fn covers_made_by_splitting_pass(cover in arb_cover()) {
        KeyRange::check_cover(&cover).unwrap();
    }

    #[test]
    fn removing_or_duplicating_a_range_fails(cover in arb_cover(), pick in any::<prop::sample::Index>(), dup in any::<bool>()) {
        let i = pick.index(cover.len());
        let mut broken = cover.clone();
        if dup {
            broken.push(cover[i]);
            let is_overlap = matches!(KeyRange::check_cover(&broken), Err(Error::KeyRangeOverlap { .. }));
            prop_assert!(is_overlap);
        } else {
            let removed = broken.remove(i);
            match KeyRange::check_cover(&broken) {
                Err(Error::KeyRangeGap { missing, .. }) => prop_assert_eq!(missing, removed),
                Err(Error::NoKeyRanges) => prop_assert!(broken.is_empty()),
                other => prop_assert!(false, "expected a gap, got {:?}", other),
            }
        }
    }

    #[test]
    fn intersect_agrees_with_contains(a in arb_key_range(), b in arb_key_range(), probe in any::<u64>()) {
        let k = KeyspaceId::new(probe);
        let both = a.contains(k) && b.contains(k);
        prop_assert_eq!(a.intersect(&b).is_some_and(|i| i.contains(k)), both);
    }
}
