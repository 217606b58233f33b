//! `GET /v1/events`: the feed. Pages in commit order after a cursor, with
//! optional exact filters, and a long-poll (`wait`) that holds no database
//! connection while it waits: it watches the replica's feed head
//! (`crate::feed`) and queries again once the head moves.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use tokio::time::Instant;
use utoipa::ToSchema;

use super::auth::{store_error, Caller};
use super::render;
use super::{EventReader, FeedWaits};
use crate::audit::Action;
use crate::error::AppError;
use crate::event::wire::ApiEvent;
use crate::event::Envelope;
use crate::feed::{self, Position};
use crate::store::FeedFilter;
use crate::tokens::Scope;

/// Events per page unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
/// Longest `wait`, in seconds.
const MAX_WAIT_SECS: f64 = 30.0;

/// A page of the feed.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventsPage {
    pub events: Vec<ApiEvent>,
    /// Pass as `after` next time (the same `after` when the page is empty).
    pub next: String,
}

/// What the query string asks for, validated.
struct FeedQuery {
    after: Position,
    limit: u32,
    filter: FeedFilter,
    wait: std::time::Duration,
}

/// The feed: events after `after`, oldest first.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(
        ("after" = Option<String>, Query, description = "Cursor from a previous `next` or event `cursor` (opaque; one this service did not issue is `400 invalid_cursor`); absent = from the oldest retained event", min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_-]+$"),
        ("limit" = Option<u32>, Query, description = "Events per page, 1-1000 (default 100)", minimum = 1, maximum = 1000),
        ("event" = Option<String>, Query, description = "Only events with exactly this `event`", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]+$"),
        ("pattern_id" = Option<String>, Query, description = "Only events with exactly this `pattern_id` (1-128 characters, no NUL)", min_length = 1, max_length = 128, pattern = r"^[^\u0000]+$"),
        ("valid" = Option<bool>, Query, description = "Only events whose validation verdict is `true` (valid) or `false` (invalid); unchecked events (`valid: null`) match neither"),
        ("wait" = Option<f64>, Query, description = "Seconds (0-30) to hold the request open until an event is there", minimum = 0, maximum = 30),
    ),
    responses(
        (status = 200, description = "A page of events", body = EventsPage),
        (status = 400, description = "`invalid_cursor` or `invalid_parameter`", body = super::schema::ErrorBody),
        (status = 401, description = "`unauthorized`: no token, or a malformed, unknown or revoked one", body = super::schema::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "`forbidden`: the token lacks `events:read`", body = super::schema::ErrorBody),
        (status = 503, description = "`unavailable`: the database cannot answer; retry after `Retry-After`", body = super::schema::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("bearer" = ["events:read"]))
)]
pub async fn list(
    State(reader): State<EventReader>,
    State(waits): State<FeedWaits>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    caller.require(Scope::EventsRead)?;
    let q = parse_query(&reader, &waits, query.as_deref().unwrap_or(""))?;
    let store = &reader.store;
    let deadline = Instant::now() + q.wait;
    // Subscribed before the first query: a commit after it moves the head.
    let mut head = waits.feed.subscribe();
    head.borrow_and_update();
    let mut waiting = None;
    let page = loop {
        let page = store
            .feed_page(q.after, q.limit, &q.filter)
            .await
            .map_err(store_error)?;
        if !page.is_empty() || Instant::now() >= deadline {
            break page;
        }
        waiting.get_or_insert_with(|| Waiting::start(&waits.waiters));
        let woke = tokio::select! {
            changed = head.changed() => changed.is_ok(),
            () = tokio::time::sleep_until(deadline) => false,
            () = waits.shutdown.cancelled() => false,
        };
        if !woke {
            break Vec::new();
        }
    };
    let waited = waiting.is_some();
    drop(waiting);
    if waited {
        // The token may have been revoked while the request waited.
        caller.still_authorised(store).await?;
    }
    let next = page.last().map_or(q.after, |e| e.position);
    let mut body = Vec::with_capacity(256 + page.len() * 1024);
    body.extend_from_slice(b"{\"events\":");
    render::write_events(
        &mut body,
        &reader.keys,
        reader.form,
        page.iter().map(|e| (e.position, &e.row)),
    )?;
    body.extend_from_slice(b",\"next\":");
    crate::event::wire::string(&mut body, &feed::encode(reader.form, next));
    body.push(b'}');
    if !page.is_empty() {
        let entry = caller
            .audit(Action::FeedRead, None)
            .count(page.len() as u64);
        store.append_audit(&entry).await.map_err(store_error)?;
    }
    Ok(render::json_response(body))
}

/// Counts a long-poll in `imggo_feed_waiters` while it waits.
struct Waiting(metrics::Gauge);

impl Waiting {
    fn start(gauge: &metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

fn parse_query(reader: &EventReader, waits: &FeedWaits, raw: &str) -> Result<FeedQuery, AppError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|_| AppError::InvalidParameter("the query string is malformed".into()))?;
    let mut q = FeedQuery {
        after: Position::default(),
        limit: DEFAULT_LIMIT,
        filter: FeedFilter::default(),
        wait: std::time::Duration::ZERO,
    };
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in &pairs {
        let known = ["after", "limit", "event", "pattern_id", "wait", "valid"];
        // Anything else (a `token` in the URL, say) is ignored.
        let Some(name) = known.iter().find(|k| *k == key) else {
            continue;
        };
        if seen.contains(name) {
            return Err(AppError::InvalidParameter(format!(
                "{name} may be given once"
            )));
        }
        seen.push(name);
        match *name {
            "after" => {
                q.after = feed::decode(reader.form, value).ok_or(AppError::InvalidCursor)?;
            }
            "limit" => {
                q.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        AppError::InvalidParameter(format!(
                            "limit must be an integer from 1 to {MAX_LIMIT}"
                        ))
                    })?;
            }
            "wait" => {
                let secs = value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && (0.0..=MAX_WAIT_SECS).contains(s))
                    .ok_or_else(|| {
                        AppError::InvalidParameter(
                            "wait must be a number of seconds from 0 to 30".into(),
                        )
                    })?;
                // The request itself must not time out first.
                q.wait = std::time::Duration::from_secs_f64(secs).min(waits.ceiling);
            }
            // The validation verdict (CONTRACT §12).
            "valid" => {
                q.filter.valid = match value.as_str() {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => {
                        return Err(AppError::InvalidParameter(
                            "valid must be true or false".into(),
                        ))
                    }
                };
            }
            // A filter no stored event can match is a mistake, not an
            // empty feed: the caller hears which rule it breaks.
            "event" => {
                if !Envelope::is_event(value) {
                    return Err(AppError::InvalidParameter(Envelope::EVENT_RULE.into()));
                }
                q.filter.event = Some(value.clone());
            }
            _ => {
                if value.is_empty() || !Envelope::is_pattern_id(value) {
                    return Err(AppError::InvalidParameter(
                        "pattern_id must be 1 to 128 characters, without NUL".into(),
                    ));
                }
                q.filter.pattern_id = Some(value.clone());
            }
        }
    }
    Ok(q)
}
