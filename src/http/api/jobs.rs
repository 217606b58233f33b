//! `GET /v1/jobs/{job_id}` (a job's events) and `DELETE /v1/jobs/{job_id}`
//! (deletes them; audited in the same transaction).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use utoipa::ToSchema;

use super::auth::{store_error, Caller};
use super::render;
use super::schema::Deleted;
use super::EventReader;
use crate::audit::Action;
use crate::error::AppError;
use crate::event::wire::ApiEvent;
use crate::event::Envelope;
use crate::store::Store;
use crate::tokens::Scope;

/// Every stored event of one job.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct JobEvents {
    pub events: Vec<ApiEvent>,
}

/// The job id of the path, and whether any stored event can have it (one
/// that breaks the ingest rule, a NUL say, never reaches the database).
fn job_id(path: Result<Path<String>, PathRejection>) -> Result<(String, bool), AppError> {
    let Path(id) =
        path.map_err(|_| AppError::InvalidParameter("job_id is not a valid path segment".into()))?;
    let possible = Envelope::is_job_id(&id);
    Ok((id, possible))
}

/// A job's stored events, oldest first.
#[utoipa::path(
    get,
    path = "/v1/jobs/{job_id}",
    tag = "jobs",
    params(("job_id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job's events", body = JobEvents),
        (status = 400, description = "`invalid_parameter`: the path is not a valid job id segment", body = super::schema::ErrorBody),
        (status = 401, description = "`unauthorized`: no token, or a malformed, unknown or revoked one", body = super::schema::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "`forbidden`: the token lacks `events:read`", body = super::schema::ErrorBody),
        (status = 404, description = "`not_found`: no stored event for this job", body = super::schema::ErrorBody),
        (status = 503, description = "`unavailable`: the database cannot answer; retry after `Retry-After`", body = super::schema::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("bearer" = ["events:read"]))
)]
pub async fn get(
    State(reader): State<EventReader>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    caller.require(Scope::EventsRead)?;
    let (job_id, possible) = job_id(path)?;
    if !possible {
        return Err(AppError::JobNotFound);
    }
    let store = &reader.store;
    let events = store.job_events(&job_id).await.map_err(store_error)?;
    if events.is_empty() {
        return Err(AppError::JobNotFound);
    }
    let mut body = Vec::with_capacity(64 + events.len() * 1024);
    body.extend_from_slice(b"{\"events\":");
    render::write_events(
        &mut body,
        &reader.keys,
        reader.form,
        events.iter().map(|e| (e.position, &e.row)),
    )?;
    body.push(b'}');
    let entry = caller
        .audit(Action::JobRead, Some(job_id))
        .count(events.len() as u64);
    store.append_audit(&entry).await.map_err(store_error)?;
    Ok(render::json_response(body))
}

/// Deletes every stored event of a job.
#[utoipa::path(
    delete,
    path = "/v1/jobs/{job_id}",
    tag = "jobs",
    params(("job_id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "How many events were deleted (0 when none)", body = Deleted),
        (status = 400, description = "`invalid_parameter`: the path is not a valid job id segment", body = super::schema::ErrorBody),
        (status = 401, description = "`unauthorized`: no token, or a malformed, unknown or revoked one", body = super::schema::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "`forbidden`: the token lacks `events:delete`", body = super::schema::ErrorBody),
        (status = 503, description = "`unavailable`: the database cannot answer; retry after `Retry-After`", body = super::schema::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("bearer" = ["events:delete"]))
)]
pub async fn delete(
    State(store): State<Store>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<Deleted>, AppError> {
    caller.require(Scope::EventsDelete)?;
    let (job_id, possible) = job_id(path)?;
    if !possible {
        // Nothing can be deleted, so there is nothing to audit (and no
        // target the audit trail could hold).
        return Ok(axum::Json(Deleted { deleted: 0 }));
    }
    let entry = caller.audit(Action::JobDelete, Some(job_id.clone()));
    let deleted = store
        .delete_job(&job_id, &entry)
        .await
        .map_err(store_error)?;
    Ok(axum::Json(Deleted { deleted }))
}
