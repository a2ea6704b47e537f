//! Settings loading shared by every program: defaults < TOML file (`--config`) < environment.
//!
//! Environment names are the program's prefix plus the setting in upper case (`AUTH_BCRYPT_COST`),
//! a few well-known names are read without a prefix (`DATABASE_URL`), and any of them may instead be
//! given as `NAME_FILE`, a path whose content is the value, as Kubernetes mounts secrets.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The exit code for a bad configuration (`EX_USAGE` from sysexits.h).
pub const EXIT_BAD_CONFIG: i32 = 64;

/// Where a program's settings come from.
#[derive(Debug, Clone)]
pub struct SettingsSource {
    prefix: String,
    unprefixed: Vec<String>,
    file: Option<PathBuf>,
    environment: Vec<(String, String)>,
}

impl SettingsSource {
    /// Settings named `{prefix}{SETTING}` plus the given unprefixed names, read from this process's
    /// environment.
    pub fn new(prefix: &str, unprefixed: &[&str]) -> Self {
        Self {
            prefix: prefix.to_owned(),
            unprefixed: unprefixed.iter().map(|name| (*name).to_owned()).collect(),
            file: None,
            environment: std::env::vars().collect(),
        }
    }

    /// Reads a TOML file between the defaults and the environment.
    pub fn with_file(mut self, file: Option<&Path>) -> Self {
        self.file = file.map(Path::to_path_buf);
        self
    }

    /// Replaces the process environment, so tests can feed the loader a map.
    pub fn with_environment<K: Into<String>, V: Into<String>>(
        mut self,
        environment: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.environment = environment
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }

    /// Loads and validates the settings; `T` supplies the defaults through `#[serde(default)]`.
    pub fn load<T>(&self) -> Result<T, SettingsError>
    where
        T: DeserializeOwned + Validate,
    {
        let mut figment = Figment::new();
        if let Some(file) = &self.file {
            if !file.is_file() {
                return Err(SettingsError::new(
                    "--config",
                    format!("no such file {}", file.display()),
                ));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let settings: T = figment
            .merge(self.environment_provider())
            .merge(self.file_secrets()?)
            .extract()
            .map_err(|error| self.describe(error))?;
        settings.validate()?;
        Ok(settings)
    }

    /// The environment name of a setting, as users see it in messages.
    pub fn env_name(&self, setting: &str) -> String {
        let upper = setting.replace('.', "__").to_uppercase();
        if self.unprefixed.contains(&upper) {
            upper
        } else {
            format!("{}{upper}", self.prefix)
        }
    }

    fn environment_provider(&self) -> EnvMap {
        let mut dict = Dict::new();
        for (name, value) in &self.environment {
            if name.ends_with("_FILE") {
                continue;
            }
            if let Some(key) = self.setting_name(name) {
                dict.insert(key, value.parse().expect("parsing a value is infallible"));
            }
        }
        EnvMap {
            name: format!("environment variable(s) {}*", self.prefix),
            dict,
        }
    }

    /// Settings given as `NAME_FILE`: read verbatim (minus one trailing newline) and never parsed,
    /// so a secret is always a string.
    fn file_secrets(&self) -> Result<EnvMap, SettingsError> {
        let mut dict = Dict::new();
        for (name, path) in &self.environment {
            let Some(base) = name.strip_suffix("_FILE") else {
                continue;
            };
            let Some(key) = self.setting_name(base) else {
                continue;
            };
            if self.environment.iter().any(|(other, _)| other == base) {
                return Err(SettingsError::new(
                    name,
                    format!("set either {base} or {name}, not both"),
                ));
            }
            let content = std::fs::read_to_string(path)
                .map_err(|error| SettingsError::new(name, format!("cannot read {path}: {error}")))?;
            let value = content.strip_suffix('\n').unwrap_or(&content);
            dict.insert(key, Value::from(value.to_owned()));
        }
        Ok(EnvMap {
            name: "files named by *_FILE variables".to_owned(),
            dict,
        })
    }

    fn setting_name(&self, env_name: &str) -> Option<String> {
        let key = if self.unprefixed.iter().any(|name| name == env_name) {
            env_name
        } else {
            env_name.strip_prefix(&self.prefix)?
        };
        (!key.is_empty()).then(|| key.to_lowercase())
    }

    fn describe(&self, error: figment::Error) -> SettingsError {
        let setting = error.path.join(".");
        let origin = error
            .metadata
            .as_ref()
            .map(|metadata| metadata.name.to_string())
            .unwrap_or_default();
        let name = if setting.is_empty() {
            "configuration".to_owned()
        } else if origin.contains("TOML") {
            format!("{setting} (in {})", origin)
        } else {
            self.env_name(&setting)
        };
        SettingsError::new(&name, error.kind.to_string())
    }
}

/// A provider over a fixed map, so the loader reads the environment it was given, not the process's.
struct EnvMap {
    name: String,
    dict: Dict,
}

impl Provider for EnvMap {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone()).interpolater(|_, path| path.join("."))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let nested = self
            .dict
            .iter()
            .map(|(key, value)| {
                let path: Vec<&str> = key.split("__").collect();
                nest(&path, value.clone())
            })
            .fold(Dict::new(), merge_dicts);
        Ok(Profile::Default.collect(nested))
    }
}

fn nest(path: &[&str], value: Value) -> Dict {
    let mut dict = Dict::new();
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            dict.insert((*first).to_owned(), Value::from(nest(rest, value)));
        }
    }
    dict
}

fn merge_dicts(mut into: Dict, from: Dict) -> Dict {
    for (key, value) in from {
        let merged = match (into.remove(&key), value) {
            (Some(Value::Dict(_, old)), Value::Dict(_, new)) => Value::from(merge_dicts(old, new)),
            (_, value) => value,
        };
        into.insert(key, merged);
    }
    into
}

/// Reads a list given either as a list (`[a, b]`, or a TOML array) or as one comma-separated
/// string (`a,b`), the way such lists are usually written in an environment variable.
pub fn list_or_comma_separated<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum List {
        Items(Vec<String>),
        Joined(String),
    }
    Ok(match List::deserialize(deserializer)? {
        List::Items(items) => items,
        List::Joined(joined) => joined
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Checks that go beyond types (ranges, combinations), run once at load.
pub trait Validate {
    /// Returns the first invalid setting.
    fn validate(&self) -> Result<(), SettingsError>;
}

/// One bad setting: the program prints it as one line and exits with [`EXIT_BAD_CONFIG`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SettingsError {
    /// The setting as the user names it (an environment variable or a TOML key).
    pub setting: String,
    /// What is wrong with it.
    pub problem: String,
}

impl SettingsError {
    /// A problem with one named setting.
    pub fn new(setting: &str, problem: impl Into<String>) -> Self {
        Self {
            setting: setting.to_owned(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.setting, self.problem)
    }
}

/// Prints the error as one line on stderr and exits with [`EXIT_BAD_CONFIG`], before any port is bound.
pub fn exit_bad_config(error: &SettingsError) -> ! {
    eprintln!("error: {error}");
    std::process::exit(EXIT_BAD_CONFIG)
}

/// Where a program runs; production turns on the strict checks (no ephemeral keys, no resets).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// A developer's machine.
    #[default]
    Development,
    /// Automated tests.
    Test,
    /// A real deployment.
    Production,
}

#[cfg(test)]
mod tests;
