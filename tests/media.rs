//! Media through handoff's relay with real RTP sockets on loopback; SIP over
//! UDP here (and the main flow over TCP in `calls_tcp.rs`).

mod common;

use common::Transport;

scenario_tests! {
    Transport::Udp;
    media::rtp_flows_both_ways_intact_and_in_order,
    media::latching_follows_the_real_source_port,
    media::media_timeout_ends_the_call_with_bye,
    media::held_call_outlives_the_media_timeout,
    media::port_exhaustion_gives_503,
    media::bad_offers_are_refused_before_the_ai_leg,
    media::passthrough_mode_leaves_sdp_alone,
}
