//! A webhook subscriber on loopback for the lifecycle-event tests: an axum server
//! on a random port that records every request (headers, body, when, and what it
//! answered) and answers as scripted: a queue of replies taken one per request,
//! then a default (200 unless set otherwise).

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the capture server answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Status(u16),
    /// 429 (or any status) with `Retry-After: secs`.
    RetryAfter(u16, u64),
    /// Never answer (the client times out).
    Hang,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Captured {
    pub at: Instant,
    /// Lowercase names; the last value of each.
    pub headers: HashMap<String, String>,
    pub body: Bytes,
    /// What the server answered (0 for a hang).
    pub answered: u16,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    pub fn delivered(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    default: Option<Reply>,
    seen: Vec<Captured>,
}

pub struct Capture {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Capture {
    /// Listen on a random loopback port, answering 200.
    pub async fn start() -> Capture {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> Capture {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind capture");
        let addr = listener.local_addr().expect("local addr");
        let s = state.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move { handle(s, headers, body).await }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Capture { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Replies for the next requests, in order.
    pub fn script(&self, replies: &[Reply]) {
        self.lock().script.extend(replies.iter().copied());
    }

    /// The reply once the script is used up.
    pub fn set_default(&self, r: Reply) {
        self.lock().default = Some(r);
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.lock().seen.clone()
    }

    /// Requests answered 2xx, in arrival order.
    pub fn delivered(&self) -> Vec<Captured> {
        self.requests()
            .into_iter()
            .filter(|c| c.delivered())
            .collect()
    }

    /// Poll until `cond` holds for what was received, or panic after `within`.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        cond: impl Fn(&[Captured]) -> bool,
    ) -> Vec<Captured> {
        let until = Instant::now() + within;
        loop {
            let seen = self.requests();
            if cond(&seen) {
                return seen;
            }
            if Instant::now() >= until {
                let types: Vec<String> = seen
                    .iter()
                    .map(|c| format!("{} {}", c.answered, c.json()["type"]))
                    .collect();
                panic!("capture: {what} not seen within {within:?}; got {types:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The events delivered (2xx), once as many as `types` have come (or `within`
    /// has passed) and `settle` more has passed; panics unless their `type`s are
    /// exactly `types`, in order. `types` empty: nothing was delivered.
    pub async fn exactly(
        &self,
        types: &[&str],
        within: Duration,
        settle: Duration,
    ) -> Vec<serde_json::Value> {
        let until = Instant::now() + within;
        while self.delivered().len() < types.len() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(settle).await;
        let got: Vec<serde_json::Value> = self.delivered().iter().map(Captured::json).collect();
        let got_types: Vec<&str> = got
            .iter()
            .map(|v| v["type"].as_str().unwrap_or("<no type>"))
            .collect();
        assert_eq!(got_types, types, "exactly these events delivered: {got:?}");
        got
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(state: Arc<Mutex<State>>, headers: HeaderMap, body: Bytes) -> Response {
    let reply = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        let r = s
            .script
            .pop_front()
            .or(s.default)
            .unwrap_or(Reply::Status(200));
        let answered = match r {
            Reply::Status(c) | Reply::RetryAfter(c, _) => c,
            Reply::Hang => 0,
        };
        s.seen.push(Captured {
            at: Instant::now(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        v.to_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
            body,
            answered,
        });
        r
    };
    let code = |c: u16| StatusCode::from_u16(c).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match reply {
        Reply::Status(c) => code(c).into_response(),
        Reply::RetryAfter(c, secs) => {
            (code(c), [("retry-after", secs.to_string())]).into_response()
        }
        Reply::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
    }
}
