//! The process's file-descriptor budget, and the connection caps of the
//! three listeners sized from it.
//!
//! Every open connection of every listener counts against one process-wide
//! `RLIMIT_NOFILE`. Caps that add up to more than the limit let one listener
//! (1,000 half-sent requests to the Results API, say) take every descriptor,
//! and then the webhook listener's `accept` fails with EMFILE and ImgGo's
//! deliveries time out. So at start-up the soft limit is raised to the hard
//! one (what an unprivileged process may do), descriptors are set aside for
//! everything that is not a client connection (database pools, the spool,
//! log output, the runtime), and what is left is split: the admin listener
//! gets a small share, the webhook listener a share no other listener can
//! take (half of the rest while the API is on), the API the remainder. A
//! configured `max_connections` lower than its share wins.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::config::Settings;

/// Descriptors kept for everything but client connections beyond the
/// database pools: the runtime (epoll, wakers), the three listening
/// sockets, stdio, the spool's SQLite files and connections, the feed
/// watcher, DNS lookups, TLS roots, and some margin.
const BASE_RESERVE: u64 = 64;

/// Most connections the operator listener (`/metrics`) needs.
const ADMIN_MAX: u64 = 64;

/// The `RLIMIT_NOFILE` figures at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLimit {
    /// The soft limit found at start.
    pub was: u64,
    /// The soft limit now (the hard limit, unless raising it failed).
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and reports both.
/// Idempotent; a failure leaves the soft limit as it was (and is logged).
pub fn raise_file_limit() -> FileLimit {
    let (was, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE; assuming 1024");
            return FileLimit {
                was: 1024,
                soft: 1024,
                hard: 1024,
            };
        }
    };
    let mut soft = was;
    if was < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => soft = hard,
            Err(e) => tracing::warn!(error = %e, soft = was, hard, "cannot raise RLIMIT_NOFILE"),
        }
    }
    FileLimit { was, soft, hard }
}

/// Connections each listener may hold at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionCaps {
    pub public: usize,
    pub api: usize,
    pub admin: usize,
    /// Descriptors set aside for everything else.
    pub reserved: u64,
}

impl ConnectionCaps {
    /// The caps for `settings` within `soft` descriptors.
    pub fn within(soft: u64, settings: &Settings) -> Self {
        let reserved = BASE_RESERVE + u64::from(settings.database.max_connections);
        let available = soft.saturating_sub(reserved).max(3);
        let admin = ADMIN_MAX.min(available / 16).max(1);
        let api_on = settings.api.bind_addr().is_some();
        let rest = available - admin;
        // The webhook listener's share is its own: the API cannot take it.
        let public_share = if api_on { rest / 2 } else { rest };
        let public = u64::from(settings.server.max_connections)
            .min(public_share)
            .max(1);
        let api = if api_on {
            u64::from(settings.api.max_connections)
                .min(rest - public)
                .max(1)
        } else {
            0
        };
        Self {
            public: usize::try_from(public).unwrap_or(usize::MAX),
            api: usize::try_from(api).unwrap_or(usize::MAX),
            admin: usize::try_from(admin).unwrap_or(usize::MAX),
            reserved,
        }
    }

    /// Raises the soft limit, sizes the caps and says so in one line.
    pub fn at_start_up(settings: &Settings) -> Self {
        let limit = raise_file_limit();
        let caps = Self::within(limit.soft, settings);
        let configured = (
            settings.server.max_connections as usize,
            settings.api.max_connections as usize,
        );
        tracing::info!(
            nofile_soft_at_start = limit.was,
            nofile_soft = limit.soft,
            nofile_hard = limit.hard,
            reserved = caps.reserved,
            public_max_connections = caps.public,
            api_max_connections = caps.api,
            admin_max_connections = caps.admin,
            "file descriptors"
        );
        if caps.public < configured.0 || (caps.api > 0 && caps.api < configured.1) {
            tracing::warn!(
                nofile_hard = limit.hard,
                "the file-descriptor limit is below what server.max_connections and \
                 api.max_connections ask for; the caps were lowered to fit it \
                 (raise `nofile` for the container or service)"
            );
        }
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(api: bool) -> Settings {
        let mut s = Settings::load_with_env(None, Vec::new()).unwrap_or_else(|e| panic!("{e}"));
        if !api {
            s.api.bind = String::new();
        }
        s
    }

    #[test]
    fn the_caps_never_add_up_to_more_than_the_limit() {
        for api in [true, false] {
            let s = settings(api);
            for soft in [0, 1, 50, 100, 256, 1024, 4096, 20_000, 1 << 20] {
                let c = ConnectionCaps::within(soft, &s);
                let total = (c.public + c.api + c.admin) as u64;
                assert!(c.public >= 1 && c.admin >= 1, "{soft}: {c:?}");
                if soft >= c.reserved + 3 {
                    assert!(total + c.reserved <= soft, "{soft}: {c:?}");
                }
                // The webhook listener keeps about as much as the API.
                if api {
                    assert!(c.api >= 1 && c.api <= c.public + 1, "{soft}: {c:?}");
                } else {
                    assert_eq!(c.api, 0);
                }
            }
        }
    }

    #[test]
    fn a_large_limit_leaves_the_configured_caps() {
        let s = settings(true);
        let c = ConnectionCaps::within(1 << 20, &s);
        assert_eq!(c.public, s.server.max_connections as usize);
        assert_eq!(c.api, s.api.max_connections as usize);
        assert_eq!(c.admin, ADMIN_MAX as usize);
    }

    #[test]
    fn a_small_limit_splits_what_is_left_between_webhook_and_api() {
        let s = settings(true);
        let c = ConnectionCaps::within(256, &s);
        // 256 - (64 + 10) = 182; admin 11; 171 left: 85 webhook, 86 API.
        assert_eq!((c.admin, c.public, c.api), (11, 85, 86));
    }

    #[test]
    fn raising_the_soft_limit_reaches_the_hard_one() {
        let limit = raise_file_limit();
        assert_eq!(limit.soft, limit.hard);
        assert!(limit.was <= limit.soft);
    }
}
