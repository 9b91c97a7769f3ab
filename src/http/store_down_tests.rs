//! The sidecar when the session store fails: the webhook and the session API
//! answer 503 with a JSON error (a shared store can be down; the in-memory one
//! never is).

use super::prefetch::{voice_prefetch, NoEnrichment};
use super::sessions::get_session;
use super::HttpState;
use crate::metrics::Metrics;
use crate::session::{
    ContactDetails, PatchOutcome, Session, SessionCounts, SessionId, SessionPatch, SessionStore,
    StampOutcome, StoreError, StoreFuture,
};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use std::sync::Arc;
use std::time::SystemTime;

/// A store that cannot be reached.
struct Down;

fn down<'a, T: Send + 'a>() -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(Err(StoreError::Unavailable(
        "connection refused".into(),
    ))))
}

impl SessionStore for Down {
    fn create<'a>(&'a self, _: Session) -> StoreFuture<'a, ()> {
        down()
    }
    fn get<'a>(&'a self, _: &'a SessionId) -> StoreFuture<'a, Option<Session>> {
        down()
    }
    fn live_by_phone<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Vec<Session>> {
        down()
    }
    fn mark_answered<'a>(&'a self, _: &'a SessionId, _: SystemTime) -> StoreFuture<'a, ()> {
        down()
    }
    fn mark_ended<'a>(&'a self, _: &'a SessionId, _: SystemTime) -> StoreFuture<'a, ()> {
        down()
    }
    fn stamp_ticket<'a>(&'a self, _: &'a str, _: &'a str, _: u64) -> StoreFuture<'a, StampOutcome> {
        down()
    }
    fn attach_contact<'a>(
        &'a self,
        _: &'a SessionId,
        _: String,
        _: ContactDetails,
    ) -> StoreFuture<'a, Option<String>> {
        down()
    }
    fn patch<'a>(&'a self, _: &'a SessionId, _: SessionPatch) -> StoreFuture<'a, PatchOutcome> {
        down()
    }
    fn sweep(&self) -> StoreFuture<'_, usize> {
        down()
    }
    fn counts(&self) -> StoreFuture<'_, SessionCounts> {
        down()
    }
}

const API_KEY: &str = "api-key-0123456789abcdef";

fn state() -> HttpState {
    let text = format!(
        "[http]\napi_key = \"{API_KEY}\"\n[[http.signing_keys]]\nkid = \"k1\"\nsecret = \"0123456789abcdef0123\"\nissuer = \"test\"\n\
         [[route]]\ndefault = true\norg_id = \"org-1\"\nagent_id = \"agent-1\"\nai_agent_uri = \"sip:ai@127.0.0.1:5080\"\n"
    );
    let settings = crate::config::Config::parse(&text, "test.toml").expect("config");
    HttpState::new(
        Arc::new(settings),
        Arc::new(Down),
        Arc::new(Metrics::default()),
        Arc::new(NoEnrichment),
    )
}

async fn json_of(resp: Response) -> (StatusCode, serde_json::Value) {
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .expect("body");
    (status, serde_json::from_slice(&body).expect("JSON body"))
}

#[tokio::test]
async fn webhook_answers_503_with_a_json_error_when_the_store_fails() {
    let state = state();
    let key = state.settings().http.signing_keys[0].clone();
    let token = super::auth::mint_prefetch_token(&key, "org-1", 0, None).expect("mint");
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let body = Bytes::from_static(
        br#"{"ticket_id": 7, "caller_phone": "+14155551212", "requester_phone": ""}"#,
    );
    let resp = voice_prefetch(State(state), Ok(Path(token)), headers, Ok(body)).await;
    let (status, json) = json_of(resp).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("session store")),
        "{json}"
    );
}

#[tokio::test]
async fn session_api_answers_503_when_the_store_fails() {
    let mut headers = HeaderMap::new();
    let bearer = format!("Bearer {API_KEY}");
    headers.insert(
        "authorization",
        HeaderValue::from_str(&bearer).expect("ascii"),
    );
    let resp = get_session(State(state()), headers, Ok(Path("abc".into()))).await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => axum::response::IntoResponse::into_response(e),
    };
    let (status, json) = json_of(resp).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(json["error"].as_str().is_some(), "{json}");
}
