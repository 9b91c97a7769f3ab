//! NOTIFY pieces (RFC 3515, 4488, 6665).

use crate::b2bua::transfer::notify::*;

#[test]
fn sipfrag_is_a_full_status_line_ending_in_crlf() {
    assert_eq!(sipfrag(100, "Trying"), "SIP/2.0 100 Trying\r\n");
    assert_eq!(sipfrag(200, "OK"), "SIP/2.0 200 OK\r\n");
    assert_eq!(sipfrag(486, "Busy Here"), "SIP/2.0 486 Busy Here\r\n");
}

#[test]
fn sipfrag_empty_reason_gets_the_default_phrase() {
    assert_eq!(sipfrag(200, ""), "SIP/2.0 200 OK\r\n");
    assert_eq!(sipfrag(486, "  "), "SIP/2.0 486 Busy Here\r\n");
    assert_eq!(sipfrag(599, ""), "SIP/2.0 599 Unknown\r\n");
}

#[test]
fn sipfrag_reason_is_sanitised() {
    assert_eq!(
        sipfrag(503, "Down\r\nContent-Length: 0\r\n\r\nSIP/2.0 200 OK"),
        "SIP/2.0 503 DownContent-Length: 0SIP/2.0 200 OK\r\n"
    );
    let long = sipfrag(480, &"x".repeat(500));
    assert_eq!(long.len(), "SIP/2.0 480 \r\n".len() + 128);
    assert_eq!(long.matches("\r\n").count(), 1);
}

#[test]
fn sipfrag_out_of_range_status_is_500() {
    assert_eq!(sipfrag(0, ""), "SIP/2.0 500 Server Internal Error\r\n");
    assert_eq!(sipfrag(700, "x"), "SIP/2.0 500 x\r\n");
}

#[test]
fn event_and_subscription_state_values() {
    assert_eq!(event_value(101), "refer;id=101");
    assert_eq!(subscription_active(60), "active;expires=60");
    assert_eq!(SUBSCRIPTION_TERMINATED, "terminated;reason=noresource");
    assert_eq!(SIPFRAG_CONTENT_TYPE, "message/sipfrag;version=2.0");
}

#[test]
fn refer_sub_false_disables_the_subscription() {
    assert!(refer_sub_disabled(Some("false")));
    assert!(refer_sub_disabled(Some(" FALSE ")));
    assert!(refer_sub_disabled(Some("false;x=1")));
    assert!(!refer_sub_disabled(Some("true")));
    assert!(!refer_sub_disabled(Some("")));
    assert!(!refer_sub_disabled(Some("falsey")));
    assert!(!refer_sub_disabled(None));
}
