//! What of `DATABASE_URL` may be shown: its host, port and database name,
//! nothing else. A user name, a password, and any query parameter
//! (`sslpassword`, `password`, `options`, `application_name`, ones this
//! version does not know) can carry a secret or identify someone, so none
//! of them reaches a log line, an error message or `check-config`.
//!
//! sqlx logs every query parameter it does not know, value and all, when it
//! parses a Postgres URL: [`known_pg_parameters`] takes them out first.

use std::borrow::Cow;
use std::str::FromStr as _;

use secrecy::{ExposeSecret as _, SecretString};

use super::secrets::DEFAULT_DATABASE_URL;

/// The query parameters sqlx 0.8 reads from a Postgres URL; it logs any
/// other with its value.
const PG_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

fn is_known_pg_parameter(key: &str) -> bool {
    PG_PARAMETERS.contains(&key) || (key.starts_with("options[") && key.ends_with(']'))
}

/// A Postgres `url` with only the query parameters sqlx reads, and how many
/// others were taken out (sqlx ignores them, but logs each with its
/// value). A URL that does not parse is returned as it is: sqlx refuses it.
pub fn known_pg_parameters(url: &str) -> (Cow<'_, str>, usize) {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return (Cow::Borrowed(url), 0);
    };
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    let kept: Vec<&(String, String)> = pairs
        .iter()
        .filter(|(k, _)| is_known_pg_parameter(k))
        .collect();
    let dropped = pairs.len() - kept.len();
    if dropped == 0 {
        return (Cow::Borrowed(url), 0);
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    (Cow::Owned(parsed.into()), dropped)
}

/// Where the store is, for log lines and messages: `postgres://host:port/db`
/// or `sqlite://path`; never a user, a password or a query parameter.
pub fn database_label(url: &SecretString) -> String {
    let url = url.expose_secret();
    if url == DEFAULT_DATABASE_URL {
        return format!("{url} (default)");
    }
    if url.starts_with("sqlite:") {
        // A file name carries no credentials; its parameters are not shown.
        return url.split_once('?').map_or(url, |(path, _)| path).to_owned();
    }
    let scheme = url.split_once("://").map_or("postgres", |(s, _)| s);
    match pg_place(url) {
        Some((at, database)) => format!("{scheme}://{at}/{}", database.unwrap_or_default()),
        None => format!("{scheme}://(a URL that does not parse)"),
    }
}

/// Where a Postgres `url` connects, read as sqlx reads it (a `host` or
/// `port` parameter included, unknown parameters taken out first): `HOST:PORT`
/// or the socket path, and the database when it names one. `None` when it
/// does not parse. What every description of the store is made of.
pub fn pg_place(url: &str) -> Option<(String, Option<String>)> {
    let (known, _) = known_pg_parameters(url);
    let options = sqlx::postgres::PgConnectOptions::from_str(&known).ok()?;
    let at = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    Some((at, options.get_database().map(str::to_owned)))
}
