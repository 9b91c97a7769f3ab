//! Transfers through handoff: the AI agent's REFER hands the caller to a
//! "Zendesk" test UA. Every flow over UDP and over TCP.

mod common;

mod udp {
    use super::common;
    use common::Transport;

    crate::scenario_tests! {
        Transport::Udp;
        transfer::transfer_to_sip_uri_without_ticket,
        transfer::ticket_stamped_by_webhook_goes_on_the_transfer_invite,
        transfer::tel_target_never_carries_ticket_headers,
        transfer::anonymous_caller_gets_the_fallback_from,
        transfer::busy_target_leaves_the_caller_with_the_ai_agent,
        transfer::ringing_target_times_out,
        transfer::caller_hangup_mid_transfer_cancels_the_target,
        transfer::target_not_allowed_gets_403_and_nothing_is_dialled,
        transfer::crlf_in_ticket_or_contact_never_reaches_the_invite,
        transfer::second_refer_gets_491_and_refer_sub_false_is_honoured,
        transfer::ai_hangup_during_transfer_lets_it_complete,
        transfer::redirect_is_followed_to_an_allowed_target,
        transfer::digest_challenge_is_answered_with_the_destination_credentials,
        transfer::unanswerable_challenge_and_unfollowable_redirect_clear_the_transfer,
    }
}

mod tcp {
    use super::common;
    use common::Transport;

    crate::scenario_tests! {
        Transport::Tcp;
        transfer::transfer_to_sip_uri_without_ticket,
        transfer::ticket_stamped_by_webhook_goes_on_the_transfer_invite,
        transfer::tel_target_never_carries_ticket_headers,
        transfer::anonymous_caller_gets_the_fallback_from,
        transfer::busy_target_leaves_the_caller_with_the_ai_agent,
        transfer::ringing_target_times_out,
        transfer::caller_hangup_mid_transfer_cancels_the_target,
        transfer::target_not_allowed_gets_403_and_nothing_is_dialled,
        transfer::crlf_in_ticket_or_contact_never_reaches_the_invite,
        transfer::second_refer_gets_491_and_refer_sub_false_is_honoured,
        transfer::ai_hangup_during_transfer_lets_it_complete,
        transfer::redirect_is_followed_to_an_allowed_target,
        transfer::digest_challenge_is_answered_with_the_destination_credentials,
        transfer::unanswerable_challenge_and_unfollowable_redirect_clear_the_transfer,
    }
}
