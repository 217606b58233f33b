//! imggo-receiver: the webhook receiver for ImgGo job results.
//!
//! A delivery walks: client IP → allowlist → rate limit → body size →
//! signature → JSON → payload fields → timestamp freshness → redact →
//! encrypt → store. Each stage has its own module.

pub mod audit;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod dedup;
pub mod delivery;
pub mod error;
pub mod event;
pub mod feed;
pub mod forward;
pub mod group_commit;
pub mod http;
pub mod ingest;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod quarantine;
pub mod redact;
pub mod reencrypt;
pub mod retention;
pub mod security;
pub mod spool;
pub mod startup;
pub mod store;
pub mod subjects;
pub mod telemetry;
pub mod tokens;
pub mod validation;
