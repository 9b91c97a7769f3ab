//! A fake Zendesk REST API on loopback (axum, random port) for the contact
//! enrichment tests: the ticket, user and organization shapes Zendesk documents,
//! scriptable per path (status sequences, `Retry-After`, `text/plain` bodies,
//! delays), a client-credentials token endpoint that counts its exchanges, and a
//! check of every request's `Authorization` header. Ticket comments (the note at
//! handoff): `PUT /api/v2/tickets/{id}.json` with a comment adds it to the ticket
//! (scripted as `PUT <path>`; a reply `applied()` adds it although its status says
//! otherwise: a lost answer), `GET .../comments.json` lists them newest first.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const EMAIL: &str = "agent@example.com";
pub const API_TOKEN: &str = "fake-api-token-123";
pub const CLIENT_ID: &str = "handoff-test-client";
pub const CLIENT_SECRET: &str = "fake-client-secret-456";

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub content_type: &'static str,
    pub retry_after: Option<String>,
    pub delay: Duration,
    /// A write is carried out whatever this answer says (the answer was lost).
    pub applied: bool,
}

impl Reply {
    pub fn json(status: u16, v: Value) -> Reply {
        Reply {
            status,
            body: v.to_string(),
            content_type: "application/json; charset=utf-8",
            retry_after: None,
            delay: Duration::ZERO,
            applied: false,
        }
    }

    pub fn text(status: u16, text: &str) -> Reply {
        Reply {
            status,
            body: text.to_owned(),
            content_type: "text/plain; charset=utf-8",
            retry_after: None,
            delay: Duration::ZERO,
            applied: false,
        }
    }

    /// Zendesk's JSON error shape.
    pub fn error(status: u16, error: &str, description: &str) -> Reply {
        Reply::json(status, json!({"error": error, "description": description}))
    }

    pub fn retry_after(mut self, v: &str) -> Reply {
        self.retry_after = Some(v.to_owned());
        self
    }

    pub fn delayed(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    /// The write this answers is carried out all the same.
    pub fn applied(mut self) -> Reply {
        self.applied = true;
        self
    }
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `Basic base64("agent@example.com/token:fake-api-token-123")`.
    ApiToken,
    /// A bearer token this fake issued.
    Issued,
}

#[derive(Default)]
struct Path {
    script: VecDeque<Reply>,
    default: Option<Reply>,
}

struct Tokens {
    /// Lifetimes of the next tokens; the last one repeats.
    lifetimes: VecDeque<u64>,
    issued: Vec<(String, Instant)>,
    delay: Duration,
}

struct Fake {
    paths: Mutex<HashMap<String, Path>>,
    hits: Mutex<Vec<Hit>>,
    /// Comments added by PUT, per ticket, oldest first.
    comments: Mutex<HashMap<u64, Vec<Value>>>,
    expect: Expect,
    tokens: Mutex<Tokens>,
}

/// The running fake; stops when dropped.
pub struct FakeZendesk {
    addr: SocketAddr,
    fake: Arc<Fake>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeZendesk {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn response(r: &Reply) -> Response {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", r.content_type);
    if let Some(ra) = &r.retry_after {
        b = b.header("retry-after", ra.as_str());
    }
    b.body(Body::from(r.body.clone()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

async fn handle(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    fake.hits.lock().unwrap().push(Hit {
        method: method.to_string(),
        path: path.clone(),
        authorization: authorization.clone(),
        at: Instant::now(),
    });
    if method == Method::POST && path == "/oauth/tokens" {
        return fake.token(&body).await;
    }
    if method != Method::GET && method != Method::PUT {
        return response(&Reply::error(405, "MethodNotAllowed", "GET and PUT only"));
    }
    if !fake.authorized(authorization.as_deref()) {
        return response(&Reply::error(
            401,
            "Couldn't authenticate you",
            "bad Authorization",
        ));
    }
    let key = if method == Method::PUT {
        format!("PUT {path}")
    } else {
        path.clone()
    };
    let reply = {
        let mut paths = fake.paths.lock().unwrap();
        let p = paths.entry(key).or_default();
        p.script.pop_front().or_else(|| p.default.clone())
    };
    if method == Method::PUT {
        let Some(id) = ticket_of(&path, ".json") else {
            return response(&Reply::error(404, "RecordNotFound", "Not found"));
        };
        let reply = reply.unwrap_or_else(|| Reply::json(200, json!({"ticket": {"id": id}})));
        if (200..300).contains(&reply.status) || reply.applied {
            fake.comment(id, &body);
        }
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        return response(&reply);
    }
    let reply = reply.or_else(|| {
        let id = ticket_of(&path, "/comments.json")?;
        let mut list = fake.comments.lock().unwrap().get(&id).cloned()?;
        list.reverse(); // sort_order=desc: newest first
        Some(Reply::json(
            200,
            json!({"comments": list, "next_page": null, "previous_page": null, "count": list.len()}),
        ))
    });
    let reply = reply.unwrap_or_else(|| Reply::error(404, "RecordNotFound", "Not found"));
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    response(&reply)
}

/// The ticket id of `/api/v2/tickets/{id}{suffix}`.
fn ticket_of(path: &str, suffix: &str) -> Option<u64> {
    path.strip_prefix("/api/v2/tickets/")?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

impl Fake {
    /// The comment of a ticket update, as Zendesk keeps it.
    fn comment(&self, ticket: u64, body: &[u8]) {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let c = &v["ticket"]["comment"];
        if c.is_null() {
            return;
        }
        let mut all = self.comments.lock().unwrap();
        let list = all.entry(ticket).or_default();
        list.push(json!({
            "id": 1000 + list.len(),
            "type": "Comment",
            "body": c["body"],
            "html_body": c["html_body"],
            "plain_body": c["body"],
            "public": c["public"].as_bool().unwrap_or(true),
            "author_id": 1,
        }));
    }

    fn authorized(&self, header: Option<&str>) -> bool {
        let Some(h) = header else { return false };
        match self.expect {
            Expect::ApiToken => {
                let want = base64::engine::general_purpose::STANDARD
                    .encode(format!("{EMAIL}/token:{API_TOKEN}"));
                h == format!("Basic {want}")
            }
            Expect::Issued => h.strip_prefix("Bearer ").is_some_and(|t| {
                self.tokens
                    .lock()
                    .unwrap()
                    .issued
                    .iter()
                    .any(|(x, _)| x == t)
            }),
        }
    }

    async fn token(&self, body: &[u8]) -> Response {
        let delay = self.tokens.lock().unwrap().delay;
        tokio::time::sleep(delay).await;
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let good = v["grant_type"] == "client_credentials"
            && v["client_id"] == CLIENT_ID
            && v["client_secret"] == CLIENT_SECRET;
        if !good {
            return response(&Reply::error(
                401,
                "invalid_client",
                "Client authentication failed",
            ));
        }
        let mut t = self.tokens.lock().unwrap();
        let life = if t.lifetimes.len() > 1 {
            t.lifetimes.pop_front()
        } else {
            t.lifetimes.front().copied()
        }
        .unwrap_or(3600);
        let token = format!("tok-{}", t.issued.len() + 1);
        t.issued.push((token.clone(), Instant::now()));
        response(&Reply::json(
            200,
            json!({"access_token": token, "token_type": "bearer", "scope": "read", "expires_in": life}),
        ))
    }
}

impl FakeZendesk {
    /// A fake that wants the API token of [`EMAIL`] and [`API_TOKEN`].
    pub async fn start() -> FakeZendesk {
        Self::start_with(Expect::ApiToken, vec![3600], Duration::ZERO).await
    }

    /// A fake that issues tokens for [`CLIENT_ID`] / [`CLIENT_SECRET`] living
    /// `lifetimes` seconds in turn (the last repeats), each exchange taking `delay`.
    pub async fn start_oauth(lifetimes: Vec<u64>, delay: Duration) -> FakeZendesk {
        Self::start_with(Expect::Issued, lifetimes, delay).await
    }

    async fn start_with(expect: Expect, lifetimes: Vec<u64>, delay: Duration) -> FakeZendesk {
        let fake = Arc::new(Fake {
            paths: Mutex::new(HashMap::new()),
            hits: Mutex::new(Vec::new()),
            comments: Mutex::new(HashMap::new()),
            expect,
            tokens: Mutex::new(Tokens {
                lifetimes: lifetimes.into(),
                issued: Vec::new(),
                delay,
            }),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake Zendesk");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().fallback(handle).with_state(fake.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeZendesk { addr, fake, task }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Config lines (dotted keys) pointing handoff at this fake with API-token auth
    /// and short timers.
    pub fn config(&self) -> String {
        format!(
            "zendesk.base_url = \"{}\"\nzendesk.email = \"{EMAIL}\"\nzendesk.api_token = \"{API_TOKEN}\"\n{}",
            self.base_url(),
            FAST
        )
    }

    /// The same with OAuth client credentials.
    pub fn oauth_config(&self) -> String {
        format!(
            "zendesk.base_url = \"{}\"\nzendesk.oauth_client_id = \"{CLIENT_ID}\"\nzendesk.oauth_client_secret = \"{CLIENT_SECRET}\"\n{}",
            self.base_url(),
            FAST
        )
    }

    /// The answer for `path` once the script is spent.
    pub fn set(&self, path: &str, reply: Reply) {
        self.fake
            .paths
            .lock()
            .unwrap()
            .entry(path.to_owned())
            .or_default()
            .default = Some(reply);
    }

    /// Answers for `path` before its default, in order.
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        self.fake
            .paths
            .lock()
            .unwrap()
            .entry(path.to_owned())
            .or_default()
            .script
            .extend(replies);
    }

    /// A phone-call ticket with this requester (and organization), called from
    /// the tests' caller, +14155551212.
    pub fn ticket(&self, id: u64, requester: u64, org: Option<u64>) {
        self.ticket_from(id, requester, org, "+14155551212");
    }

    /// The same, called from `via_phone` (`via.source.from.phone`).
    pub fn ticket_from(&self, id: u64, requester: u64, org: Option<u64>, via_phone: &str) {
        self.set(
            &ticket_path(id),
            Reply::json(
                200,
                json!({"ticket": {
                    "id": id,
                    "url": format!("{}/api/v2/tickets/{id}.json", self.base_url()),
                    "subject": format!("Call from {via_phone}"),
                    "status": "new",
                    "requester_id": requester,
                    "submitter_id": requester,
                    "organization_id": org,
                    "via": {"channel": "voice_inbound", "source": {"from": {"phone": via_phone}, "to": {}, "rel": "inbound"}},
                    "tags": [],
                    "custom_fields": []
                }}),
            ),
        );
    }

    /// A user: `fields` are merged over a default end user.
    pub fn user(&self, id: u64, fields: Value) {
        let mut user = json!({
            "id": id,
            "url": format!("{}/api/v2/users/{id}.json", self.base_url()),
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "phone": "+1 (415) 555-1212",
            "external_id": "crm-ada",
            "role": "end-user",
            "organization_id": null,
            "user_fields": {},
            "time_zone": "America/Los_Angeles"
        });
        if let (Some(u), Some(f)) = (user.as_object_mut(), fields.as_object()) {
            u.extend(f.clone());
        }
        self.set(&user_path(id), Reply::json(200, json!({ "user": user })));
    }

    pub fn organization(&self, id: u64, fields: Value) {
        self.set(
            &org_path(id),
            Reply::json(
                200,
                json!({"organization": {
                    "id": id,
                    "url": format!("{}/api/v2/organizations/{id}.json", self.base_url()),
                    "name": "Acme",
                    "domain_names": ["acme.example"],
                    "organization_fields": fields
                }}),
            ),
        );
    }

    /// The comments added to `ticket`, oldest first.
    pub fn comments(&self, ticket: u64) -> Vec<Value> {
        self.fake
            .comments
            .lock()
            .unwrap()
            .get(&ticket)
            .cloned()
            .unwrap_or_default()
    }

    /// Answers for ticket updates (`PUT`) before the default (200, applied).
    pub fn script_put(&self, path: &str, replies: Vec<Reply>) {
        self.script(&format!("PUT {path}"), replies);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.fake.hits.lock().unwrap().clone()
    }

    /// Requests for `path`.
    pub fn hits_on(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }

    /// Tokens issued so far, with when.
    pub fn tokens(&self) -> Vec<(String, Instant)> {
        self.fake.tokens.lock().unwrap().issued.clone()
    }
}

/// Short timeouts and backoffs so that retries cost milliseconds.
const FAST: &str = "zendesk.request_timeout_ms = 2000\nzendesk.max_retries = 3\nzendesk.retry_base_ms = 20\nzendesk.retry_max_ms = 100\nzendesk.max_retry_after_secs = 2\n";

pub fn ticket_path(id: u64) -> String {
    format!("/api/v2/tickets/{id}.json")
}

pub fn comments_path(id: u64) -> String {
    format!("/api/v2/tickets/{id}/comments.json")
}

pub fn user_path(id: u64) -> String {
    format!("/api/v2/users/{id}.json")
}

pub fn org_path(id: u64) -> String {
    format!("/api/v2/organizations/{id}.json")
}
