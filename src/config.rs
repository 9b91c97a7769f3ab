//! `config.toml` as typed structs, validated at start-up. Every problem is reported as
//! one line naming the key; unknown keys are errors, not silently ignored.

use crate::sip::message::SipUri;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub mod cluster;
pub mod http_access;
mod media;
pub mod outbound;
pub use cluster::ClusterConfig;
pub use http_access::{ApiKeyConfig, HttpAccess, OrgApiKey};
pub mod registration;
pub mod trunk;
pub mod trunk_outbound;
pub use trunk::Trunk;
mod conns;
mod http;
pub mod session;
pub mod shipped;
pub mod srtp;
pub mod tls;
pub mod tls_client;
mod webhook;
pub use conns::{ConnSettings, HttpConnsConfig, HttpLimits, SipConnsConfig, SipTcpLimits};
pub use http::{HttpConfig, HttpSettings, SigningKey, SigningKeyConfig};
pub use media::{MediaConfig, MediaSettings};
pub use webhook::{RevokedToken, RevokedTokenConfig, DEFAULT_TOKEN_LIFETIME_DAYS};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// TOML syntax, unknown key, wrong type: toml names the key and line.
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: key `{key}`: {problem}")]
    Invalid {
        path: String,
        key: String,
        problem: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub sip: SipConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub session: SessionConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub zendesk: ZendeskConfig,
    #[serde(default)]
    pub media: MediaConfig,
    #[serde(default)]
    pub transfer: crate::b2bua::transfer::TransferSettings,
    #[serde(default)]
    pub store: crate::store::StoreConfig,
    #[serde(default)]
    pub webhooks: Vec<crate::events::settings::WebhookConfig>,
    #[serde(default)]
    pub events: crate::events::settings::EventsConfig,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    #[serde(default, rename = "trunk")]
    pub trunks: Vec<trunk::TrunkConfig>,
    /// `[[outbound]]`: each org's outbound calls (`config/trunk_outbound.rs`).
    #[serde(default)]
    pub outbound: Vec<trunk_outbound::OutboundConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    pub listen_udp: Vec<String>,
    pub listen_tcp: Vec<String>,
    /// SIP over TLS listeners; empty (the default): none. Needs `tls_cert`, `tls_key`.
    pub listen_tls: Vec<String>,
    /// PEM certificate chain (leaf first) and private key the TLS listeners present.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// PEM CA certificates trusted for outbound TLS besides the built-in roots.
    pub tls_ca_file: Option<String>,
    /// A TLS handshake must finish within this, or the connection is closed.
    pub tls_handshake_timeout_ms: u64,
    /// Host written in our Via and Contact instead of the listening address (NAT).
    pub advertised_host: Option<String>,
    pub max_message_size: usize,
    pub tcp_idle_timeout_secs: u64,
    pub tcp_connect_timeout_ms: u64,
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
    pub ai_answer_timeout_secs: u64,
    pub user_agent: String,
    /// DNS servers (`ip:port`) for the hosts of SIP URIs; empty: the system's.
    pub dns_servers: Vec<String>,
    /// With no `[[trunk]]`, take requests from any source even off loopback (labs only).
    pub allow_any_source: bool,
    /// `tcp_max_connections`, `tcp_max_connections_per_ip`, `tcp_message_timeout_ms`.
    #[serde(flatten)]
    pub conns: SipConnsConfig,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen_udp: vec!["127.0.0.1:5060".into()],
            listen_tcp: vec!["127.0.0.1:5060".into()],
            listen_tls: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_ca_file: None,
            tls_handshake_timeout_ms: tls::DEFAULT_HANDSHAKE_TIMEOUT_MS,
            advertised_host: None,
            max_message_size: 65536,
            tcp_idle_timeout_secs: 300,
            tcp_connect_timeout_ms: 3000,
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            ai_answer_timeout_secs: 60,
            user_agent: "handoff".into(),
            dns_servers: Vec::new(),
            allow_any_source: false,
            conns: SipConnsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_calls: usize,
    pub max_calls_per_second: u32,
    pub call_inbox_depth: usize,
    pub drain_timeout_secs: u64,
    pub retry_after_secs: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_calls: 10_000,
            max_calls_per_second: 500,
            call_inbox_depth: 64,
            drain_timeout_secs: 30,
            retry_after_secs: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Which store holds the sessions: `"memory"` or `"redis"`.
    pub store: String,
    pub capacity: usize,
    pub linger_secs: u64,
    pub default_country: Option<String>,
    /// The Redis store's keys (`src/config/session.rs`).
    pub redis_url: Option<String>,
    pub key_prefix: String,
    pub timeout_ms: u64,
    pub record_ttl_secs: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            store: "memory".into(),
            capacity: 50_000,
            linger_secs: 300,
            default_country: Some("US".into()),
            redis_url: None,
            key_prefix: session::DEFAULT_KEY_PREFIX.into(),
            timeout_ms: session::DEFAULT_TIMEOUT_MS,
            record_ttl_secs: session::DEFAULT_RECORD_TTL_SECS,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: String,
    pub format: String,
    pub redact_phone_numbers: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
            redact_phone_numbers: true,
        }
    }
}

/// `[zendesk]`: the webhook signature keys and the REST API keys of contact enrichment.
pub use crate::zendesk::settings::ZendeskConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Exact called number (Request-URI user), compared after E.164 normalisation.
    pub number: Option<String>,
    /// Prefix of the called number as it arrived; "" matches everything.
    pub prefix: Option<String>,
    #[serde(default)]
    pub default: bool,
    pub org_id: String,
    pub agent_id: String,
    pub ai_agent_uri: String,
    /// The agent's languages, for `phone_call.ended` (`language`).
    pub languages: Option<Vec<String>>,
    /// The agent's version, for `phone_call.ended` (`custom_data.agent_version`).
    pub agent_version: Option<String>,
    /// The `[[trunk]]` names this route takes calls from; none: every source.
    pub trunks: Option<Vec<String>>,
    /// SRTP on the AI agent leg, and on the caller leg of a call from no trunk.
    pub srtp: Option<String>,
    pub caller_srtp: Option<String>,
    /// Mutual TLS to the AI agent: our client certificate chain and key (PEM).
    pub tls_client_cert: Option<String>,
    pub tls_client_key: Option<String>,
}

/// The validated, ready-to-use form of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen_udp: Vec<SocketAddr>,
    pub listen_tcp: Vec<SocketAddr>,
    /// `sip.listen_tls` and the TLS files, read and checked.
    pub tls: tls::TlsSettings,
    pub advertised_host: Option<String>,
    pub max_message_size: usize,
    pub tcp_idle_timeout: Duration,
    pub tcp_connect_timeout: Duration,
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
    pub ai_answer_timeout: Duration,
    pub user_agent: String,
    /// DNS servers for resolving SIP URIs; empty: the system's configuration.
    pub dns_servers: Vec<SocketAddr>,
    pub max_calls: usize,
    pub max_calls_per_second: u32,
    pub call_inbox_depth: usize,
    pub drain_timeout: Duration,
    pub retry_after_secs: u32,
    /// `[cluster] node_id`: this node's name (default: the hostname).
    pub node_id: String,
    /// `[cluster]`: the node id again, and the liveness timings.
    pub cluster: cluster::ClusterSettings,
    /// `[session] store`.
    pub session_store: crate::session::SessionStoreKind,
    pub session_capacity: usize,
    pub session_linger: Duration,
    /// `[session]` Redis keys, with `store = "redis"`.
    pub session_redis: Option<session::RedisSettings>,
    pub default_country: Option<String>,
    pub log_level: String,
    pub log_json: bool,
    /// Log lines show only the last four digits of phone numbers.
    pub redact_phone_numbers: bool,
    pub routes: Vec<Route>,
    /// `[[trunk]]`: who may send requests outside a dialog, with their limits.
    pub trunks: Vec<Trunk>,
    /// `[sip] allow_any_source`: with no trunk, every source is taken.
    pub allow_any_source: bool,
    /// `[[outbound]]`: per org, the carrier and anti-fraud knobs of outbound calls.
    pub outbound: Vec<trunk_outbound::OrgOutbound>,
    pub http: HttpSettings,
    /// `None`: `[media] mode = "passthrough"`.
    pub media: Option<MediaSettings>,
    /// `[transfer]` compiled: allow-list, destinations, header rules.
    pub transfer: crate::b2bua::transfer::TransferPolicy,
    /// `[store] path`; None keeps the store in memory.
    pub store_path: Option<std::path::PathBuf>,
    /// `[zendesk]` API settings; None (no API credentials): no contact enrichment.
    pub zendesk: Option<crate::zendesk::ZendeskApiSettings>,
    /// `[zendesk] ticket_notes`: notes on the ticket at handoff (with API credentials).
    pub zendesk_ticket_notes: bool,
    /// `[zendesk]` and `[[zendesk.accounts]]`: each org's Zendesk account (API,
    /// webhook signing secret, account id); `zendesk` above is the default's API.
    pub zendesk_accounts: crate::zendesk::account_config::ZendeskAccountsSettings,
    /// `[[webhooks]]` and `[events]`: lifecycle-event subscribers and delivery.
    pub events: crate::events::settings::EventSettings,
    /// HTTP and SIP/TCP connection limits, as configured.
    pub conns: ConnSettings,
}

/// A secret from the configuration; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One `[[route]]`: which called numbers go to which AI agent.
#[derive(Debug, Clone)]
pub struct Route {
    pub matcher: RouteMatch,
    pub org_id: String,
    pub agent_id: String,
    pub ai_agent_uri: SipUri,
    pub agent: crate::events::payload::AgentInfo,
    /// Indices into `Settings::trunks` of the trunks it takes calls from; empty: any.
    pub trunks: Vec<usize>,
    /// `srtp` (the AI agent leg) and `caller_srtp` (the caller leg of a call from no trunk).
    pub srtp: srtp::SrtpPolicy,
    pub caller_srtp: srtp::SrtpPolicy,
    /// The client certificate presented to the AI agent (`tls_client_cert`).
    pub tls_client: Option<tls_client::ClientId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    Number(String),
    Prefix(String),
    Default,
}

impl Config {
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }

    pub fn parse(text: &str, path: &str) -> Result<Settings, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: one_line(&e, text),
        })?;
        cfg.validate(path)
    }

    fn validate(self, path: &str) -> Result<Settings, ConfigError> {
        let bad = |key: &str, problem: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            problem,
        };
        let addrs = |key: &str, list: &[String]| -> Result<Vec<SocketAddr>, ConfigError> {
            list.iter()
                .map(|a| {
                    a.parse::<SocketAddr>().map_err(|_| {
                        bad(key, format!("{a:?} is not an IP address with a port, e.g. \"127.0.0.1:5060\" or \"[::1]:5060\""))
                    })
                })
                .collect()
        };
        let sip = &self.sip;
        let listen_udp = addrs("sip.listen_udp", &sip.listen_udp)?;
        let listen_tcp = addrs("sip.listen_tcp", &sip.listen_tcp)?;
        let listen_tls = addrs("sip.listen_tls", &sip.listen_tls)?;
        let dns_servers = addrs("sip.dns_servers", &sip.dns_servers)?;
        if listen_udp.is_empty() && listen_tcp.is_empty() && listen_tls.is_empty() {
            return Err(bad(
                "sip.listen_udp",
                "no UDP, TCP or TLS listener configured".into(),
            ));
        }
        let tls = tls::validate(&tls::TlsKeys {
            listen_tls: &listen_tls,
            tls_cert: sip.tls_cert.as_deref(),
            tls_key: sip.tls_key.as_deref(),
            tls_ca_file: sip.tls_ca_file.as_deref(),
            tls_handshake_timeout_ms: sip.tls_handshake_timeout_ms,
        })
        .map_err(|(key, problem)| bad(key, problem))?;
        if let Some(h) = &sip.advertised_host {
            if h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            {
                return Err(bad(
                    "sip.advertised_host",
                    format!("{h:?} is not a host name or IP address"),
                ));
            }
        }
        if !(1024..=1 << 20).contains(&sip.max_message_size) {
            return Err(bad(
                "sip.max_message_size",
                "must be between 1024 and 1048576 bytes".into(),
            ));
        }
        if sip.t1_ms == 0 || sip.t2_ms < sip.t1_ms || sip.t4_ms == 0 {
            return Err(bad(
                "sip.t1_ms",
                "timers must be positive and t2_ms >= t1_ms".into(),
            ));
        }
        if sip.tcp_idle_timeout_secs == 0 {
            return Err(bad(
                "sip.tcp_idle_timeout_secs",
                "must be at least 1".into(),
            ));
        }
        if sip.ai_answer_timeout_secs == 0 {
            return Err(bad(
                "sip.ai_answer_timeout_secs",
                "must be at least 1".into(),
            ));
        }
        if crate::sip::message::check_value(&sip.user_agent).is_err() || sip.user_agent.len() > 200
        {
            return Err(bad(
                "sip.user_agent",
                "must be printable text under 200 bytes".into(),
            ));
        }
        let l = &self.limits;
        if l.max_calls == 0 {
            return Err(bad("limits.max_calls", "must be at least 1".into()));
        }
        if l.max_calls_per_second == 0 {
            return Err(bad(
                "limits.max_calls_per_second",
                "must be at least 1".into(),
            ));
        }
        if !(4..=4096).contains(&l.call_inbox_depth) {
            return Err(bad(
                "limits.call_inbox_depth",
                "must be between 4 and 4096".into(),
            ));
        }
        let cluster = self.validate_cluster(&bad)?;
        let s = &self.session;
        let session_store = crate::session::SessionStoreKind::parse(&s.store).ok_or_else(|| {
            bad(
                "session.store",
                format!(
                    "{:?} is not a session store; accepted: {}",
                    s.store,
                    crate::session::SessionStoreKind::NAMES.join(", ")
                ),
            )
        })?;
        let session_redis = session::validate(
            session_store == crate::session::SessionStoreKind::Redis,
            &session::RedisKeys {
                redis_url: s.redis_url.as_deref(),
                key_prefix: &s.key_prefix,
                timeout_ms: s.timeout_ms,
                record_ttl_secs: s.record_ttl_secs,
            },
            &bad,
        )?;
        if s.capacity < l.max_calls {
            return Err(bad(
                "session.capacity",
                format!("must be at least limits.max_calls ({})", l.max_calls),
            ));
        }
        if let Some(c) = &s.default_country {
            if crate::e164::normalize_e164("2025550123", Some(c)).is_none() {
                return Err(bad(
                    "session.default_country",
                    format!("{c:?} is not a known ISO 3166-1 alpha-2 country code"),
                ));
            }
        }
        let level = self.log.level.to_ascii_lowercase();
        if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
            return Err(bad(
                "log.level",
                format!(
                    "{:?} is not one of error, warn, info, debug, trace",
                    self.log.level
                ),
            ));
        }
        let log_json = match self.log.format.as_str() {
            "text" => false,
            "json" => true,
            other => {
                return Err(bad(
                    "log.format",
                    format!("{other:?} is not \"text\" or \"json\""),
                ))
            }
        };
        if self.routes.is_empty() {
            return Err(bad(
                "route",
                "no [[route]] configured: at least one route with an ai_agent_uri is needed".into(),
            ));
        }
        let mut trunks = trunk::compile(&self.trunks).map_err(|e| bad(&e.key, e.problem))?;
        let mut tls = tls;
        tls_client::register_trunks(&mut tls.identities, &self.trunks, &mut trunks)
            .map_err(|(k, p)| bad(&k, p))?;
        for (i, t) in trunks.iter().enumerate() {
            let Some(ca) = &t.tls_client_ca else { continue };
            let key = format!("trunk[{i}].tls_client_ca");
            let server = tls
                .server
                .as_mut()
                .ok_or_else(|| bad(&key, "mutual TLS needs sip.listen_tls".into()))?;
            server
                .add_client_auth(t.sources.clone(), ca)
                .map_err(|e| bad(&key, e.to_string()))?;
        }
        let every_listener: Vec<SocketAddr> = listen_udp
            .iter()
            .chain(&listen_tcp)
            .chain(&listen_tls)
            .copied()
            .collect();
        trunk::check_exposure(&trunks, sip.allow_any_source, &every_listener)
            .map_err(|e| bad(&e.key, e.problem))?;
        let mut routes = Vec::new();
        let mut defaults = 0;
        for (i, r) in self.routes.iter().enumerate() {
            let key = |k: &str| format!("route[{i}].{k}");
            let uri = SipUri::parse(&r.ai_agent_uri)
                .filter(|u| u.scheme == "sip" || u.scheme == "sips")
                .ok_or_else(|| {
                    bad(
                        &key("ai_agent_uri"),
                        format!("{:?} is not a sip: or sips: URI", r.ai_agent_uri),
                    )
                })?;
            if let Some(t) = uri.transport() {
                use crate::sip::transport::Transport;
                let t = Transport::from_name(&t).ok_or_else(|| {
                    bad(
                        &key("ai_agent_uri"),
                        format!("transport {t:?} is not udp, tcp or tls"),
                    )
                })?;
                if uri.scheme == "sips" && t == Transport::Udp {
                    return Err(bad(
                        &key("ai_agent_uri"),
                        "a sips: URI cannot go over udp".into(),
                    ));
                }
            }
            for (k, v) in [("org_id", &r.org_id), ("agent_id", &r.agent_id)] {
                if v.is_empty()
                    || v.len() > 128
                    || !v.bytes().all(crate::sip::message::is_token_char)
                {
                    return Err(bad(
                        &key(k),
                        format!(
                            "{v:?} must be 1-128 token characters (letters, digits, -._!%*+`'~)"
                        ),
                    ));
                }
            }
            let matcher = match (&r.number, &r.prefix, r.default) {
                (Some(n), None, false) => RouteMatch::Number(
                    crate::e164::normalize_e164(n, s.default_country.as_deref())
                        .unwrap_or_else(|| n.clone()),
                ),
                (None, Some(p), false) => RouteMatch::Prefix(p.clone()),
                (None, None, true) => {
                    defaults += 1;
                    RouteMatch::Default
                }
                _ => {
                    return Err(bad(
                        &key("number"),
                        "give exactly one of number, prefix or default = true".into(),
                    ))
                }
            };
            let agent = crate::events::settings::route_agent_info(r, i)
                .map_err(|e| bad(&e.key, e.problem))?;
            let route_trunks = trunk::route_trunks(r.trunks.as_deref(), &trunks, i)
                .map_err(|e| bad(&e.key, e.problem))?;
            let policy = |k: &str, v: &Option<String>| {
                srtp::parse(v.as_deref()).map_err(|e| bad(&key(k), e))
            };
            let tls_client = tls_client::register(
                &mut tls.identities,
                &tls_client::route_identity(i),
                &tls_client::ClientPairKeys {
                    prefix: &format!("route[{i}]"),
                    cert: r.tls_client_cert.as_deref(),
                    key: r.tls_client_key.as_deref(),
                    tls: tls_client::is_tls_uri(&uri),
                },
            )
            .map_err(|(k, p)| bad(&k, p))?;
            routes.push(Route {
                srtp: policy("srtp", &r.srtp)?,
                caller_srtp: policy("caller_srtp", &r.caller_srtp)?,
                tls_client,
                trunks: route_trunks,
                matcher,
                org_id: r.org_id.clone(),
                agent_id: r.agent_id.clone(),
                ai_agent_uri: uri,
                agent,
            });
        }
        if defaults > 1 {
            return Err(bad(
                "route",
                "more than one route has default = true".into(),
            ));
        }
        let outbound = trunk_outbound::compile_orgs(&self.outbound, &mut trunks, &routes)
            .map_err(|e| bad(&e.key, e.problem))?;
        let http = self.validate_http(&bad)?;
        let media = self.validate_media(&bad)?;
        srtp::check_relay(media.is_some(), &srtp::keys(&self))
            .map_err(|(key, problem)| bad(&key, problem))?;
        let conns = conns::validate(&self.http.conns, &self.sip.conns, &bad)?;
        let transfer = self
            .transfer
            .compile()
            .map_err(|e| bad(&e.key, e.problem))?;
        tls_client::register_destinations(&mut tls.identities, &self.transfer.destination)
            .map_err(|(k, p)| bad(&k, p))?;
        let store_path = self
            .store
            .compile()
            .map_err(|(key, problem)| bad(&key, problem))?;
        let zendesk = self
            .zendesk
            .compile_api()
            .map_err(|e| bad(&e.key, e.problem))?;
        let events = self
            .events
            .compile(&self.webhooks)
            .map_err(|e| bad(&e.key, e.problem))?;
        outbound::require_https(self.http.require_https_outbound, zendesk.as_ref(), &events)
            .map_err(|(key, problem)| bad(&key, problem))?;
        let zendesk_accounts =
            crate::zendesk::account_config::compile_accounts(&self.zendesk, zendesk.clone())
                .map_err(|e| bad(&e.key, e.problem))?;
        webhook::check_exposed_accounts(
            http.listen,
            &zendesk_accounts,
            self.zendesk.allow_unsigned_webhooks,
            &bad,
        )?;
        outbound::require_https_accounts(self.http.require_https_outbound, &zendesk_accounts)
            .map_err(|(key, problem)| bad(&key, problem))?;
        Ok(Settings {
            conns,
            zendesk,
            zendesk_ticket_notes: self.zendesk.ticket_notes,
            zendesk_accounts,
            events,
            store_path,
            http,
            media,
            transfer,
            listen_udp,
            listen_tcp,
            tls,
            advertised_host: sip.advertised_host.clone(),
            max_message_size: sip.max_message_size,
            tcp_idle_timeout: Duration::from_secs(sip.tcp_idle_timeout_secs),
            tcp_connect_timeout: Duration::from_millis(sip.tcp_connect_timeout_ms.max(1)),
            t1: Duration::from_millis(sip.t1_ms),
            t2: Duration::from_millis(sip.t2_ms),
            t4: Duration::from_millis(sip.t4_ms),
            ai_answer_timeout: Duration::from_secs(sip.ai_answer_timeout_secs),
            user_agent: sip.user_agent.clone(),
            dns_servers,
            max_calls: l.max_calls,
            max_calls_per_second: l.max_calls_per_second,
            call_inbox_depth: l.call_inbox_depth,
            drain_timeout: Duration::from_secs(l.drain_timeout_secs),
            retry_after_secs: l.retry_after_secs,
            node_id: cluster.node_id.clone(),
            cluster,
            session_store,
            session_capacity: s.capacity,
            session_linger: Duration::from_secs(s.linger_secs),
            session_redis,
            default_country: s.default_country.clone(),
            log_level: level,
            log_json,
            redact_phone_numbers: self.log.redact_phone_numbers,
            routes,
            trunks,
            outbound,
            allow_any_source: sip.allow_any_source,
        })
    }
}

/// toml's messages span several lines with a source excerpt; keep the first line and
/// the key it names.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            // A flattened table's error spans the table: find the key's own line.
            let line = conns::line_of_key(text, span.clone(), &msg).unwrap_or(line);
            let key = text
                .get(span.clone())
                .filter(|k| k.len() < 80 && !k.contains('\n'))
                .map(|k| format!(" `{}`", k.trim()))
                .unwrap_or_default();
            format!("line {line}{key}: {msg}")
        }
        None => msg,
    }
}

impl Settings {
    /// The route for a called number: exact number, then the longest prefix, then the
    /// default. `None` means 404.
    pub fn route_for(&self, called_user: &str, called_e164: Option<&str>) -> Option<&Route> {
        if let Some(e164) = called_e164 {
            if let Some(r) = self
                .routes
                .iter()
                .find(|r| r.matcher == RouteMatch::Number(e164.to_owned()))
            {
                return Some(r);
            }
        }
        if let Some(r) = self
            .routes
            .iter()
            .find(|r| r.matcher == RouteMatch::Number(called_user.to_owned()))
        {
            return Some(r);
        }
        let by_prefix = self
            .routes
            .iter()
            .filter_map(|r| match &r.matcher {
                RouteMatch::Prefix(p)
                    if called_user.starts_with(p.as_str())
                        || called_e164.is_some_and(|e| e.starts_with(p.as_str())) =>
                {
                    Some((p.len(), r))
                }
                _ => None,
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, r)| r);
        by_prefix.or_else(|| {
            self.routes
                .iter()
                .find(|r| r.matcher == RouteMatch::Default)
        })
    }
}

#[cfg(test)]
mod tests;
