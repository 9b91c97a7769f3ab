//! handoff: a SIP back-to-back user agent that puts an AI phone agent in front of a
//! Zendesk Talk support line and hands calls over with their context attached.

pub mod b2bua;
pub mod cluster;
pub mod config;
pub mod e164;
pub mod events;
pub mod http;
pub mod log_limit;
pub mod media;
pub mod metrics;
pub mod net;
pub mod outbound_http;
pub mod redact;
pub mod server;
pub mod session;
pub mod sip;
pub mod store;
pub mod zendesk;
