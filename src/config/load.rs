//! Loading: the `config` crate merges the TOML file, the `BUCKETFTP__…`
//! environment and the command line ([`Overrides`]), in that order of
//! precedence from low to high; serde turns the merge into [`Config`] in
//! one pass (a refused value comes back with its key, see `rejected`);
//! `validate` then applies the rules that involve more than one key.

use super::rejected::Rejected;
use super::users::check_unique_names;
use super::{Config, ConfigError, StorageEngine};
use config::{Map, Value, ValueKind};
use std::collections::BTreeMap;
use std::path::Path;

/// Loads file (optional) + environment + command line, then validates.
pub fn load(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let mut builder = defaults()?;
    if let Some(file) = file {
        builder = builder.add_source(
            config::File::from(file)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    let env_source = config::Environment::with_prefix("BUCKETFTP")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        // Lists from the environment are comma-separated.
        .list_separator(",")
        .with_list_parse_key("server.proxy_protocol_from")
        .source(Some(
            env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ));
    let merged = builder
        .add_source(env_source)
        .add_source(overrides.clone())
        .build()
        .map_err(ConfigError::Load)?;
    overrides.check_tls(&merged)?;
    deserialize(merged)
}

/// Parses TOML text alone (for `check-config` tests and fuzzing).
pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
    let merged = defaults()?
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .map_err(ConfigError::Load)?;
    deserialize(merged)
}

/// The bottom layer. Only `storage.url` is here: its default is resolved
/// against the working directory, which can fail, so it is parsed (and
/// reported) like a written value. Every other default is the serde
/// default next to its field.
fn defaults() -> Result<config::ConfigBuilder<config::builder::DefaultState>, ConfigError> {
    config::Config::builder()
        .set_default("storage.url", "")
        .map_err(ConfigError::Load)
}

fn deserialize(merged: config::Config) -> Result<Config, ConfigError> {
    let config: Config = merged.try_deserialize().map_err(invalid_or_load)?;
    validate(config)
}

/// A value one of our parsers refused becomes [`ConfigError::Invalid`]
/// under the key the config crate recorded; its own errors (wrong type,
/// unknown key, missing key, unreadable file) stay as they are.
fn invalid_or_load(error: config::ConfigError) -> ConfigError {
    if let config::ConfigError::At {
        error: inner,
        key: Some(key),
        ..
    } = &error
    {
        if let config::ConfigError::Message(message) = inner.as_ref() {
            if let Some(rejected) = Rejected::from_message(message) {
                return rejected.at(dotted(key));
            }
        }
    }
    ConfigError::Load(error)
}

/// The config crate writes a field after a list index without a dot
/// (`users[2]password_hash`); the keys in our messages have always been
/// `users[2].password_hash`, as a reader writes them.
fn dotted(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == ']' && chars.peek().is_some_and(|next| !matches!(next, '.' | '[')) {
            out.push('.');
        }
    }
    out
}

/// The rules that involve more than one key; each single value was checked
/// as it was read.
fn validate(mut config: Config) -> Result<Config, ConfigError> {
    let server = &mut config.server;
    // Half of max_sessions at most, so connections that never log in
    // cannot take the places of those that do.
    server.max_unauthenticated = server
        .max_unauthenticated
        .min((server.max_sessions / 2).max(1));
    if !server.proxy_protocol && !server.proxy_protocol_from.trusted.is_empty() {
        return Err(Rejected::new(
            server.proxy_protocol_from.written(),
            "needs server.proxy_protocol = true",
        )
        .at("server.proxy_protocol_from"));
    }
    let storage = &config.storage;
    let smallest = crate::memory_budget::part_reservation(storage.part_size) as u64;
    if storage.memory_budget.bytes() < smallest {
        return Err(Rejected::new(
            storage.memory_budget.written(),
            format!("must hold at least one transfer: storage.part_size + 1MiB = {smallest} bytes"),
        )
        .at("storage.memory_budget"));
    }
    if storage.engine == StorageEngine::UnftpSbeGcs && storage.url.scheme() != "gs" {
        return Err(Rejected::new(
            "unftp-sbe-gcs",
            format!("only serves gs:// storage, not {}://", storage.url.scheme()),
        )
        .at("storage.engine"));
    }
    check_unique_names(&config.users)?;
    let events = &config.events;
    // The credential header is only ever sent to a webhook.
    if let (Some(_), Some((name, value))) = (&events.webhook_url, events.credential()) {
        // Never echo the value: it is a credential.
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(Rejected::new("<redacted>", "not a valid HTTP header value")
                .at("events.auth_value"));
        }
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(
                Rejected::new(name, "not a valid HTTP header name").at("events.auth_header")
            );
        }
    }
    Ok(config)
}

/// Command-line values, each under the dotted key it replaces: the top
/// layer of the merge, so a flag is parsed, checked and reported exactly
/// like the key it stands for (`--listen nope` names `server.listen`).
#[derive(Clone, Default)]
pub struct Overrides {
    /// `(key path, value)`, in the order given.
    values: Vec<(Vec<String>, String)>,
}

impl Overrides {
    /// Sets the dotted `key` (`server.listen`) to `value`.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.values
            .push((key.split('.').map(str::to_string).collect(), value.into()));
    }

    /// Sets the object_store option `name` of `storage.url`; the name is
    /// taken as it is (it is not split at dots).
    pub fn set_storage_option(&mut self, name: &str, value: impl Into<String>) {
        self.values.push((
            vec!["storage".into(), "options".into(), name.to_string()],
            value.into(),
        ));
    }

    fn get(&self, key: &[&str]) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(path, _)| path.iter().map(String::as_str).eq(key.iter().copied()))
            .map(|(_, value)| value.as_str())
    }

    /// `--tls-implicit-listen` adds a listener to `[tls]`; without a
    /// certificate in the file or environment it is the flag that is wrong
    /// (rather than `[tls]` that misses `cert`).
    fn check_tls(&self, merged: &config::Config) -> Result<(), ConfigError> {
        let Some(addr) = self.get(&["tls", "implicit_listen"]) else {
            return Ok(());
        };
        let tls = merged.get_table("tls").unwrap_or_default();
        if tls.contains_key("cert") || tls.contains_key("key") {
            return Ok(());
        }
        Err(
            Rejected::new(addr, "needs a certificate: set tls.cert and tls.key")
                .at("tls.implicit_listen"),
        )
    }
}

/// Lists the keys only: a storage option may be a credential.
impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.values.iter().map(|(path, _)| path.join(".")))
            .finish()
    }
}

impl config::Source for Overrides {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    /// Nested tables, so the config crate merges them key by key (a flat
    /// `storage.options.NAME` key would be parsed as a path, dots and all).
    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        let mut root = Map::new();
        for (path, value) in &self.values {
            insert(&mut root, path, value);
        }
        Ok(root)
    }
}

fn insert(table: &mut Map<String, Value>, path: &[String], value: &str) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), Value::new(None, value));
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| Value::new(None, Map::<String, Value>::new()));
            if !matches!(entry.kind, ValueKind::Table(_)) {
                *entry = Value::new(None, Map::<String, Value>::new());
            }
            if let ValueKind::Table(inner) = &mut entry.kind {
                insert(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_LISTEN;
    use crate::permissions::Permission;

    fn hash() -> String {
        crate::passwords::hash_password("pw").unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        let c = from_toml("").unwrap();
        assert_eq!(c.server.listen, DEFAULT_LISTEN);
        assert_eq!(c.server.passive_ports, 50000..=50100);
        assert_eq!(c.storage.url.scheme(), "file");
        assert_eq!(c.storage.part_size, 8 << 20);
    }

    #[test]
    fn errors_name_key_and_value() {
        let cases = [
            ("[server]\nlisten = \"nope\"", "server.listen", "nope"),
            (
                "[server]\npassive_ports = \"9-3\"",
                "server.passive_ports",
                "9-3",
            ),
            (
                "[server]\nidle_timeout = \"soon\"",
                "server.idle_timeout",
                "soon",
            ),
            (
                "[storage]\npart_size = \"1MiB\"",
                "storage.part_size",
                "1MiB",
            ),
            ("[log]\nformat = \"xml\"", "log.format", "xml"),
            (
                "[storage]\ncontent_type = \"guess\"",
                "storage.content_type",
                "guess",
            ),
            (
                "[events]\nwebhook_url = \"ftp://x\"",
                "events.webhook_url",
                "ftp://x",
            ),
            (
                "[tls]\ncert = \"/nonexistent\"\nkey = \"/nonexistent\"",
                "tls.cert",
                "/nonexistent",
            ),
        ];
        for (text, key, value) in cases {
            let err = from_toml(text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(value), "{text}: {err}");
        }
    }

    /// The whole line, for every kind of value: what operators and their
    /// scripts see must not change with the code behind it.
    #[test]
    fn messages_are_exact() {
        let cases = [
            (
                "[server]\nlisten = \"nope\"",
                "invalid value \"nope\" for server.listen: expected IP:PORT, e.g. 0.0.0.0:2121",
            ),
            (
                "[server]\ngreeting = \"a\\nb\"",
                "invalid value \"a\\nb\" for server.greeting: must be one line",
            ),
            (
                "[server]\npassive_host = \"::1\"",
                "invalid value \"::1\" for server.passive_host: PASV can only advertise IPv4; IPv6 clients use EPSV, which needs no host",
            ),
            (
                "[server]\nmax_sessions = 0",
                "invalid value \"0\" for server.max_sessions: must be at least 1",
            ),
            (
                "[http]\nlisten = \"x\"",
                "invalid value \"x\" for http.listen: expected IP:PORT, e.g. 0.0.0.0:2121",
            ),
            (
                "[log]\nlevel = \"bucketftp=loud\"",
                "invalid value \"bucketftp=loud\" for log.level: not a valid log filter (e.g. \"info\")",
            ),
            (
                "[storage]\npart_size = \"6GiB\"",
                "invalid value \"6GiB\" for storage.part_size: must be at most 5GiB (the S3 maximum part size)",
            ),
            (
                "[storage]\nmemory_budget = \"8MiB\"",
                "invalid value \"8MiB\" for storage.memory_budget: must hold at least one transfer: storage.part_size + 1MiB = 9437184 bytes",
            ),
            (
                "[storage]\nengine = \"unftp-sbe-gcs\"\nurl = \"memory://\"",
                "invalid value \"unftp-sbe-gcs\" for storage.engine: only serves gs:// storage, not memory://",
            ),
            (
                "[storage]\nengine = \"gcs\"",
                "invalid value \"gcs\" for storage.engine: expected \"object_store\" or \"unftp-sbe-gcs\"",
            ),
            (
                "[tls]\ncert = \"Cargo.toml\"\nkey = \"Cargo.toml\"\nrequired = \"some\"",
                "invalid value \"some\" for tls.required: expected none, accounts or all",
            ),
            (
                "[auth]\nanonymous_permissions = [\"list\", \"fly\"]",
                "invalid value \"fly\" for auth.anonymous_permissions: unknown permission",
            ),
            (
                "[auth]\nlockout_period = \"1 fortnight\"",
                "invalid value \"1 fortnight\" for auth.lockout_period: expected a duration like 30s or 10m (unknown time unit \"fortnight\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations))",
            ),
            (
                "[[users]]\nname = \"a\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$z1k5hpBXE+02OvwaYol/Dg$t3vWYUFxRTkVqiPulDTftezdsRSMJTGVzM0u5GRLr50\"\n[[users]]\nname = \"b c\"",
                "invalid value \"b c\" for users[1].name: must be non-empty, without spaces or ':'",
            ),
            (
                "[events]\nwebhook_url = \"http://127.0.0.1:1/\"\nauth_header = \"bad header\"\nauth_value = \"s\"",
                "invalid value \"bad header\" for events.auth_header: not a valid HTTP header name",
            ),
            (
                "[events]\nauth_value_file = \"/nonexistent\"",
                "invalid value \"/nonexistent\" for events.auth_value_file: cannot read: No such file or directory (os error 2)",
            ),
        ];
        for (text, expected) in cases {
            let err = from_toml(text).unwrap_err().to_string();
            assert_eq!(err, expected, "{text}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = from_toml("[server]\nlisten_addr = \"x\"").unwrap_err();
        assert!(format!("{:?}", err).contains("listen_addr"), "{err:?}");
    }

    #[test]
    fn plaintext_passwords_are_refused_without_echo() {
        let text = "[[users]]\nname = \"alice\"\npassword_hash = \"hunter2\"";
        let err = from_toml(text).unwrap_err().to_string();
        assert!(
            err.contains("users[0].password_hash") && err.contains("hash-password"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn users_parse() {
        let text = format!(
            "[[users]]\nname = \"cam\"\npassword_hash = \"{}\"\nhome = \"/cams/1\"\npermissions = [\"write\", \"mkdir\"]\nallowed_ips = [\"10.0.0.0/8\", \"::1\"]",
            hash()
        );
        let c = from_toml(&text).unwrap();
        let u = &c.users[0];
        assert!(u.permissions.allows(Permission::Write) && !u.permissions.allows(Permission::Read));
        assert_eq!(u.allowed_networks.len(), 2);
        let dup = format!("{text}\n{}", &text);
        assert!(from_toml(&dup)
            .unwrap_err()
            .to_string()
            .contains("duplicate"));
    }

    #[test]
    fn environment_overrides_the_file() {
        let env: BTreeMap<String, String> = [
            (
                "BUCKETFTP__SERVER__LISTEN".to_string(),
                "127.0.0.1:2200".to_string(),
            ),
            (
                "BUCKETFTP__STORAGE__OPTIONS__AWS_REGION".to_string(),
                "eu-west-1".to_string(),
            ),
        ]
        .into();
        let c = load(None, &env, &Overrides::default()).unwrap();
        assert_eq!(c.server.listen.port(), 2200);
        assert_eq!(
            c.storage.options.get("aws_region").map(String::as_str),
            Some("eu-west-1")
        );
        let mut flags = Overrides::default();
        flags.set("server.listen", "127.0.0.1:2300");
        assert_eq!(load(None, &env, &flags).unwrap().server.listen.port(), 2300);
        let mut implicit = Overrides::default();
        implicit.set("tls.implicit_listen", "127.0.0.1:990");
        let err = load(None, &env, &implicit).unwrap_err();
        assert!(err.to_string().contains("tls.implicit_listen"), "{err}");
    }

    /// Flags are parsed and reported as the keys they stand for, and a
    /// storage option keeps its name whatever it holds.
    #[test]
    fn flags_are_keys() {
        let env = BTreeMap::new();
        let mut flags = Overrides::default();
        flags.set("server.passive_ports", "60000-50000");
        assert_eq!(
            load(None, &env, &flags).unwrap_err().to_string(),
            "invalid value \"60000-50000\" for server.passive_ports: expected LOW-HIGH, e.g. 50000-50100"
        );
        let mut flags = Overrides::default();
        flags.set("storage.url", "memory://");
        flags.set_storage_option("Odd.Name", "1");
        flags.set("http.listen", "off");
        let c = load(None, &env, &flags).unwrap();
        assert_eq!(c.storage.url.as_str(), "memory://");
        assert_eq!(
            c.storage.options.get("Odd.Name").map(String::as_str),
            Some("1")
        );
        assert_eq!(c.http.listen, None);
        let mut implicit = Overrides::default();
        implicit.set("tls.implicit_listen", "nope");
        assert_eq!(
            load(None, &env, &implicit).unwrap_err().to_string(),
            "invalid value \"nope\" for tls.implicit_listen: needs a certificate: set tls.cert and tls.key"
        );
    }

    #[test]
    fn proxy_protocol_keys() {
        assert_eq!(from_toml("").unwrap().server.proxy_protocol(), None);
        let c = from_toml(
            "[server]\nproxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\", \"192.0.2.7\"]",
        )
        .unwrap();
        let on = c.server.proxy_protocol().unwrap();
        assert!(on.trusts("10.1.2.3".parse().unwrap()));
        assert!(on.trusts("192.0.2.7".parse().unwrap()));
        assert!(!on.trusts("192.0.2.8".parse().unwrap()));
        let anywhere = from_toml("[server]\nproxy_protocol = true").unwrap();
        assert!(anywhere
            .server
            .proxy_protocol()
            .unwrap()
            .trusts("203.0.113.1".parse().unwrap()));
        for (text, value) in [
            (
                "[server]\nproxy_protocol = true\nproxy_protocol_from = [\"lb.example\"]",
                "lb.example",
            ),
            (
                "[server]\nproxy_protocol_from = [\"10.0.0.0/8\"]",
                "10.0.0.0/8",
            ),
        ] {
            let err = from_toml(text).unwrap_err().to_string();
            assert!(
                err.contains("server.proxy_protocol_from") && err.contains(value),
                "{err}"
            );
        }
        // From the environment, a comma-separated list.
        let env: BTreeMap<String, String> = [
            (
                "BUCKETFTP__SERVER__PROXY_PROTOCOL".to_string(),
                "true".to_string(),
            ),
            (
                "BUCKETFTP__SERVER__PROXY_PROTOCOL_FROM".to_string(),
                "10.0.0.0/8,127.0.0.1/32".to_string(),
            ),
        ]
        .into();
        let c = load(None, &env, &Overrides::default()).unwrap();
        assert_eq!(c.server.proxy_protocol().unwrap().trusted.len(), 2);
    }

    #[test]
    fn max_unauthenticated_is_capped_at_half_the_sessions() {
        let c = from_toml("[server]\nmax_sessions = 10\nmax_unauthenticated = 200").unwrap();
        assert_eq!(c.server.max_unauthenticated, 5);
        let c = from_toml("[server]\nmax_sessions = 1\nmax_unauthenticated = 200").unwrap();
        assert_eq!(c.server.max_unauthenticated, 1);
    }

    #[test]
    fn keys_after_an_index_get_their_dot() {
        assert_eq!(dotted("users[2]password_hash"), "users[2].password_hash");
        assert_eq!(dotted("users[2].home"), "users[2].home");
        assert_eq!(dotted("a[1][2]b"), "a[1][2].b");
        assert_eq!(dotted("server.listen"), "server.listen");
    }
}
