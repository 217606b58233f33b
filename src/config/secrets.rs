//! Secrets: read from the environment (or `<NAME>_FILE`), validated, and held
//! in types whose `Debug` prints nothing secret. Error messages name the
//! variable, never its value.

use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::crypto::{KeyId, KeyRing};

pub const WEBHOOK_SECRETS: &str = "IMGGO_WEBHOOK_SECRETS";
pub const ENCRYPTION_KEYS: &str = "IMGGO_ENCRYPTION_KEYS";
pub const HASH_KEY: &str = "IMGGO_HASH_KEY";
pub const DATABASE_URL: &str = "DATABASE_URL";

/// Webhook secrets shorter than this are refused as guessable.
pub const MIN_WEBHOOK_SECRET_CHARS: usize = 16;
/// The hash key must carry at least this much entropy.
pub const MIN_HASH_KEY_BYTES: usize = 32;

/// A secret that could not be loaded. Names the variable only.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct SecretError {
    pub var: String,
    pub problem: String,
    /// Neither the variable nor its `_FILE` form is set.
    pub unset: bool,
}

impl SecretError {
    fn new(var: &str, problem: impl Into<String>) -> Self {
        Self {
            var: var.to_owned(),
            problem: problem.into(),
            unset: false,
        }
    }
}

/// Where secrets are read from: the process environment, or a map in tests.
pub trait SecretSource {
    fn var(&self, name: &str) -> Option<String>;

    /// Whether `name`'s value came from `./.env` rather than the real
    /// environment. A real variable wins over anything `.env` sets, the
    /// `<NAME>_FILE` form included.
    fn set_by_dotenv(&self, _name: &str) -> bool {
        false
    }
}

/// The names `./.env` put into the process environment (set once, by
/// [`record_dotenv_names`], before anything reads a secret). Only names:
/// the values are in the environment like any other.
static FROM_DOTENV: OnceLock<HashSet<String>> = OnceLock::new();

/// Records which variables of the process environment came from `./.env`
/// (see `cli::load_dotenv`), so that [`ProcessEnv`] can tell them from real
/// ones. A second call changes nothing.
pub fn record_dotenv_names(names: HashSet<String>) {
    let _ = FROM_DOTENV.set(names);
}

/// The real process environment, with `./.env` loaded into it underneath.
pub struct ProcessEnv;

impl SecretSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn set_by_dotenv(&self, name: &str) -> bool {
        FROM_DOTENV.get().is_some_and(|names| names.contains(name))
    }
}

impl<S: std::hash::BuildHasher> SecretSource for std::collections::HashMap<String, String, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Reads `name`, or the file named by `<name>_FILE`. A real environment
/// variable (either form) hides what `./.env` says about the secret: the
/// operator set it on purpose for this run. Both forms set in the same
/// place is an error: silently preferring one hides a deployment mistake.
pub fn read(source: &dyn SecretSource, name: &str) -> Result<Option<SecretString>, SecretError> {
    let file_var = format!("{name}_FILE");
    let (mut plain, mut file) = (source.var(name), source.var(&file_var));
    if plain.is_some() && file.is_some() {
        match (source.set_by_dotenv(name), source.set_by_dotenv(&file_var)) {
            (true, false) => plain = None,
            (false, true) => file = None,
            _ => {}
        }
    }
    match (plain, file) {
        (Some(_), Some(_)) => Err(SecretError::new(
            name,
            format!("both {name} and {file_var} are set; set only one"),
        )),
        (Some(value), None) => Ok(Some(SecretString::from(value))),
        (None, Some(path)) => {
            let contents = std::fs::read_to_string(&path).map_err(|e| {
                SecretError::new(&file_var, format!("cannot read the file it names: {e}"))
            })?;
            // Files written by editors and `echo` end in a newline.
            Ok(Some(SecretString::from(
                contents.trim_end_matches(['\n', '\r']).to_owned(),
            )))
        }
        (None, None) => Ok(None),
    }
}

fn required(source: &dyn SecretSource, name: &str) -> Result<SecretString, SecretError> {
    read(source, name)?
        .filter(|s| !s.expose_secret().trim().is_empty())
        .ok_or_else(|| SecretError {
            unset: true,
            ..SecretError::new(
                name,
                format!(
                    "not set (set it or {name}_FILE; `imggo-receiver init` writes a fresh .env)"
                ),
            )
        })
}

/// The webhook signing secrets, first one current. Each is used as its UTF-8
/// bytes, as ImgGo does.
pub struct WebhookSecrets(Vec<SecretBox<[u8]>>);

impl WebhookSecrets {
    pub fn load(source: &dyn SecretSource) -> Result<Self, SecretError> {
        Self::parse(required(source, WEBHOOK_SECRETS)?.expose_secret())
    }

    pub fn parse(raw: &str) -> Result<Self, SecretError> {
        let mut out = Vec::new();
        for (i, item) in raw.split(',').map(str::trim).enumerate() {
            if item.is_empty() {
                continue;
            }
            if item.chars().count() < MIN_WEBHOOK_SECRET_CHARS {
                return Err(SecretError::new(
                    WEBHOOK_SECRETS,
                    format!(
                        "secret #{} is shorter than {MIN_WEBHOOK_SECRET_CHARS} characters; refusing a weak secret",
                        i + 1
                    ),
                ));
            }
            out.push(SecretBox::new(item.as_bytes().into()));
        }
        if out.is_empty() {
            return Err(SecretError::new(WEBHOOK_SECRETS, "holds no secret"));
        }
        Ok(Self(out))
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(|s| s.expose_secret())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookSecrets(<{} redacted>)", self.0.len())
    }
}

/// Parses `IMGGO_ENCRYPTION_KEYS`: `KEY_ID:BASE64_32_BYTES[,…]`.
pub fn load_key_ring(source: &dyn SecretSource) -> Result<KeyRing, SecretError> {
    parse_key_ring(required(source, ENCRYPTION_KEYS)?.expose_secret())
}

pub fn parse_key_ring(raw: &str) -> Result<KeyRing, SecretError> {
    let fail = |p: String| SecretError::new(ENCRYPTION_KEYS, p);
    let mut keys = Vec::new();
    for (i, item) in raw.split(',').map(str::trim).enumerate() {
        if item.is_empty() {
            continue;
        }
        let n = i + 1;
        let (id, b64) = item
            .split_once(':')
            .ok_or_else(|| fail(format!("entry #{n} is not KEY_ID:BASE64")))?;
        let id = KeyId::new(id.trim()).map_err(|why| fail(format!("entry #{n}: {why}")))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| fail(format!("key `{id}` is not valid base64")))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| fail(format!("key `{id}` must decode to exactly 32 bytes")))?;
        if keys.iter().any(|(k, _): &(KeyId, _)| k == &id) {
            return Err(fail(format!("key id `{id}` appears twice")));
        }
        keys.push((id, key));
    }
    KeyRing::new(keys).ok_or_else(|| fail("holds no key".to_owned()))
}

/// The key of the `hash` redaction HMAC.
pub struct HashKey(SecretBox<[u8]>);

impl HashKey {
    pub fn load(source: &dyn SecretSource) -> Result<Self, SecretError> {
        Self::parse(required(source, HASH_KEY)?.expose_secret())
    }

    pub fn parse(raw: &str) -> Result<Self, SecretError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map_err(|_| SecretError::new(HASH_KEY, "is not valid base64"))?;
        if bytes.len() < MIN_HASH_KEY_BYTES {
            return Err(SecretError::new(
                HASH_KEY,
                format!("must decode to at least {MIN_HASH_KEY_BYTES} bytes"),
            ));
        }
        Ok(Self(SecretBox::new(bytes.into_boxed_slice())))
    }

    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(<redacted>)")
    }
}

/// Where the embedded store lives when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/imggo.db";

/// `DATABASE_URL` (it may carry a password); unset means the embedded
/// SQLite store at [`DEFAULT_DATABASE_URL`].
pub fn database_url(source: &dyn SecretSource) -> Result<SecretString, SecretError> {
    let url = read(source, DATABASE_URL)?
        .filter(|s| !s.expose_secret().trim().is_empty())
        .unwrap_or_else(|| SecretString::from(DEFAULT_DATABASE_URL));
    let scheme_ok = {
        let u = url.expose_secret();
        ["postgres://", "postgresql://", "sqlite:"]
            .iter()
            .any(|p| u.starts_with(p))
    };
    if !scheme_ok {
        return Err(SecretError::new(
            DATABASE_URL,
            "must start with postgres://, postgresql:// or sqlite://",
        ));
    }
    Ok(url)
}

pub use super::dsn::database_label;

/// Everything `serve` needs that must stay secret.
pub struct Secrets {
    pub webhook: WebhookSecrets,
    pub keys: KeyRing,
    pub hash_key: HashKey,
    pub database_url: SecretString,
}

impl Secrets {
    /// Loads every secret, reporting every one that is missing or malformed
    /// at once: fixing them one start-up at a time wastes a deploy each.
    pub fn load(source: &dyn SecretSource) -> Result<Self, SecretErrors> {
        let webhook = WebhookSecrets::load(source);
        let keys = load_key_ring(source);
        let hash_key = HashKey::load(source);
        let database_url = database_url(source);
        match (webhook, keys, hash_key, database_url) {
            (Ok(webhook), Ok(keys), Ok(hash_key), Ok(database_url)) => Ok(Self {
                webhook,
                keys,
                hash_key,
                database_url,
            }),
            (webhook, keys, hash_key, database_url) => Err(SecretErrors(
                [
                    webhook.err(),
                    keys.err(),
                    hash_key.err(),
                    database_url.err(),
                ]
                .into_iter()
                .flatten()
                .collect(),
            )),
        }
    }
}

/// Every secret that could not be loaded; one line naming each variable,
/// never a value.
#[derive(Debug)]
pub struct SecretErrors(pub Vec<SecretError>);

impl fmt::Display for SecretErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unset, malformed): (Vec<_>, Vec<_>) = self.0.iter().partition(|e| e.unset);
        let mut parts = Vec::new();
        if let [one] = unset.as_slice() {
            parts.push(one.to_string());
        } else if !unset.is_empty() {
            let names: Vec<&str> = unset.iter().map(|e| e.var.as_str()).collect();
            parts.push(format!(
                "{} are not set (set each, or NAME_FILE; `imggo-receiver init` writes a fresh .env)",
                names.join(", ")
            ));
        }
        parts.extend(malformed.iter().map(ToString::to_string));
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for SecretErrors {}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("webhook", &self.webhook)
            .field("keys", &self.keys)
            .field("hash_key", &self.hash_key)
            .field("database_url", &"<redacted>")
            .finish()
    }
}
