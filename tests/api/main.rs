//! Integration tests against a real Postgres, one fresh database per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_support;
mod helpers;

mod batch;
mod binary;
mod edge;
mod embedded;
mod erasure;
mod feed;
mod outage;
mod redaction;
mod results_api;
mod results_cli;
mod retention;
mod store;
mod webhook;
