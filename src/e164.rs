//! Phone-number normalisation to E.164 ("+", country code, national number).
//!
//! We normalise only so that numbers from different sources (a SIP From user,
//! a Zendesk webhook field) compare equal; we never judge whether a number is
//! assigned. A small table of common countries is enough for that, and keeps
//! the call cheap and predictable (no regexes, no metadata loading).
//!
//! A leaf module: it depends on nothing else in the crate, so the dispatcher, the
//! sidecar, the Zendesk client and the configuration can all use it.

/// ITU-T E.164 section 6.1: at most 15 digits including the country code.
const MAX_DIGITS: usize = 15;
/// Fewer digits than this is a short code or garbage, not a callable number.
const MIN_DIGITS: usize = 7;
/// Longer number parts are rejected before any work (hostile input).
const MAX_INPUT: usize = 64;

/// Caller-id values that mean "no number" (RFC 3323 anonymous, carrier forms).
const WITHHELD: [&str; 7] = [
    "anonymous",
    "unknown",
    "restricted",
    "private",
    "unavailable",
    "withheld",
    "blocked",
];

/// Dialling data for one country: enough to turn a national number into E.164.
struct Country {
    /// ISO 3166-1 alpha-2, upper case.
    iso: &'static str,
    /// Country calling code, digits only.
    code: &'static str,
    /// National trunk prefix dropped before the national significant number.
    trunk: Option<&'static str>,
    /// International prefixes used there besides the common "00".
    idd: &'static [&'static str],
}

const fn c(
    iso: &'static str,
    code: &'static str,
    trunk: Option<&'static str>,
    idd: &'static [&'static str],
) -> Country {
    Country {
        iso,
        code,
        trunk,
        idd,
    }
}

/// NANP countries use "1" as both the country code and the trunk prefix, and
/// "011" as the international prefix.
const NANP_IDD: &[&str] = &["011"];

const COUNTRIES: &[Country] = &[
    c("US", "1", None, NANP_IDD),
    c("CA", "1", None, NANP_IDD),
    c("PR", "1", None, NANP_IDD),
    c("GB", "44", Some("0"), &[]),
    c("IE", "353", Some("0"), &[]),
    c("DE", "49", Some("0"), &[]),
    c("AT", "43", Some("0"), &[]),
    c("CH", "41", Some("0"), &[]),
    c("FR", "33", Some("0"), &[]),
    c("BE", "32", Some("0"), &[]),
    c("NL", "31", Some("0"), &[]),
    c("LU", "352", None, &[]),
    // Italy, Spain, Portugal, the Nordics and Poland have no trunk prefix:
    // a leading 0 (Italian landlines) is part of the number.
    c("IT", "39", None, &[]),
    c("ES", "34", None, &[]),
    c("PT", "351", None, &[]),
    c("GR", "30", None, &[]),
    c("DK", "45", None, &[]),
    c("NO", "47", None, &[]),
    c("SE", "46", Some("0"), &[]),
    c("FI", "358", Some("0"), &[]),
    c("PL", "48", None, &[]),
    c("CZ", "420", None, &[]),
    c("HU", "36", Some("06"), &[]),
    c("RU", "7", Some("8"), &["810"]),
    c("TR", "90", Some("0"), &[]),
    c("IL", "972", Some("0"), &[]),
    c("AE", "971", Some("0"), &[]),
    c("SA", "966", Some("0"), &[]),
    c("EG", "20", Some("0"), &[]),
    c("ZA", "27", Some("0"), &[]),
    c("NG", "234", Some("0"), &[]),
    c("IN", "91", Some("0"), &[]),
    c("SG", "65", None, &["001", "008"]),
    c("HK", "852", None, &["001"]),
    c("PH", "63", Some("0"), &[]),
    c("CN", "86", Some("0"), &[]),
    c("KR", "82", Some("0"), &["001", "002"]),
    c("JP", "81", Some("0"), &["010"]),
    c("AU", "61", Some("0"), &["0011"]),
    c("NZ", "64", Some("0"), &[]),
    c("BR", "55", Some("0"), &[]),
    c("AR", "54", Some("0"), &[]),
    c("MX", "52", None, &[]),
];

fn country_by_iso(iso: &str) -> Option<&'static Country> {
    let iso = iso.trim();
    COUNTRIES.iter().find(|c| c.iso.eq_ignore_ascii_case(iso))
}

/// Normalise a phone number from a SIP URI user part or a webhook field to E.164 ("+14155551212").
/// `default_country` is an ISO 3166-1 alpha-2 code (e.g. "US", "GB", "DE") used for national numbers.
/// Returns None for empty, "anonymous", "unknown", "restricted", "private", "unavailable" (case-insensitive),
/// anything with no digits, and anything not plausibly a phone number (letters other than those forms, too
/// few/many digits: E.164 is at most 15 digits, require at least 7 in total).
///
/// Also accepted: a whole `sip:`/`sips:`/`tel:` URI (the user part is used), URI
/// parameters after ';' (dropped), a percent-encoded leading "%2B", and the
/// "(0)" that European numbers carry after the country code. An unknown
/// `default_country` is treated as None.
pub fn normalize_e164(raw: &str, default_country: Option<&str>) -> Option<String> {
    let number = user_part(raw);
    if number.is_empty() || number.len() > MAX_INPUT {
        return None;
    }
    if WITHHELD.iter().any(|w| number.eq_ignore_ascii_case(w)) {
        return None;
    }
    let (plus, body) = split_plus(number);
    let Digits { digits, paren_zero } = visual_digits(body)?;
    let country = default_country.and_then(country_by_iso);

    let international = if plus {
        Some((digits.as_str(), 0))
    } else {
        strip_idd(&digits, country)
    };
    if let Some((rest, idd_len)) = international {
        // "+44 (0)20 ..." : the (0) is a trunk prefix written for national
        // callers; it is never dialled after the country code.
        let rest = match paren_zero {
            Some(pos) if pos >= idd_len => {
                let pos = pos - idd_len;
                let mut owned = String::with_capacity(rest.len());
                owned.push_str(rest.get(..pos)?);
                owned.push_str(rest.get(pos + 1..)?);
                owned
            }
            _ => rest.to_owned(),
        };
        return e164(&rest);
    }

    let country = country?;
    national_to_e164(&digits, country)
}

/// The number part of a SIP/tel URI, or the trimmed input when it is not a URI.
fn user_part(raw: &str) -> &str {
    let s = raw.trim();
    let s = ["tel:", "sips:", "sip:"]
        .iter()
        .find_map(|scheme| strip_prefix_ci(s, scheme))
        .unwrap_or(s);
    // RFC 3261 19.1.1: user part ends at '@'; RFC 3966 / RFC 3261 params after ';'.
    let s = s.split('@').next().unwrap_or(s);
    let s = s.split(';').next().unwrap_or(s);
    s.trim()
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Splits a leading '+' (or its percent-encoded form in a SIP user part).
fn split_plus(s: &str) -> (bool, &str) {
    if let Some(rest) = s.strip_prefix('+') {
        (true, rest)
    } else if let Some(rest) = strip_prefix_ci(s, "%2b") {
        (true, rest)
    } else {
        (false, s)
    }
}

struct Digits {
    digits: String,
    /// Index in `digits` of a '0' that was written as "(0)".
    paren_zero: Option<usize>,
}

/// Keeps the digits, drops the visual separators of RFC 3966 5.1.1 and common
/// writing ('/', spaces), rejects anything else.
fn visual_digits(body: &str) -> Option<Digits> {
    let mut digits = String::with_capacity(body.len());
    let mut paren_zero = None;
    let bytes = body.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'(' if paren_zero.is_none() && bytes.get(i + 1..i + 3) == Some(b"0)") => {
                paren_zero = Some(digits.len());
                digits.push('0');
                i += 3;
                continue;
            }
            b'0'..=b'9' => digits.push(char::from(b)),
            b' ' | b'\t' | b'-' | b'.' | b'(' | b')' | b'/' => {}
            _ => return None,
        }
        i += 1;
    }
    if digits.is_empty() {
        return None;
    }
    Some(Digits { digits, paren_zero })
}

/// Strips an international prefix: the country's own first (e.g. "011" in
/// NANP, "0011" in Australia), then the common "00". Returns the rest and the
/// prefix length.
fn strip_idd<'a>(digits: &'a str, country: Option<&Country>) -> Option<(&'a str, usize)> {
    let own = country.map(|c| c.idd).unwrap_or(&[]);
    own.iter()
        .chain(std::iter::once(&"00"))
        .find_map(|idd| digits.strip_prefix(idd).map(|rest| (rest, idd.len())))
}

fn national_to_e164(digits: &str, country: &Country) -> Option<String> {
    if country.code == "1" {
        // NANP: 1 + 10 digits, or 10 digits; area codes never start with 0 or 1.
        let nsn = match digits.strip_prefix('1') {
            Some(rest) if digits.len() == 11 => rest,
            _ => digits,
        };
        if nsn.len() != 10 || !nsn.starts_with(|c: char| ('2'..='9').contains(&c)) {
            return None;
        }
        return e164(&format!("1{nsn}"));
    }
    let nsn = country
        .trunk
        .and_then(|t| digits.strip_prefix(t))
        .unwrap_or(digits);
    if nsn.is_empty() {
        return None;
    }
    e164(&format!("{}{nsn}", country.code))
}

/// `digits` is country code + national number; checks the E.164 shape.
fn e164(digits: &str) -> Option<String> {
    let plausible = (MIN_DIGITS..=MAX_DIGITS).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0'); // no country code starts with 0
    plausible.then(|| format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::normalize_e164 as n;

    fn ok(raw: &str, country: Option<&str>, want: &str) {
        assert_eq!(
            n(raw, country).as_deref(),
            Some(want),
            "input {raw:?} {country:?}"
        );
    }

    fn none(raw: &str, country: Option<&str>) {
        assert_eq!(n(raw, country), None, "input {raw:?} {country:?}");
    }

    #[test]
    fn international_with_plus_and_separators() {
        ok("+1 (415)-555-1212", None, "+14155551212");
        ok("+14155551212", None, "+14155551212");
        ok("+1.415.555.1212", Some("GB"), "+14155551212");
        ok("+1 555 555 1234", None, "+15555551234");
        ok("  +49 30/1234567 ", None, "+49301234567");
        ok("+1\t415 555 1212", None, "+14155551212");
    }

    #[test]
    fn nanp_national_needs_ten_digits() {
        ok("4155551212", Some("US"), "+14155551212");
        ok("14155551212", Some("US"), "+14155551212");
        ok("1-415-555-1212", Some("us"), "+14155551212");
        ok("(416) 555-0199", Some("CA"), "+14165550199");
        none("5551212", Some("US"));
        none("415555121", Some("US"));
        none("24155551212", Some("US"));
        none("0415555121", Some("US"));
        none("1415555121", Some("US"));
    }

    #[test]
    fn national_trunk_prefix_is_dropped() {
        ok("020 7946 0018", Some("GB"), "+442079460018");
        ok("07700 900123", Some("GB"), "+447700900123");
        ok("030 1234567", Some("DE"), "+49301234567");
        ok("01 23 45 67 89", Some("FR"), "+33123456789");
        ok("020-555 12 34", Some("NL"), "+31205551234");
        ok("(02) 9374 4000", Some("AU"), "+61293744000");
        ok("03-1234-5678", Some("JP"), "+81312345678");
        ok("8 495 123-45-67", Some("RU"), "+74951234567");
        ok("06 1 234 5678", Some("HU"), "+3612345678");
    }

    #[test]
    fn national_without_trunk_prefix_keeps_leading_zero() {
        ok("06 1234 5678", Some("IT"), "+390612345678");
        ok("912 345 678", Some("ES"), "+34912345678");
        ok("32 12 34 56", Some("DK"), "+4532123456");
        ok("55 1234 5678", Some("MX"), "+525512345678");
    }

    #[test]
    fn national_without_trunk_digit_is_taken_as_significant_number() {
        ok("2079460018", Some("GB"), "+442079460018");
    }

    #[test]
    fn international_prefix_00_and_country_specific() {
        ok("0049 30 1234567", None, "+49301234567");
        ok("0049 30 1234567", Some("DE"), "+49301234567");
        ok("0044 20 7946 0018", Some("US"), "+442079460018");
        ok("011 44 20 7946 0018", Some("US"), "+442079460018");
        ok("0011 44 20 7946 0018", Some("AU"), "+442079460018");
        ok("010 1 415 555 1212", Some("JP"), "+14155551212");
        ok("810 49 30 1234567", Some("RU"), "+49301234567");
    }

    #[test]
    fn oh_eleven_is_national_outside_nanp() {
        // Bristol, UK: 0117 ...
        ok("0117 496 0123", Some("GB"), "+441174960123");
        none("011 44 20 7946 0018", None);
    }

    #[test]
    fn parenthesised_zero_after_country_code_is_dropped() {
        ok("+44 (0)20 7946 0018", None, "+442079460018");
        ok("+44(0)2079460018", None, "+442079460018");
        ok("0049 (0)30 1234567", None, "+49301234567");
        ok("+49 (0) 30 1234567", None, "+49301234567");
        // Nationally, (0) is just the trunk prefix.
        ok("(0)20 7946 0018", Some("GB"), "+442079460018");
    }

    #[test]
    fn sip_and_tel_uri_forms() {
        ok("+14155551212;user=phone", None, "+14155551212");
        ok("4155551212;phone-context=+1", Some("US"), "+14155551212");
        ok("tel:+1-415-555-1212", None, "+14155551212");
        ok("TEL:+1-415-555-1212;ext=12", None, "+14155551212");
        ok(
            "sip:+14155551212@carrier.example.com;user=phone",
            None,
            "+14155551212",
        );
        ok("sips:00442079460018@example.com", None, "+442079460018");
        ok("%2B14155551212", None, "+14155551212");
        ok("%2b14155551212", None, "+14155551212");
        none("sip:anonymous@anonymous.invalid", Some("US"));
    }

    #[test]
    fn withheld_caller_ids() {
        for w in [
            "anonymous",
            "Anonymous",
            "ANONYMOUS",
            "unknown",
            "Restricted",
            "private",
            "unavailable",
            "Withheld",
            " anonymous ",
        ] {
            none(w, Some("US"));
        }
    }

    #[test]
    fn not_phone_numbers() {
        for raw in [
            "",
            "   ",
            "abc",
            "+",
            "+1",
            "+-",
            "()",
            "1-800-FLOWERS",
            "+1 415 555 1212 x12",
            "+1415555121#",
            "*67 415 555 1212",
            "+1 415+555 1212",
            "415\r\n5551212",
            "\u{0661}\u{0662}\u{0663}\u{0664}\u{0665}\u{0666}\u{0667}",
            "+44 ½",
            "alice",
            "+0 123 456 789",
        ] {
            none(raw, Some("US"));
        }
    }

    #[test]
    fn digit_count_bounds() {
        ok("+123456789012345", None, "+123456789012345"); // 15 digits
        none("+1234567890123456", None); // 16 digits
        none("1234567890123456", Some("US"));
        ok("+1234567", None, "+1234567"); // 7 digits
        none("+123456", None);
        none("0049 30 12", None);
        none(&"1".repeat(100), Some("US"));
        none(&format!("+{}", "9".repeat(70)), None);
    }

    #[test]
    fn national_needs_a_known_default_country() {
        none("4155551212", None);
        none("020 7946 0018", None);
        none("4155551212", Some("XX"));
        none("4155551212", Some(""));
        none("4155551212", Some("USA"));
        ok("+14155551212", Some("XX"), "+14155551212");
        none("0", Some("GB"));
    }

    #[test]
    fn never_panics_on_odd_input() {
        let odd = [
            "(0",
            "(0)",
            "+(0)",
            "(",
            "+(",
            "00",
            "0011",
            "%2",
            "%2B",
            "tel:",
            "sip:@",
            ";",
            "@;",
            "ü(0)",
            "+ü",
            "tél:+1",
            "\u{0}",
            "(0)(0)(0)",
        ];
        for raw in odd {
            for cc in [None, Some("US"), Some("GB"), Some("AU"), Some("ü")] {
                let _ = n(raw, cc);
            }
        }
    }

    #[test]
    fn output_is_plus_and_digits_only() {
        for (raw, cc) in [
            ("+1 (415)-555-1212", None),
            ("020 7946 0018", Some("GB")),
            ("+44 (0)20 7946 0018", None),
        ] {
            let out = n(raw, cc).unwrap_or_default();
            assert!(out.starts_with('+'));
            assert!(out[1..].bytes().all(|b| b.is_ascii_digit()), "{out}");
        }
    }

    #[test]
    fn every_table_country_formats_a_national_number() {
        for c in super::COUNTRIES {
            let national = match c.trunk {
                Some(t) => format!("{t}{}", "234567890"),
                None => "2345678901".to_owned(),
            };
            let got = n(&national, Some(c.iso));
            assert!(
                got.as_deref()
                    .is_some_and(|g| g.starts_with(&format!("+{}", c.code))),
                "{} -> {got:?}",
                c.iso
            );
        }
    }
}
