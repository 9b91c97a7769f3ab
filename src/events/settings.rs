//! `[[webhooks]]` (the subscribers) and `[events]` (delivery and outbox tuning) as
//! written in `config.toml`, and their validated form.

use super::payload::EventType;
use crate::config::Secret;
use serde::Deserialize;
use std::time::Duration;

/// One `[[webhooks]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: String,
    /// Event types sent to this subscriber; none: all of them.
    pub events: Option<Vec<String>>,
}

/// `[events]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    pub max_age_secs: u64,
    pub outbox_capacity: usize,
    pub queue_capacity: usize,
    pub request_timeout_ms: u64,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub retry_after_max_secs: u64,
    pub max_in_flight: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            max_age_secs: 86_400,
            outbox_capacity: 100_000,
            queue_capacity: 65_536,
            request_timeout_ms: 10_000,
            retry_base_ms: 500,
            retry_max_ms: 60_000,
            retry_after_max_secs: 600,
            max_in_flight: 64,
        }
    }
}

/// A subscriber, validated.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub url: reqwest::Url,
    pub secret: Secret,
    /// None: every type.
    pub events: Option<Vec<EventType>>,
}

impl Subscriber {
    pub fn wants(&self, t: EventType) -> bool {
        self.events.as_ref().is_none_or(|list| list.contains(&t))
    }
}

/// `[[webhooks]]` and `[events]` together, validated.
#[derive(Debug, Clone)]
pub struct EventSettings {
    pub subscribers: Vec<Subscriber>,
    pub max_age: Duration,
    pub outbox_capacity: usize,
    pub queue_capacity: usize,
    pub request_timeout: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub retry_after_max: Duration,
    pub max_in_flight: usize,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventsConfig::default()
            .compile(&[])
            .expect("the defaults are valid")
    }
}

/// A key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct SettingsError {
    pub key: String,
    pub problem: String,
}

fn bad(key: impl Into<String>, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        key: key.into(),
        problem: problem.into(),
    }
}

impl EventsConfig {
    pub fn compile(&self, webhooks: &[WebhookConfig]) -> Result<EventSettings, SettingsError> {
        let range = |key: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(v)
            } else {
                Err(bad(
                    format!("events.{key}"),
                    format!("must be between {lo} and {hi}"),
                ))
            }
        };
        range("max_age_secs", self.max_age_secs, 1, 30 * 86_400)?;
        range(
            "outbox_capacity",
            self.outbox_capacity as u64,
            100,
            10_000_000,
        )?;
        range("queue_capacity", self.queue_capacity as u64, 16, 10_000_000)?;
        range("request_timeout_ms", self.request_timeout_ms, 10, 300_000)?;
        range("retry_base_ms", self.retry_base_ms, 1, 3_600_000)?;
        range("retry_max_ms", self.retry_max_ms, 1, 86_400_000)?;
        if self.retry_max_ms < self.retry_base_ms {
            return Err(bad("events.retry_max_ms", "must be at least retry_base_ms"));
        }
        range("retry_after_max_secs", self.retry_after_max_secs, 0, 86_400)?;
        range("max_in_flight", self.max_in_flight as u64, 1, 4096)?;
        let mut subscribers: Vec<Subscriber> = Vec::new();
        for (i, w) in webhooks.iter().enumerate() {
            let key = |k: &str| format!("webhooks[{i}].{k}");
            let url = reqwest::Url::parse(&w.url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| {
                    bad(
                        key("url"),
                        format!("{:?} is not an http:// or https:// URL", w.url),
                    )
                })?;
            if subscribers.iter().any(|s| s.url == url) {
                return Err(bad(key("url"), format!("{:?} is configured twice", w.url)));
            }
            let printable = w.secret.bytes().all(|b| b.is_ascii_graphic());
            if w.secret.len() < 16 || w.secret.len() > 1024 || !printable {
                return Err(bad(
                    key("secret"),
                    "must be 16 to 1024 printable characters without spaces",
                ));
            }
            let events = match &w.events {
                None => None,
                Some(list) => {
                    let mut types = Vec::new();
                    for name in list {
                        let t = EventType::parse(name).ok_or_else(|| {
                            let known: Vec<&str> =
                                EventType::ALL.iter().map(|t| t.as_str()).collect();
                            bad(
                                key("events"),
                                format!("{name:?} is not one of {}", known.join(", ")),
                            )
                        })?;
                        types.push(t);
                    }
                    if types.is_empty() {
                        return Err(bad(
                            key("events"),
                            "is empty: leave the key out to send every type",
                        ));
                    }
                    Some(types)
                }
            };
            subscribers.push(Subscriber {
                url,
                secret: Secret::new(w.secret.clone()),
                events,
            });
        }
        Ok(EventSettings {
            subscribers,
            max_age: Duration::from_secs(self.max_age_secs),
            outbox_capacity: self.outbox_capacity,
            queue_capacity: self.queue_capacity,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            retry_base: Duration::from_millis(self.retry_base_ms),
            retry_max: Duration::from_millis(self.retry_max_ms),
            retry_after_max: Duration::from_secs(self.retry_after_max_secs),
            max_in_flight: self.max_in_flight,
        })
    }
}

/// `[[route]] languages` and `agent_version`, checked (`route[i].languages`).
pub fn route_agent_info(
    r: &crate::config::RouteConfig,
    i: usize,
) -> Result<super::payload::AgentInfo, SettingsError> {
    if let Some(langs) = &r.languages {
        for l in langs {
            let ok = (1..=35).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok {
                return Err(bad(
                    format!("route[{i}].languages"),
                    format!("{l:?} is not a language tag such as \"en\" or \"es-MX\""),
                ));
            }
        }
    }
    if let Some(v) = &r.agent_version {
        if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
            return Err(bad(
                format!("route[{i}].agent_version"),
                "must be 1-128 characters without control characters",
            ));
        }
    }
    Ok(super::payload::AgentInfo {
        languages: r.languages.clone(),
        agent_version: r.agent_version.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str, secret: &str, events: Option<&[&str]>) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            secret: secret.into(),
            events: events.map(|e| e.iter().map(|s| s.to_string()).collect()),
        }
    }

    const SECRET: &str = "0123456789abcdef";

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let s = EventSettings::default();
        assert_eq!(s.max_age, Duration::from_secs(86_400));
        assert_eq!(s.outbox_capacity, 100_000);
        assert!(s.subscribers.is_empty());
    }

    #[test]
    fn subscribers_are_validated_with_the_key_named() {
        let c = EventsConfig::default();
        let err = |hooks: &[WebhookConfig]| c.compile(hooks).unwrap_err().key;
        assert_eq!(err(&[hook("ftp://x", SECRET, None)]), "webhooks[0].url");
        assert_eq!(err(&[hook("not a url", SECRET, None)]), "webhooks[0].url");
        assert_eq!(
            err(&[
                hook("http://a.example/h", SECRET, None),
                hook("http://a.example/h", SECRET, None)
            ]),
            "webhooks[1].url"
        );
        assert_eq!(
            err(&[hook("http://a/h", "short", None)]),
            "webhooks[0].secret"
        );
        assert_eq!(
            err(&[hook("http://a/h", SECRET, Some(&["phone_call.bogus"]))]),
            "webhooks[0].events"
        );
        assert_eq!(
            err(&[hook("http://a/h", SECRET, Some(&[]))]),
            "webhooks[0].events"
        );
        let ok = c
            .compile(&[hook(
                "https://a.example/h",
                SECRET,
                Some(&["phone_call.ended"]),
            )])
            .unwrap();
        assert!(ok.subscribers[0].wants(EventType::PhoneCallEnded));
        assert!(!ok.subscribers[0].wants(EventType::PhoneCallStarted));
    }

    #[test]
    fn numbers_are_range_checked() {
        let c = EventsConfig {
            retry_base_ms: 1000,
            retry_max_ms: 10,
            ..Default::default()
        };
        assert_eq!(c.compile(&[]).unwrap_err().key, "events.retry_max_ms");
        let c = EventsConfig {
            outbox_capacity: 1,
            ..Default::default()
        };
        assert_eq!(c.compile(&[]).unwrap_err().key, "events.outbox_capacity");
        let c = EventsConfig {
            max_age_secs: 0,
            ..Default::default()
        };
        assert_eq!(c.compile(&[]).unwrap_err().key, "events.max_age_secs");
    }
}
