//! A lifecycle-event subscriber that counts what it receives, for the events
//! benchmark (`bench/events_load.sh`) and for trying the webhooks by hand:
//!
//! ```sh
//! cargo run --release --example event_sink -- 127.0.0.1:9000 the-subscriber-secret
//! curl -s http://127.0.0.1:9000/stats
//! ```
//!
//! Every POST is answered 200 and its signature checked (`X-Handoff-Signature`,
//! see the README); `GET /stats` gives the counts as JSON: requests, unique event
//! ids, duplicates, bad signatures, events by type.

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Counts {
    requests: u64,
    ids: HashSet<String>,
    duplicates: u64,
    bad_signature: u64,
    by_type: BTreeMap<String, u64>,
}

fn signed(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let (Some(ts), Some(sig)) = (h("x-handoff-timestamp"), h("x-handoff-signature")) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    sig.strip_prefix("v1=") == Some(hex.as_str())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let secret = args.next().unwrap_or_default();
    let counts = Arc::new(Mutex::new(Counts::default()));
    let c = counts.clone();
    let app = axum::Router::new()
        .route(
            "/stats",
            get(move || {
                let c = c.clone();
                async move {
                    let c = c.lock().unwrap_or_else(|p| p.into_inner());
                    axum::Json(serde_json::json!({
                        "requests": c.requests,
                        "unique": c.ids.len(),
                        "duplicates": c.duplicates,
                        "bad_signature": c.bad_signature,
                        "by_type": c.by_type,
                    }))
                }
            }),
        )
        .fallback(post(move |headers: HeaderMap, body: Bytes| {
            let counts = counts.clone();
            let secret = secret.clone();
            async move {
                let ok = signed(&secret, &headers, &body);
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let id = v["id"].as_str().unwrap_or_default().to_owned();
                let kind = v["type"].as_str().unwrap_or("unknown").to_owned();
                let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
                c.requests += 1;
                if !ok {
                    c.bad_signature += 1;
                }
                if c.ids.insert(id) {
                    *c.by_type.entry(kind).or_default() += 1;
                } else {
                    c.duplicates += 1;
                }
                "ok"
            }
        }));
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("event_sink: cannot listen on {listen}: {e}");
            std::process::exit(2);
        }
    };
    if let Ok(addr) = listener.local_addr() {
        println!("listening http {addr}");
    }
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("event_sink: {e}");
    }
}
