//! Property tests feeding arbitrary bytes to everything that decodes client input: none of it
//! may panic, and the framer must never hand out a frame longer than the limit.

#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use proptest::prelude::*;

use super::frame::{next_frame, next_startup_packet, HEADER_LEN};
use super::frontend::{self, Bind, DescribeOrClose, Parse, StartupPacket};
use super::Frame;
use crate::session::classify::{classify, classify_bytes};

fn frame(tag: u8, body: &[u8]) -> Frame {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    Frame { tag, bytes: v.into() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn framer_never_panics_or_overreads(input in proptest::collection::vec(any::<u8>(), 0..512), limit in 4usize..256) {
        let mut buf = BytesMut::from(&input[..]);
        while let Ok(Some(f)) = next_frame(&mut buf, limit) {
            prop_assert!(f.bytes.len() <= limit + 1);
            prop_assert!(f.bytes.len() >= HEADER_LEN);
        }
        let mut buf = BytesMut::from(&input[..]);
        let _ = next_startup_packet(&mut buf);
    }

    #[test]
    fn message_decoders_never_panic(tag in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..128)) {
        let f = frame(tag, &body);
        let _ = Parse::decode(&f).and_then(|p| p.text());
        if let Ok(b) = Bind::decode(&f) {
            let renamed = Frame { tag: b'B', bytes: b.with_statement("pgr_1") };
            prop_assert_eq!(Bind::decode(&renamed).unwrap().statement, "pgr_1");
        }
        let _ = DescribeOrClose::decode(&f);
        let _ = frontend::query_text(&f);
        if let Ok(sql) = frontend::query_bytes(&f) {
            let _ = classify_bytes(sql);
        }
        let _ = frontend::sasl_initial_response(&body);
        let _ = frontend::password(&body);
        let _ = StartupPacket::decode(&body);
    }

    #[test]
    fn classifier_never_panics(sql in "\\PC{0,200}") {
        let _ = classify(&sql);
        prop_assert_eq!(classify_bytes(sql.as_bytes()), classify(&sql));
    }

    #[test]
    fn classifier_never_panics_on_bytes(sql in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = classify_bytes(&sql);
    }

    #[test]
    fn classifier_on_sql_like_text(parts in proptest::collection::vec(
        prop_oneof![
            Just("select"), Just("set"), Just("SET LOCAL"), Just("'"), Just("\""), Just("$$"), Just("$a$"),
            Just("/*"), Just("*/"), Just("--"), Just("\n"), Just(";"), Just("="), Just("to"), Just("listen"),
            Just("x"), Just("$1"), Just("pg_advisory_lock"), Just("("), Just("temp"), Just("create"),
        ], 0..40)) {
        let _ = classify(&parts.join(" "));
    }
}
