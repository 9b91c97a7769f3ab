//! Panic-freedom on arbitrary input: seeded random strings built from the characters
//! that matter to the parsers, run through every entry point.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PIECES: &[&str] = &[
    "<",
    ">",
    "\"",
    "\\",
    ";",
    ",",
    "?",
    "&",
    "=",
    ":",
    "@",
    "[",
    "]",
    ".",
    "*",
    "+",
    "%",
    "%0D%0A",
    "%FF",
    "%",
    " ",
    "\t",
    "\r\n",
    "\u{0}",
    "é",
    "€",
    "sip:",
    "sips:",
    "tel:",
    "user=phone",
    "maddr=",
    "transport=",
    "method=",
    "X-",
    "X-OPENCX-",
    "Digest ",
    "realm",
    "nonce",
    "qop",
    "auth",
    "auth-int",
    "algorithm",
    "MD5",
    "SHA-256",
    "userhash",
    "a",
    "zendesk.sip.twilio.com",
    "127.0.0.1",
    "::1",
    "localhost",
    "5060",
    "+1555",
];

fn random_input(rng: &mut StdRng) -> String {
    let n = rng.gen_range(0..24);
    (0..n)
        .map(|_| PIECES[rng.gen_range(0..PIECES.len())])
        .collect()
}

#[test]
fn no_entry_point_panics_on_random_input() {
    let policy = policy(
        r#"
allow = ["*.zendesk.sip.twilio.com", "tel:+*", "127.0.0.1", "sip:a@b.example"]
copy_refer_headers = ["X-*"]
[[destination]]
name = "d"
uri = "sip:a@c.example"
"#,
    );
    let creds = Credentials {
        username: "u".into(),
        password: crate::config::Secret::new("p"),
    };
    let mut rng = StdRng::seed_from_u64(0x7e57);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let input = random_input(&mut rng);
        if let Ok(t) = parse_refer_to(&[&input]) {
            parsed += 1;
            if let Ok(d) = policy.allow.check(&t) {
                let mut s = session();
                s.contact_id = Some(input.clone());
                s.caller_display_name = Some(input.clone());
                let _ = transfer_headers(&s, &d, &policy.settings);
            }
            let _ = policy.copy.copy(&t);
        }
        let _ = crate::sip::auth::digest_authorization(
            &input,
            "INVITE",
            "sip:a@b",
            &creds.digest(),
            "cn",
            1,
        );
        let _ = crate::b2bua::transfer::notify::sipfrag(rng.gen(), &input);
        let mut s = session();
        s.caller_display_name = Some(input.clone());
        s.caller_phone = Some(input.clone());
        let _ = transfer_from(&s, "h.example", "t", &policy.fallback_from);
        let _ = settings("").compile();
        let _ = TransferSettings {
            allow: vec![input.clone()],
            fallback_from: input.clone(),
            copy_refer_headers: vec![input.clone()],
            ..TransferSettings::default()
        }
        .compile();
    }
    assert!(
        parsed > 0,
        "the generator reaches the parser's success path"
    );
}
