//! For the forwarding tests: an HTTP destination of the test's own that
//! verifies every Standard Webhooks signature itself (its own HMAC code:
//! exactly one signature, by the first of the two configured keys, as
//! CONTRACT §11 says "the first signs"; a timestamp within 5 minutes) and
//! answers as each test scripts it.

#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use imggo_receiver::config::Settings;

/// The current signing key (it signs) and the previous one (kept, unused).
pub const KEY_NEW: &[u8] = b"forwarding-test-key-new-0123456789";
pub const KEY_OLD: &[u8] = b"forwarding-test-key-old-9876543210";

pub fn whsec(key: &[u8]) -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// `[forward.NAME]` of kind http to `url`, as environment overrides.
pub fn http_destination(name: &str, url: &str) -> Vec<(String, String)> {
    let key = |k: &str| format!("IMGGO__FORWARD__{}__{k}", name.to_uppercase());
    vec![
        (key("KIND"), "http".into()),
        (key("URL"), url.into()),
        (
            key("SECRET"),
            format!("{},{}", whsec(KEY_NEW), whsec(KEY_OLD)),
        ),
        (key("MAX_BACKOFF"), "2s".into()),
    ]
}

/// The test settings with these overrides' destinations.
pub fn with_destinations(settings: &mut Settings, env: Vec<(String, String)>) {
    settings.forward = Settings::load_with_env(None, env).unwrap().forward;
}

/// One request the destination got.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub body: Vec<u8>,
    pub status: u16,
    pub at: Instant,
}

#[derive(Default)]
struct Script {
    got: Vec<Received>,
    /// Statuses for the next requests, in order; then `default`.
    next: VecDeque<u16>,
    /// Bodies holding one of these are answered 400 the first time.
    refuse_once: HashSet<String>,
    /// Answer for everything else (200 unless set).
    default: Option<u16>,
    bad_signatures: usize,
    delay: Duration,
    /// Requests that arrived, answered or still in their delay.
    arrived: usize,
}

/// The test's HTTP destination.
#[derive(Clone)]
pub struct Destination {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl Destination {
    pub async fn start() -> Self {
        let script = Arc::new(Mutex::new(Script::default()));
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, script }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn answer_next(&self, statuses: &[u16]) {
        self.script.lock().unwrap().next.extend(statuses);
    }

    /// Answers 400 the first time a body holding `text` (a job id) comes.
    pub fn refuse_once(&self, text: &str) {
        self.script
            .lock()
            .unwrap()
            .refuse_once
            .insert(text.to_owned());
    }

    pub fn answer_always(&self, status: u16) {
        self.script.lock().unwrap().default = Some(status);
    }

    pub fn delay(&self, d: Duration) {
        self.script.lock().unwrap().delay = d;
    }

    /// Requests that arrived so far, including those still held by
    /// [`Destination::delay`].
    pub fn arrived(&self) -> usize {
        self.script.lock().unwrap().arrived
    }

    pub fn requests(&self) -> Vec<Received> {
        self.script.lock().unwrap().got.clone()
    }

    pub fn bad_signatures(&self) -> usize {
        self.script.lock().unwrap().bad_signatures
    }

    /// What a consumer keeps: each id once, at its first 2xx, in order.
    pub fn accepted(&self) -> Vec<Received> {
        let mut seen = HashSet::new();
        self.requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status) && seen.insert(r.id.clone()))
            .collect()
    }

    /// Waits (bounded) until `n` distinct messages were accepted.
    pub async fn until_accepted(&self, n: usize) -> Vec<Received> {
        crate::helpers::eventually(&format!("{n} messages accepted"), || async {
            let got = self.accepted();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

/// The consumer's check, written here independently of the service.
fn verify(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let header = |n: &str| headers.get(n)?.to_str().ok().map(str::to_owned);
    let id = header("webhook-id")?;
    let ts = header("webhook-timestamp")?;
    let sigs = header("webhook-signature")?;
    let age = chrono::Utc::now().timestamp() - ts.parse::<i64>().ok()?;
    if age.abs() > 300 {
        return None;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY_NEW).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    // One signature, the first key's: the old key never signs.
    (sigs.strip_prefix("v1,") == Some(expected.as_str())).then_some(id)
}

async fn receive(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let delay = {
        let mut s = script.lock().unwrap();
        s.arrived += 1;
        s.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut s = script.lock().unwrap();
    let Some(id) = verify(&headers, &body) else {
        s.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    };
    let status = if let Some(next) = s.next.pop_front() {
        next
    } else if let Some(hit) = s
        .refuse_once
        .iter()
        .find(|t| String::from_utf8_lossy(&body).contains(t.as_str()))
        .cloned()
    {
        s.refuse_once.remove(&hit);
        400
    } else {
        s.default.unwrap_or(200)
    };
    s.got.push(Received {
        id,
        body: body.to_vec(),
        status,
        at: Instant::now(),
    });
    StatusCode::from_u16(status).unwrap()
}
