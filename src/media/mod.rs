//! Media anchoring (issue 3): SDP rewriting and the RTP/RTCP relay. Knows nothing of
//! SIP; the call actor asks it for ports and rewritten SDP.

pub mod relay;
pub mod sdp;
pub mod srtp;
