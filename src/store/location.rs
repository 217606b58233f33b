//! Which store a command works on, in one short phrase for the operator
//! (`postgres 127.0.0.1:5432/imggo`, `sqlite ./data/imggo.db`): host, port
//! and database, or the file. Never the user, password or parameters.

use std::path::Path;
use std::str::FromStr as _;

use secrecy::{ExposeSecret as _, SecretString};
use sqlx::sqlite::SqliteConnectOptions;

/// The store `url` names, as `postgres HOST:PORT/DB` or `sqlite PATH`.
pub fn describe(url: &SecretString) -> String {
    let url = url.expose_secret();
    if url.starts_with("sqlite:") {
        return match SqliteConnectOptions::from_str(url) {
            Ok(options) => format!("sqlite {}", shown_path(options.get_filename())),
            Err(_) => "sqlite (DATABASE_URL cannot be read)".to_owned(),
        };
    }
    match crate::config::dsn::pg_place(url) {
        Some((at, Some(db))) => format!("postgres {at}/{db}"),
        Some((at, None)) => format!("postgres {at}"),
        None => "postgres (DATABASE_URL cannot be read)".to_owned(),
    }
}

/// A relative path as a shell user would type it (`./data/imggo.db`).
fn shown_path(path: &Path) -> String {
    let text = path.display().to_string();
    if path.is_relative() && !text.starts_with('.') && text != ":memory:" {
        format!("./{text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_host_port_database_or_file_and_nothing_secret() {
        let cases = [
            ("sqlite://data/imggo.db", "sqlite ./data/imggo.db"),
            (
                "sqlite:///var/lib/imggo.db?mode=rwc",
                "sqlite /var/lib/imggo.db",
            ),
            (
                "postgres://imggo:hunter2@db.internal:6543/imggo?sslmode=require&password=x",
                "postgres db.internal:6543/imggo",
            ),
            (
                "postgresql://u:p@127.0.0.1/app",
                "postgres 127.0.0.1:5432/app",
            ),
        ];
        for (url, shown) in cases {
            assert_eq!(describe(&SecretString::from(url)), shown, "{url}");
        }
    }
}
