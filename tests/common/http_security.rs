//! Parts of the HTTP security tests (`tests/security_api.rs`): a server that
//! answers every request with a redirect (and counts what it got), sessions put
//! straight into a running handoff's store, an HS256 token forger, and a small
//! JSON client for the sidecar.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use handoff::server::Server;
use handoff::session::{Session, SessionId};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One request the redirector answered.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Bytes,
}

/// A loopback HTTP server answering every request `status` with `Location:
/// location`.
pub struct Redirector {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Redirector {
    pub async fn start(status: u16, location: &str) -> Redirector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind redirector");
        let addr = listener.local_addr().expect("local addr");
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (h, location) = (hits.clone(), location.to_owned());
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let (h, location) = (h.clone(), location.clone());
                async move {
                    h.lock().unwrap_or_else(|p| p.into_inner()).push(Hit {
                        path: uri.path().to_owned(),
                        authorization: headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned),
                        body,
                    });
                    let code = StatusCode::from_u16(status).expect("a status");
                    let r: Response = (code, [("location", location)]).into_response();
                    r
                }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Redirector { addr, hits, task }
    }

    /// `http://<addr>` with no trailing slash.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Redirector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A token with any header and claims, signed HS256 with `secret`.
pub fn forged(header: Value, claims: Value, secret: &str) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("hmac");
    mac.update(format!("{h}.{c}").as_bytes());
    format!(
        "{h}.{c}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// A live session of `org` with caller `phone`, put straight into the server's
/// session store (the session API reads it as it reads a call's).
pub async fn live_session(server: &Server, org: &str, phone: &str) -> String {
    let id = SessionId::new_random();
    let s = Session::new(
        id.clone(),
        org.to_owned(),
        format!("agent-{org}"),
        Some(phone.to_owned()),
        None,
        "+18005550100".to_owned(),
    );
    server
        .session_store()
        .create(s)
        .await
        .expect("session stored");
    id.as_str().to_owned()
}

/// A JSON client for one server's sidecar.
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(server: &Server) -> Api {
        Api {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client"),
            base: format!("http://{}", server.http_addr()),
        }
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, v)
    }

    pub async fn get(&self, path: &str, bearer: &str) -> (u16, Value) {
        self.json(
            self.client
                .get(format!("{}{path}", self.base))
                .bearer_auth(bearer),
        )
        .await
    }

    pub async fn patch(&self, path: &str, bearer: &str, body: &str) -> (u16, Value) {
        self.json(
            self.client
                .patch(format!("{}{path}", self.base))
                .bearer_auth(bearer)
                .header("content-type", "application/json")
                .body(body.to_owned()),
        )
        .await
    }

    /// A metric's value from `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        metric_value(&text, name)
    }
}

/// A metric's value in Prometheus text (0 when absent).
pub fn metric_value(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}
