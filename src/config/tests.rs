use std::collections::HashMap;
use std::io::Write as _;
use std::time::Duration;

use secrecy::ExposeSecret as _;

use super::secrets::{self, Secrets, WebhookSecrets};
use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load_err(file: Option<&Path>, pairs: &[(&str, &str)]) -> String {
    Settings::load_with_env(file, env(pairs))
        .expect_err("expected a configuration error")
        .to_string()
}

fn toml_file(contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    f
}

#[test]
fn defaults_match_the_contract() {
    let s = Settings::load_with_env(None, env(&[])).unwrap();
    assert_eq!(s.server.bind.to_string(), "0.0.0.0:8080");
    assert_eq!(s.server.max_body_bytes, 1_048_576);
    assert_eq!(s.server.request_timeout, Duration::from_secs(10));
    assert_eq!(s.server.shutdown_timeout, Duration::from_secs(25));
    assert_eq!(s.admin.bind.to_string(), "127.0.0.1:9464");
    assert_eq!(s.webhook.path, "/webhooks/imggo");
    assert_eq!(s.webhook.max_timestamp_age, Duration::from_secs(24 * 3600));
    assert!(s.network.trusted_proxies.is_empty() && s.network.allowed_ips.is_empty());
    assert_eq!((s.rate_limit.per_second, s.rate_limit.burst), (50, 100));
    assert_eq!(s.retention.max_age, Duration::from_secs(30 * 86_400));
    assert_eq!(s.retention.purge_interval, Duration::from_secs(3600));
    assert_eq!(s.retention.batch_size, 1000);
    assert_eq!(s.storage.partition_interval, Duration::from_secs(86_400));
    assert_eq!(s.database.max_connections, 10);
    assert_eq!(s.log.format, LogFormat::Json);
}

#[test]
fn file_then_env_layering() {
    let f = toml_file(
        "[rate_limit]\nper_second = 7\nburst = 9\n[network]\nallowed_ips = [\"10.0.0.0/8\", \"192.0.2.1\"]\n",
    );
    let s = Settings::load_with_env(
        Some(f.path()),
        env(&[
            ("IMGGO__RATE_LIMIT__BURST", "11"),
            ("IMGGO__WEBHOOK__MAX_TIMESTAMP_AGE", "0s"),
            (
                "IMGGO__NETWORK__TRUSTED_PROXIES",
                "10.1.0.0/16, 2001:db8::/32",
            ),
            ("IMGGO__LOG__FORMAT", "pretty"),
        ]),
    )
    .unwrap();
    assert_eq!(s.rate_limit.per_second, 7, "file wins over defaults");
    assert_eq!(s.rate_limit.burst, 11, "env wins over the file");
    assert_eq!(s.webhook.max_timestamp_age, Duration::ZERO);
    assert_eq!(s.network.allowed_ips.len(), 2);
    assert_eq!(s.network.allowed_ips[1].to_string(), "192.0.2.1/32");
    assert_eq!(s.network.trusted_proxies.len(), 2);
    assert_eq!(s.log.format, LogFormat::Pretty);
}

#[test]
fn secrets_in_env_are_not_settings() {
    // Single-underscore secret variables must not be read as settings keys.
    let s = Settings::load_with_env(
        None,
        env(&[("IMGGO_WEBHOOK_SECRETS", "x"), ("IMGGO_CONFIG", "y")]),
    );
    assert!(s.is_ok());
}

#[test]
fn bad_values_name_their_key() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("IMGGO__RATE_LIMIT__PER_SECOND", "0")],
            "rate_limit.per_second",
        ),
        (&[("IMGGO__RATE_LIMIT__BURST", "0")], "rate_limit.burst"),
        (&[("IMGGO__RATE_LIMIT__BURST", "lots")], "burst"),
        (
            &[("IMGGO__NETWORK__ALLOWED_IPS", "10.0.0.0/33")],
            "allowed_ips",
        ),
        (
            &[("IMGGO__NETWORK__TRUSTED_PROXIES", "not-an-ip")],
            "trusted_proxies",
        ),
        (
            &[("IMGGO__SERVER__REQUEST_TIMEOUT", "ten seconds")],
            "request_timeout",
        ),
        (&[("IMGGO__SERVER__BIND", "localhost")], "bind"),
        (&[("IMGGO__SERVER__BINDD", "0.0.0.0:1")], "bindd"),
        (&[("IMGGO__NOPE__X", "1")], "nope"),
        (&[("IMGGO__LOG__FORMAT", "xml")], "format"),
        (&[("IMGGO__WEBHOOK__PATH", "nope")], "webhook.path"),
        (&[("IMGGO__WEBHOOK__PATH", "/:x")], "webhook.path"),
        (&[("IMGGO__WEBHOOK__PATH", "/a/{id}")], "webhook.path"),
        (&[("IMGGO__WEBHOOK__PATH", "/a/*rest")], "webhook.path"),
        (
            &[("IMGGO__RETENTION__MAX_AGE", "1000000years")],
            "retention.max_age",
        ),
        (
            &[("IMGGO__RETENTION__BATCH_SIZE", "0")],
            "retention.batch_size",
        ),
        // Partitions tile a day, and are never shorter than an hour.
        (
            &[("IMGGO__STORAGE__PARTITION_INTERVAL", "7h")],
            "storage.partition_interval",
        ),
        (
            &[("IMGGO__STORAGE__PARTITION_INTERVAL", "30m")],
            "storage.partition_interval",
        ),
        (
            &[("IMGGO__STORAGE__PARTITION_INTERVAL", "2d")],
            "storage.partition_interval",
        ),
        (
            &[("IMGGO__STORAGE__PARTITION_INTERVAL", "1h 30s")],
            "storage.partition_interval",
        ),
        // Listeners on one socket: the API is never the public listener.
        (
            &[
                ("IMGGO__SERVER__BIND", "127.0.0.1:19110"),
                ("IMGGO__API__BIND", "127.0.0.1:19110"),
            ],
            "api.bind: must not be the address of server.bind",
        ),
        (
            &[
                ("IMGGO__SERVER__BIND", "0.0.0.0:19111"),
                ("IMGGO__ADMIN__BIND", "127.0.0.1:19111"),
            ],
            "admin.bind: must not be the address of server.bind",
        ),
        (
            &[
                ("IMGGO__ADMIN__BIND", "127.0.0.1:19112"),
                ("IMGGO__API__BIND", "[::]:19112"),
            ],
            "api.bind: must not be the address of admin.bind",
        ),
    ];
    for (pairs, key) in cases {
        let msg = load_err(None, pairs);
        assert!(msg.contains(key), "{pairs:?}: {msg}");
    }
}

#[test]
fn listeners_on_different_ports_or_addresses_are_fine() {
    for pairs in [
        &[
            ("IMGGO__SERVER__BIND", "127.0.0.1:19110"),
            ("IMGGO__API__BIND", "127.0.0.1:19113"),
        ][..],
        &[
            ("IMGGO__SERVER__BIND", "127.0.0.1:19110"),
            ("IMGGO__API__BIND", "127.0.0.2:19110"),
        ],
        &[
            ("IMGGO__SERVER__BIND", "127.0.0.1:0"),
            ("IMGGO__API__BIND", "127.0.0.1:0"),
        ],
    ] {
        Settings::load_with_env(None, env(pairs)).unwrap();
    }
}

#[test]
fn unknown_keys_in_a_file_stop_start_up() {
    let f = toml_file("[server]\nmax_body = 5\n");
    assert!(load_err(Some(f.path()), &[]).contains("max_body"));
    let f = toml_file("[redact]\nrules = [{ names = [\"email\"], action = \"scramble\" }]\n");
    assert!(load_err(Some(f.path()), &[]).contains("scramble"));
    assert!(load_err(Some(Path::new("/nonexistent/imggo.toml")), &[]).contains("does not exist"));
}

const SECRET_A: &str = "whsec_aaaaaaaaaaaaaaaaaaaa";
const KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const HASH_B64: &str = "c2VjcmV0LWhhc2gta2V5LXdpdGgtZW5vdWdoLWJ5dGVzISE=";

fn secret_env(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = [
        (secrets::WEBHOOK_SECRETS, SECRET_A),
        (secrets::ENCRYPTION_KEYS, &*format!("k1:{KEY_B64}")),
        (secrets::HASH_KEY, HASH_B64),
        (secrets::DATABASE_URL, "postgres://u:hunter2pass@db/imggo"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in extra {
        if v.is_empty() {
            m.remove(*k);
        } else {
            m.insert((*k).to_owned(), (*v).to_owned());
        }
    }
    m
}

#[test]
fn debug_output_never_shows_a_secret() {
    let s = Secrets::load(&secret_env(&[])).unwrap();
    let settings = Settings::load_with_env(None, env(&[])).unwrap();
    let dbg = format!("{s:?} {settings:?} {:?}", s.keys);
    for needle in [SECRET_A, KEY_B64, HASH_B64, "hunter2pass", "whsec"] {
        assert!(!dbg.contains(needle), "{needle} leaked in {dbg}");
    }
    assert!(dbg.contains("redacted"));
}

#[test]
fn malformed_secrets_name_the_variable_never_the_value() {
    let weak = "short-secret";
    let cases: Vec<(HashMap<String, String>, &str, &str)> = vec![
        (
            secret_env(&[(secrets::WEBHOOK_SECRETS, "")]),
            secrets::WEBHOOK_SECRETS,
            "init",
        ),
        (
            secret_env(&[(secrets::WEBHOOK_SECRETS, weak)]),
            secrets::WEBHOOK_SECRETS,
            "16",
        ),
        (
            secret_env(&[(secrets::WEBHOOK_SECRETS, &format!("{SECRET_A},{weak}"))]),
            secrets::WEBHOOK_SECRETS,
            "#2",
        ),
        (
            secret_env(&[(secrets::ENCRYPTION_KEYS, "")]),
            secrets::ENCRYPTION_KEYS,
            "not set",
        ),
        (
            secret_env(&[(secrets::ENCRYPTION_KEYS, KEY_B64)]),
            secrets::ENCRYPTION_KEYS,
            "KEY_ID",
        ),
        (
            secret_env(&[(secrets::ENCRYPTION_KEYS, "k1:c2hvcnQ=")]),
            secrets::ENCRYPTION_KEYS,
            "32 bytes",
        ),
        (
            secret_env(&[(secrets::ENCRYPTION_KEYS, "k1:%%%")]),
            secrets::ENCRYPTION_KEYS,
            "base64",
        ),
        (
            secret_env(&[(
                secrets::ENCRYPTION_KEYS,
                &format!("k1:{KEY_B64},k1:{KEY_B64}"),
            )]),
            secrets::ENCRYPTION_KEYS,
            "twice",
        ),
        (
            secret_env(&[(secrets::ENCRYPTION_KEYS, &format!("bad id:{KEY_B64}"))]),
            secrets::ENCRYPTION_KEYS,
            "key id",
        ),
        (
            secret_env(&[(secrets::HASH_KEY, "c2hvcnQ=")]),
            secrets::HASH_KEY,
            "32 bytes",
        ),
        (
            secret_env(&[(secrets::HASH_KEY, "not base64!")]),
            secrets::HASH_KEY,
            "base64",
        ),
        (
            secret_env(&[(secrets::DATABASE_URL, "mysql://x")]),
            secrets::DATABASE_URL,
            "postgres://",
        ),
    ];
    for (source, var, hint) in cases {
        let msg = Secrets::load(&source).expect_err(var).to_string();
        assert!(msg.starts_with(var), "{msg}");
        assert!(msg.contains(hint), "{msg} should mention {hint}");
        for value in source.values() {
            if value.len() > 8 {
                assert!(!msg.contains(value.as_str()), "{msg} leaks a value");
            }
        }
        assert!(!msg.contains(weak));
    }
}

#[test]
fn database_url_defaults_to_the_embedded_store() {
    let s = Secrets::load(&secret_env(&[(secrets::DATABASE_URL, "")])).unwrap();
    assert_eq!(s.database_url.expose_secret(), "sqlite://data/imggo.db");
}

#[test]
fn secrets_from_files() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "{SECRET_A},whsec_bbbbbbbbbbbbbbbbbbbb").unwrap();
    let path = f.path().to_str().unwrap().to_owned();
    let source = secret_env(&[
        (secrets::WEBHOOK_SECRETS, ""),
        ("IMGGO_WEBHOOK_SECRETS_FILE", &path),
    ]);
    let loaded = WebhookSecrets::load(&source).unwrap();
    assert_eq!(loaded.len(), 2);
    assert_eq!(
        loaded.iter().next().unwrap(),
        SECRET_A.as_bytes(),
        "trailing newline trimmed"
    );

    let both = secret_env(&[("IMGGO_WEBHOOK_SECRETS_FILE", &path)]);
    assert!(WebhookSecrets::load(&both)
        .unwrap_err()
        .to_string()
        .contains("only one"));

    let missing = secret_env(&[
        (secrets::HASH_KEY, ""),
        ("IMGGO_HASH_KEY_FILE", "/nonexistent/hash"),
    ]);
    let msg = Secrets::load(&missing).unwrap_err().to_string();
    assert!(msg.starts_with("IMGGO_HASH_KEY_FILE"), "{msg}");
}

#[test]
fn mapped_ipv6_networks_become_ipv4() {
    assert_eq!(
        parse_network("::ffff:10.0.0.0/104").unwrap().to_string(),
        "10.0.0.0/8"
    );
    assert_eq!(
        parse_network("10.1.2.3/8").unwrap().to_string(),
        "10.0.0.0/8"
    );
    assert!(parse_network("10.0.0.0/8/9").is_err());
}

#[test]
fn an_unknown_redact_action_names_the_key_and_the_valid_values() {
    let f = toml_file("[[redact.rules]]\nnames = [\"email\"]\naction = \"mask\"\n");
    let msg = load_err(Some(f.path()), &[]);
    assert!(msg.contains("redact.rules[0].action"), "{msg}");
    assert!(msg.contains("`mask`"), "{msg}");
    assert!(
        msg.contains("hash, mask_last4, drop, keep"),
        "the valid values are listed: {msg}"
    );
    assert!(msg.contains(&f.path().display().to_string()), "{msg}");
    let msg = load_err(None, &[("IMGGO__LOG__FORMAT", "xml")]);
    assert!(
        msg.contains("log.format") && msg.contains("json, pretty"),
        "{msg}"
    );
    assert!(msg.contains("IMGGO__LOG__FORMAT"), "{msg}");
}

#[test]
fn an_unknown_key_from_the_environment_names_the_variable() {
    let msg = load_err(None, &[("IMGGO__RATE_LIMIT__PER_SECONDS", "5")]);
    assert!(msg.contains("IMGGO__RATE_LIMIT__PER_SECONDS"), "{msg}");
    assert!(msg.contains("rate_limit.per_seconds"), "{msg}");
    assert!(msg.contains("per_second, burst"), "{msg}");
    // A bad value too.
    let msg = load_err(None, &[("IMGGO__SERVER__REQUEST_TIMEOUT", "ten")]);
    assert!(
        msg.contains("server.request_timeout") && msg.contains("IMGGO__SERVER__REQUEST_TIMEOUT"),
        "{msg}"
    );
}

#[test]
fn an_unknown_key_in_a_file_names_the_file_by_its_absolute_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("imggo.toml"), "[server]\nmax_body = 5\n").unwrap();
    // A relative path, as typed after --config: the error must not depend
    // on knowing the directory it was typed in.
    let relative = pathdiff(dir.path().join("imggo.toml"));
    let msg = load_err(Some(&relative), &[]);
    let absolute = dir.path().join("imggo.toml").display().to_string();
    assert!(msg.contains("server.max_body"), "{msg}");
    assert!(msg.contains(&format!("in {absolute}")), "{msg}");
    let msg = load_err(Some(Path::new("no/such/imggo.toml")), &[]);
    let cwd = std::env::current_dir().unwrap();
    assert!(
        msg.contains(&cwd.join("no/such/imggo.toml").display().to_string()),
        "{msg}"
    );
}

/// `target` relative to the working directory (`../../tmp/...`).
fn pathdiff(target: std::path::PathBuf) -> std::path::PathBuf {
    let cwd = std::env::current_dir().unwrap();
    let up = cwd.components().count() - 1;
    let mut p = std::path::PathBuf::new();
    for _ in 0..up {
        p.push("..");
    }
    p.push(target.strip_prefix("/").unwrap());
    p
}

#[test]
fn durations_print_as_default_toml_writes_them() {
    let s = Settings::load_with_env(None, env(&[])).unwrap();
    let text = toml::to_string(&s).unwrap();
    for line in [
        "max_timestamp_age = \"24h\"",
        "max_age = \"30d\"",
        "purge_interval = \"1h\"",
        "shutdown_timeout = \"25s\"",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}

/// The real environment over `./.env`, as `ProcessEnv` sees them.
struct Layers {
    real: HashMap<String, String>,
    dotenv: HashMap<String, String>,
}

impl secrets::SecretSource for Layers {
    fn var(&self, name: &str) -> Option<String> {
        self.real
            .get(name)
            .or_else(|| self.dotenv.get(name))
            .cloned()
    }

    fn set_by_dotenv(&self, name: &str) -> bool {
        !self.real.contains_key(name) && self.dotenv.contains_key(name)
    }
}

#[test]
fn a_real_variable_wins_over_dotenv_in_either_form() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "whsec_from_the_file_0000").unwrap();
    let path = f.path().to_str().unwrap().to_owned();
    let map = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let first = |source: &Layers| {
        WebhookSecrets::load(source)
            .map(|w| String::from_utf8(w.iter().next().unwrap().to_vec()).unwrap())
            .map_err(|e| e.to_string())
    };
    // Real _FILE over .env's plain value.
    let layers = Layers {
        real: map(&[("IMGGO_WEBHOOK_SECRETS_FILE", &path)]),
        dotenv: map(&[("IMGGO_WEBHOOK_SECRETS", "whsec_set_by_dotenv_000000")]),
    };
    assert_eq!(first(&layers).unwrap(), "whsec_from_the_file_0000");
    // Real plain value over .env's _FILE.
    let layers = Layers {
        real: map(&[("IMGGO_WEBHOOK_SECRETS", "whsec_from_the_real_env0")]),
        dotenv: map(&[("IMGGO_WEBHOOK_SECRETS_FILE", &path)]),
    };
    assert_eq!(first(&layers).unwrap(), "whsec_from_the_real_env0");
    // Both in the same layer stays a mistake, in either layer.
    for both in [
        Layers {
            real: map(&[
                ("IMGGO_WEBHOOK_SECRETS_FILE", &path),
                ("IMGGO_WEBHOOK_SECRETS", "whsec_from_the_real_env0"),
            ]),
            dotenv: HashMap::new(),
        },
        Layers {
            real: HashMap::new(),
            dotenv: map(&[
                ("IMGGO_WEBHOOK_SECRETS_FILE", &path),
                ("IMGGO_WEBHOOK_SECRETS", "whsec_set_by_dotenv_000000"),
            ]),
        },
    ] {
        let msg = first(&both).unwrap_err();
        assert!(msg.contains("only one"), "{msg}");
        assert!(!msg.contains("whsec_"), "{msg}");
    }
}

#[test]
fn every_missing_or_malformed_secret_is_reported_at_once() {
    let source = secret_env(&[
        (secrets::WEBHOOK_SECRETS, ""),
        (secrets::ENCRYPTION_KEYS, ""),
        (secrets::HASH_KEY, "c2hvcnQ="),
        (secrets::DATABASE_URL, "mysql://u:hunter2pass@db/x"),
    ]);
    let msg = Secrets::load(&source).unwrap_err().to_string();
    for name in [
        secrets::WEBHOOK_SECRETS,
        secrets::ENCRYPTION_KEYS,
        secrets::HASH_KEY,
        secrets::DATABASE_URL,
    ] {
        assert!(msg.contains(name), "{name} missing from {msg}");
    }
    assert!(msg.contains("init"), "{msg}");
    assert!(
        !msg.contains("hunter2pass") && !msg.contains("c2hvcnQ"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");
}

#[test]
fn the_store_is_shown_by_host_port_and_database_only() {
    let label = |url: &str| secrets::database_label(&secrecy::SecretString::from(url));
    assert_eq!(
        label("sqlite://data/imggo.db"),
        "sqlite://data/imggo.db (default)"
    );
    assert_eq!(label("sqlite:///var/lib/x.db"), "sqlite:///var/lib/x.db");
    assert_eq!(
        label("sqlite:///var/lib/x.db?mode=rwc"),
        "sqlite:///var/lib/x.db"
    );
    // No user, no password (issue 21: a user name identifies someone too).
    assert_eq!(
        label("postgres://imggo:hunter2pass@db:5432/imggo"),
        "postgres://db:5432/imggo"
    );
    assert_eq!(
        label("postgres://imggo@db/imggo"),
        "postgres://db:5432/imggo"
    );
    // Unencoded `@` in a password, and password parameters.
    let shown = label("postgresql://u:p@ss@h:1/d?sslmode=require&password=hunter2pass");
    assert_eq!(shown, "postgresql://h:1/d");
    // No query parameter, known to sqlx or not.
    assert_eq!(
        label("postgres://h/d?sslpassword=hunter2pass&options=-c%20x%3Dy&zzz=leak"),
        "postgres://h:5432/d"
    );
    // A `host`/`port` parameter is where it connects: shown.
    assert_eq!(
        label("postgres:///d?host=db2&port=6432&user=alice"),
        "postgres://db2:6432/d"
    );
    let broken = label("postgres://u:hunter2pass@h:notaport/d");
    assert!(
        !broken.contains("hunter2pass") && !broken.contains("u:"),
        "{broken}"
    );
}
