//! What of a caller's number a log line may show (`log.redact_phone_numbers`):
//! by default every digit but the last four is masked, so an operator can
//! still tell calls apart without logs holding the full numbers.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

// One process, one logging policy: set once at start, read by every log line.
static REDACT: AtomicBool = AtomicBool::new(true);

/// Set the policy (at start, from the config).
pub fn set_phone_redaction(on: bool) {
    REDACT.store(on, Ordering::Relaxed);
}

/// A phone number as a log line shows it: masked unless redaction is off;
/// no number (empty) shows as `anonymous`.
/// `tracing::info!(caller = %Phone(&n), ...)`.
pub struct Phone<'a>(pub &'a str);

impl fmt::Display for Phone<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("anonymous")
        } else if REDACT.load(Ordering::Relaxed) {
            f.write_str(&mask_phone(self.0))
        } else {
            f.write_str(&printable(self.0))
        }
    }
}

/// Every digit but the last four becomes `*`; anything that is not a digit or
/// `+` becomes `?` (a log line never carries what the number's source sent).
pub fn mask_phone(number: &str) -> String {
    let digits = number.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    number
        .chars()
        .take(MAX_CHARS)
        .map(|c| match c {
            '0'..='9' => {
                seen += 1;
                if digits - seen < 4 {
                    c
                } else {
                    '*'
                }
            }
            '+' => '+',
            _ => '?',
        })
        .collect()
}

// Numbers are short (E.164: 15 digits); a log line takes no more than this.
const MAX_CHARS: usize = 32;

fn printable(number: &str) -> String {
    number
        .chars()
        .take(MAX_CHARS)
        .map(|c| {
            if c.is_ascii_digit() || c == '+' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_but_the_last_four_digits_are_masked() {
        assert_eq!(mask_phone("+14155550123"), "+*******0123");
        assert_eq!(mask_phone("+442071838750"), "+********8750");
        assert_eq!(mask_phone("1234"), "1234");
        assert_eq!(mask_phone("123"), "123");
        assert_eq!(mask_phone(""), "");
    }

    #[test]
    fn what_is_not_a_number_never_reaches_the_line() {
        assert_eq!(mask_phone("+1415\r\n5550123"), "+****??***0123");
        assert_eq!(printable("+1\u{1b}[31m"), "+1??31?");
        let long = "1".repeat(200);
        assert_eq!(mask_phone(&long).len(), MAX_CHARS);
    }

    #[test]
    fn no_number_is_anonymous() {
        assert_eq!(Phone("").to_string(), "anonymous");
    }
}
