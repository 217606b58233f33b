//! Who may deliver: client IP, allowlist, rate limit, signature.

pub mod allowlist;
pub mod client_ip;
pub mod rate_limit;
pub mod signature;

pub use allowlist::Allowlist;
pub use client_ip::{ClientIp, ClientIpResolver};
pub use signature::{SignatureError, SignatureVerifier, SIGNATURE_HEADER};
