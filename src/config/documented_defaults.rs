//! The defaults as the documents state them agree with the code: the
//! README's configuration table (every key, every default it writes), the
//! example configurations, the Helm chart's values and the Kubernetes
//! ConfigMap. A default changed in the code fails here until the documents
//! say the same; a deployment file that sets a key away from its default
//! names it in [`DEVIATIONS`] with the reason.
//!
//! "Agrees" is judged by the loader itself: a key written with the
//! documented value must give the same [`Config`] as the key left out.

use super::{
    from_toml, AuthConfig, Config, EventsConfig, HttpConfig, LogConfig, ServerConfig,
    StorageConfig, TlsConfig, UserConfig,
};
use serde::de::{self, Deserialize, Deserializer, Visitor};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A valid hash (the examples' "change-me"), for `[[users]]` entries.
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$z1k5hpBXE+02OvwaYol/Dg$t3vWYUFxRTkVqiPulDTftezdsRSMJTGVzM0u5GRLr50";

/// Keys a deployment file sets away from the default, on purpose.
const DEVIATIONS: &[(&str, &str, &str)] = &[
    (
        "docs/examples/s3.toml",
        "server.listen",
        "a server reached from other hosts",
    ),
    (
        "docs/examples/s3.toml",
        "server.passive_ports",
        "a range small enough to list port by port in a Service",
    ),
    (
        "docs/examples/gcs.toml",
        "server.listen",
        "a server reached from other hosts",
    ),
    (
        "docs/examples/azure.toml",
        "server.listen",
        "a server reached from other hosts",
    ),
    (
        "deploy/config.toml",
        "server.listen",
        "a container's port is reached from outside it",
    ),
    (
        "deploy/config.toml",
        "server.passive_ports",
        "the ports the image EXPOSEs and the Service lists",
    ),
    (
        "deploy/config.toml",
        "http.listen",
        "probes and Prometheus reach the container from outside",
    ),
    (
        "deploy/config.toml",
        "log.format",
        "container logs go to a collector",
    ),
    (
        "deploy/kubernetes/configmap.yaml",
        "server.listen",
        "a pod's port is reached from outside it",
    ),
    (
        "deploy/kubernetes/configmap.yaml",
        "server.passive_ports",
        "the ports service.yaml lists",
    ),
    (
        "deploy/kubernetes/configmap.yaml",
        "server.active_mode",
        "PORT from a pod through NAT rarely works",
    ),
    (
        "deploy/kubernetes/configmap.yaml",
        "http.listen",
        "probes and Prometheus reach the pod from outside",
    ),
    (
        "deploy/kubernetes/configmap.yaml",
        "log.format",
        "container logs go to a collector",
    ),
    (
        "deploy/kubernetes/configmap.yaml",
        "storage.memory_budget",
        "half the memory limit in deployment.yaml",
    ),
    (
        "helm/bucketftp/values.yaml",
        "server.passive_ports",
        "a range small enough to list port by port in a Service",
    ),
    (
        "helm/bucketftp/values.yaml",
        "server.active_mode",
        "PORT from a pod through NAT rarely works",
    ),
    (
        "helm/bucketftp/values.yaml",
        "log.format",
        "container logs go to a collector",
    ),
    (
        "helm/bucketftp/values.yaml",
        "tls.required",
        "once a chart user enables TLS, accounts use it",
    ),
];

/// Keys whose value is the deployment's own business (where the data
/// lives, who logs in): there is no default to agree with.
fn deployment_specific(key: &str) -> bool {
    key == "storage.url" || key.starts_with("storage.options") || key.starts_with("users[]")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A configuration with `key` set to `value` (TOML) when given, and with
/// whatever else the key's section needs to load.
fn toml_for(key: &str, value: Option<&str>) -> String {
    let (section, field) = key
        .rsplit_once('.')
        .unwrap_or_else(|| panic!("{key}: no section"));
    let mut text = match section {
        "users[]" => format!("[[users]]\nname = \"u\"\npassword_hash = \"{HASH}\"\n"),
        "tls" => format!("[tls]\ncert = \"{ROOT}/Cargo.toml\"\nkey = \"{ROOT}/Cargo.toml\"\n"),
        _ => format!("[{section}]\n"),
    };
    if let Some(value) = value {
        text.push_str(&format!("{field} = {value}\n"));
    }
    text
}

/// Whether `key = value` loads to the same configuration as no `key`.
fn is_default(key: &str, value: &str) -> Result<bool, String> {
    let without = from_toml(&toml_for(key, None)).map_err(|e| format!("{key}: {e}"))?;
    let with = from_toml(&toml_for(key, Some(value)))
        .map_err(|e| format!("{key} = {value}: {}", crate::errors::error_chain(&e)))?;
    Ok(with == without)
}

/// A scalar as written in a table cell or YAML, as a TOML value: numbers,
/// booleans, lists, tables and quoted strings as they are, bare words quoted.
fn as_toml(text: &str) -> String {
    let text = text.trim();
    let literal = text == "true"
        || text == "false"
        || (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        || text.starts_with(['[', '{', '"']);
    if literal {
        text.to_string()
    } else {
        format!("{text:?}")
    }
}

/// `(key, default)` per README row and key; the default is `None` where
/// the table says it in words (`—`, "bucket default").
fn readme_table() -> Vec<(String, Option<String>)> {
    let readme = read("README.md");
    let start = readme
        .find("| key | default | meaning |")
        .expect("README configuration table");
    let mut rows = Vec::new();
    for line in readme[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let keys: Vec<&str> = cells[1].split(" / ").map(|k| k.trim_matches('`')).collect();
        let defaults: Vec<&str> = cells[2].split(" / ").collect();
        let section = keys[0]
            .rsplit_once('.')
            .map(|(s, _)| s)
            .unwrap_or_else(|| panic!("README key without a section: {line}"));
        for (i, key) in keys.iter().enumerate() {
            let key = if key.contains('.') {
                key.to_string()
            } else {
                format!("{section}.{key}")
            };
            let default = match defaults.len() {
                1 => defaults[0],
                n if n == keys.len() => defaults[i],
                _ => panic!(
                    "README row with {} keys and {} defaults: {line}",
                    keys.len(),
                    defaults.len()
                ),
            };
            let literal = default
                .strip_prefix('`')
                .and_then(|rest| rest.split_once('`'))
                .map(|(value, _)| value.to_string());
            rows.push((key, literal));
        }
    }
    rows
}

/// Records the field names serde's derive knows for a struct.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

fn fields_of<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // Fails by design once the names are recorded.
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// Every key the loader accepts, as the README writes it.
fn accepted_keys() -> Vec<String> {
    let sections: [(&str, &[&str]); 8] = [
        ("server", fields_of::<ServerConfig>()),
        ("http", fields_of::<HttpConfig>()),
        ("log", fields_of::<LogConfig>()),
        ("storage", fields_of::<StorageConfig>()),
        ("tls", fields_of::<TlsConfig>()),
        ("auth", fields_of::<AuthConfig>()),
        ("users", fields_of::<UserConfig>()),
        ("events", fields_of::<EventsConfig>()),
    ];
    let mut names: Vec<&str> = sections.iter().map(|(s, _)| *s).collect();
    let mut top = fields_of::<Config>().to_vec();
    names.sort_unstable();
    top.sort_unstable();
    assert_eq!(names, top, "a section of Config is missing here");
    sections
        .iter()
        .flat_map(|(section, fields)| {
            let section: &str = if *section == "users" {
                "users[]"
            } else {
                section
            };
            fields.iter().map(move |f| format!("{section}.{f}"))
        })
        .collect()
}

#[test]
fn the_readme_table_lists_every_key_once() {
    let documented: Vec<String> = readme_table().into_iter().map(|(k, _)| k).collect();
    let accepted = accepted_keys();
    assert!(accepted.len() > 50, "{accepted:?}");
    for key in &accepted {
        let n = documented.iter().filter(|d| *d == key).count();
        assert_eq!(n, 1, "{key} is in the README table {n} times");
    }
    for key in &documented {
        assert!(
            accepted.contains(key),
            "README documents {key}, which the loader refuses"
        );
    }
}

#[test]
fn the_readme_defaults_are_the_defaults() {
    let mut checked = 0;
    for (key, default) in readme_table() {
        let Some(default) = default else { continue };
        let value = as_toml(&default);
        assert_eq!(
            is_default(&key, &value),
            Ok(true),
            "README says {key} defaults to {default}"
        );
        checked += 1;
    }
    assert!(checked > 40, "only {checked} defaults checked");
}

/// `(section.key, TOML value)` per assignment of a TOML file's config
/// sections (`[storage.options]` and `[[users]]` are deployment-specific).
fn toml_assignments(text: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).to_string();
            if line.starts_with("[[") {
                section.push_str("[]");
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once(" = ")
            .unwrap_or_else(|| panic!("not key = value: {line}"));
        out.push((format!("{section}.{key}"), without_comment(value)));
    }
    out
}

/// A TOML value without a trailing `# comment` (a `#` inside a string stays).
fn without_comment(value: &str) -> String {
    let mut in_string = false;
    for (i, c) in value.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '#' if !in_string => return value[..i].trim().to_string(),
            _ => {}
        }
    }
    value.trim().to_string()
}

/// The keys values.yaml writes into the gateway's file: the `server`,
/// `log`, `storage` and `auth` maps as they are (see the chart's
/// `bucketftp.configToml`), and the few values the chart translates.
fn chart_assignments(yaml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut block = "";
    let mut passive = (String::new(), String::new());
    for line in yaml.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            let (key, value) = line.split_once(':').expect("top-level key");
            block = key;
            if key == "shutdownGraceSeconds" {
                out.push((
                    "server.shutdown_grace".to_string(),
                    format!("\"{}s\"", value.trim()),
                ));
            }
            continue;
        }
        // Two spaces: a key of the block; deeper lines belong to a key.
        let Some(entry) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) else {
            continue;
        };
        let (key, value) = entry.split_once(':').expect("key: value");
        let value = value.trim();
        match (block, key) {
            ("server" | "log" | "storage" | "auth", _) if !value.is_empty() => {
                out.push((format!("{block}.{key}"), as_toml(value)));
            }
            ("passivePorts", "start") => passive.0 = value.to_string(),
            ("passivePorts", "end") => passive.1 = value.to_string(),
            ("tls", "required") => out.push(("tls.required".into(), as_toml(value))),
            ("tls", "requireCloseNotify") => {
                out.push(("tls.require_close_notify".into(), as_toml(value)))
            }
            _ => {}
        }
    }
    out.push((
        "server.passive_ports".to_string(),
        format!("\"{}-{}\"", passive.0, passive.1),
    ));
    out
}

/// The TOML the ConfigMap carries under `config.toml: |`.
fn configmap_toml(yaml: &str) -> String {
    let start = yaml.find("config.toml: |").expect("config.toml key");
    yaml[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn deployment_files_keep_the_defaults_they_restate() {
    let mut files: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for name in ["local", "s3", "gcs", "azure"] {
        let path = format!("docs/examples/{name}.toml");
        files.push((path.clone(), toml_assignments(&read(&path))));
    }
    files.push((
        "deploy/config.toml".into(),
        toml_assignments(&read("deploy/config.toml")),
    ));
    let configmap = "deploy/kubernetes/configmap.yaml";
    files.push((
        configmap.into(),
        toml_assignments(&configmap_toml(&read(configmap))),
    ));
    let values = "helm/bucketftp/values.yaml";
    files.push((values.into(), chart_assignments(&read(values))));
    let mut checked = 0;
    for (file, assignments) in &files {
        assert!(!assignments.is_empty(), "{file}: nothing read");
        for (key, value) in assignments {
            if deployment_specific(key) {
                continue;
            }
            let deliberate = DEVIATIONS.iter().any(|(f, k, _)| f == file && k == key);
            let default = is_default(key, value).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(
                default != deliberate,
                "{file}: {key} = {value} {}",
                if deliberate {
                    "is listed as a deviation but is the default: drop it from DEVIATIONS"
                } else {
                    "is not the default: restate the default, or list it in DEVIATIONS with why"
                }
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} values checked");
    for (file, key, _) in DEVIATIONS {
        assert!(
            files
                .iter()
                .any(|(f, a)| f == file && a.iter().any(|(k, _)| k == key)),
            "{file} no longer sets {key}: drop it from DEVIATIONS"
        );
    }
}
