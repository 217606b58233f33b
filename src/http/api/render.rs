//! Events as the API answers with them: each in the one wire shape
//! ([`crate::event::wire`]), placed in the feed by its cursor. A row that
//! cannot be opened is logged here (by id, never content) and answered as
//! a 500.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::crypto::KeyRing;
use crate::error::AppError;
use crate::event::wire::{self, Unreadable};
use crate::event::StoredEvent;
use crate::feed::{self, CursorForm, Position};

/// Appends `[event,...]` for `rows`.
pub fn write_events<'a>(
    out: &mut Vec<u8>,
    keys: &KeyRing,
    form: CursorForm,
    rows: impl IntoIterator<Item = (Position, &'a StoredEvent)>,
) -> Result<(), AppError> {
    out.push(b'[');
    for (i, (position, row)) in rows.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let payload = open(keys, row)?;
        wire::write(out, row, Some(&feed::encode(form, position)), &payload);
    }
    out.push(b']');
    Ok(())
}

/// The payload of `row`, or a logged 500.
fn open(keys: &KeyRing, row: &StoredEvent) -> Result<Vec<u8>, AppError> {
    wire::open(keys, row).map_err(|e| {
        match e {
            Unreadable::Sealed(e) => {
                tracing::error!(row = row.id, error = %e, "stored event cannot be decrypted");
            }
            Unreadable::NotJson => {
                tracing::error!(row = row.id, "stored event is not one JSON value")
            }
        }
        AppError::Internal
    })
}

/// A `200 application/json` response of `body`.
pub fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
