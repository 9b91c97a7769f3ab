//! Bad input never panics: every fixture in `sip-fixtures/`, corrupted thousands of
//! ways (bytes flipped, cut, duplicated, SIP punctuation sprinkled in), goes through
//! the parser, every typed accessor, serialisation and the TCP framer.

use bytes::Bytes;
use handoff::sip::message::{parse, NameAddr, SipUri};
use handoff::sip::transport::Framer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

/// Characters that steer the parsers into their less common branches.
const SPICE: &[u8] = b"\r\n:;,<>\"\\[]@=? \t\x00\xff\xc3%+";

fn fixtures() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sip-fixtures");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .expect("sip-fixtures/")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("read"))
        .collect();
    out.sort();
    out
}

fn mutate(rng: &mut StdRng, base: &[u8]) -> Vec<u8> {
    let mut m = base.to_vec();
    for _ in 0..rng.gen_range(1..3) {
        if m.is_empty() {
            m.push(b'\n');
        }
        let at = rng.gen_range(0..m.len());
        match rng.gen_range(0..12) {
            0..=2 => m[at] = rng.gen(),
            3..=5 => m[at] = SPICE[rng.gen_range(0..SPICE.len())],
            6..=8 => m.insert(at, SPICE[rng.gen_range(0..SPICE.len())]),
            9 => m.truncate(at),
            10 => {
                let end = (at + rng.gen_range(1..40)).min(m.len());
                let chunk = m[at..end].to_vec();
                m.splice(at..at, chunk);
            }
            _ => {
                let end = (at + rng.gen_range(1..20)).min(m.len());
                m.drain(at..end);
            }
        }
    }
    m
}

/// Everything a handler might read from a message that parsed. Returns whether it
/// parsed.
fn exercise(data: Vec<u8>) -> bool {
    let Ok(msg) = parse(Bytes::from(data)) else {
        return false;
    };
    let _ = (
        msg.call_id(),
        msg.cseq(),
        msg.from_tag(),
        msg.to_tag(),
        msg.max_forwards(),
    );
    let _ = (msg.from_header(), msg.to_header(), msg.branch());
    if let Some(v) = msg.top_via() {
        let _ = (
            v.sent_by_key(),
            v.response_port(),
            v.received(),
            v.to_string(),
        );
        let mut v = v.clone();
        v.stamp_source("127.0.0.1".parse().unwrap(), 5060);
    }
    for name in ["Contact", "Record-Route", "Route", "Refer-To"] {
        for value in msg.header_values(name) {
            let _ = NameAddr::parse(value);
        }
    }
    if let Some(uri) = msg.request_uri() {
        let _ = SipUri::parse(uri);
    }
    // What we parsed, we can write and read back.
    let again = parse(msg.to_bytes()).expect("a parsed message re-parses after serialising");
    assert_eq!(again.body(), msg.body());
    true
}

#[test]
fn corrupted_fixtures_never_panic_the_parser() {
    let mut rng = StdRng::seed_from_u64(0x5119_2026);
    let bases = fixtures();
    assert!(bases.len() >= 10);
    let (mut tried, mut parsed) = (0, 0);
    for base in &bases {
        exercise(base.clone());
        for _ in 0..3000 {
            tried += 1;
            parsed += usize::from(exercise(mutate(&mut rng, base)));
        }
    }
    // The corruption must leave enough messages whole for the accessors to be hit.
    assert!(
        parsed * 10 > tried,
        "only {parsed} of {tried} mutated messages parsed"
    );
    eprintln!("{parsed} of {tried} mutated messages parsed");
}

#[test]
fn corrupted_streams_never_panic_the_framer() {
    let mut rng = StdRng::seed_from_u64(0x00F4_A3E5);
    let bases = fixtures();
    for _ in 0..2000 {
        let mut framer = Framer::new(4096);
        let mut stream = Vec::new();
        for _ in 0..rng.gen_range(1..5) {
            let base = &bases[rng.gen_range(0..bases.len())];
            stream.extend(mutate(&mut rng, base));
        }
        // Fed in random pieces, as reads would deliver it.
        let mut rest = &stream[..];
        'feed: while !rest.is_empty() {
            let n = rng.gen_range(1..=rest.len().min(700));
            framer.push(&rest[..n]);
            rest = &rest[n..];
            loop {
                match framer.next_frame() {
                    Ok(Some(handoff::sip::transport::Frame::Message(m))) => {
                        exercise(m.to_vec());
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }
}
