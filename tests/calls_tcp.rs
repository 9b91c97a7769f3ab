//! Calls through handoff with the carrier connecting to handoff's TCP listener and
//! handoff connecting to a TCP AI agent: the shared scenarios of `common::scenarios`,
//! plus what only a stream transport has.

mod common;

use common::Transport;

scenario_tests! {
    Transport::Tcp;
    calls::basic_call_with_bye_from_caller,
    calls::basic_call_with_bye_from_ai_agent,
    calls::cancel_before_answer_gets_487_and_cancels_ai_leg,
    calls::cancel_before_ai_provisional_is_sent_after_first_1xx,
    calls::ai_agent_busy_486_reaches_caller_and_is_acked,
    calls::ai_agent_decline_603_reaches_caller_and_is_acked,
    calls::ai_agent_failures_map_to_caller_statuses,
    calls::ai_agent_no_answer_gives_480_and_cancels_ai_leg,
    calls::silent_ai_agent_gives_480,
    calls::unreachable_ai_agent_gives_503,
    mid_call::caller_hold_reinvite_is_relayed_with_sdp_and_answer,
    mid_call::ai_agent_reinvite_is_relayed_to_caller,
    mid_call::info_is_relayed_both_ways,
    mid_call::update_is_relayed_with_answer,
    mid_call::late_offer_ack_sdp_is_carried_to_ai_agent,
    calls::ai_answer_crossing_cancel_is_acked_and_hung_up,
    calls::quiet_call_outlives_tcp_idle_timeout,
    mid_call::reinvite_while_one_is_pending_gets_491,
    mid_call::unacked_200_is_sent_once_over_tcp,
    requests::options_gets_200_with_allow_and_supported,
    requests::unknown_method_gets_501,
    requests::register_gets_405_with_allow,
    requests::bye_for_unknown_call_gets_481,
    requests::invite_with_max_forwards_zero_gets_483,
    requests::invite_requiring_100rel_gets_420_with_unsupported,
    requests::unroutable_number_gets_404,
    requests::retransmitted_invite_is_absorbed,
    requests::spoofed_opencx_headers_are_stripped_and_other_x_headers_pass,
    requests::malformed_requests_get_400_and_next_call_succeeds,
    requests::request_with_bad_sip_version_gets_505,
    requests::garbage_tcp_connection_is_closed_while_another_carries_a_call,
    limits::second_call_over_max_calls_gets_503_and_first_continues,
    limits::burst_over_calls_per_second_gets_some_503s,
    limits::drain_refuses_new_calls_and_byes_live_call,
    media::rtp_flows_both_ways_intact_and_in_order,
    media::port_exhaustion_gives_503,
}
