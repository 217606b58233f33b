//! Integration tests against a real Postgres, one fresh database per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod batch;
mod binary;
mod deploy;
mod edge;
mod embedded;
mod operator;
mod outage;
mod quarantine;
mod redaction;
mod retention;
mod spool;
mod store;
mod webhook;
