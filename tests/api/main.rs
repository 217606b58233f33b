//! Integration tests against a real Postgres, one fresh database per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_support;
mod broker_support;
mod forward_support;
mod helpers;

mod batch;
mod cli;
mod database_url;
mod deploy;
mod edge;
mod embedded;
mod erasure;
mod erasure_lasts;
mod fd_budget;
mod feed;
mod forward;
mod forward_amqp;
mod forward_nats;
mod forward_process;
mod forward_redis;
mod idempotency;
mod long_poll_auth;
mod metrics;
mod openapi;
mod operator;
mod outage;
mod payloads;
mod pii_hardening;
mod quarantine;
mod readme;
mod redaction;
mod rejected;
mod results_api;
mod results_cli;
mod retention;
mod rotation;
mod routing;
mod serve;
mod signatures;
mod spool;
mod store;
mod stringify;
mod validation;
mod walk;
