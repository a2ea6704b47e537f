use std::io::Write;

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(default)]
struct Example {
    listen: String,
    cost: u32,
    database_url: String,
    environment: Environment,
    nested: Nested,
    #[serde(deserialize_with = "list_or_comma_separated")]
    hosts: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
struct Nested {
    depth: u8,
}

impl Default for Example {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            cost: 12,
            database_url: "postgres://localhost/auth".into(),
            environment: Environment::Development,
            nested: Nested::default(),
            hosts: Vec::new(),
        }
    }
}

impl Validate for Example {
    fn validate(&self) -> Result<(), SettingsError> {
        if !(4..=31).contains(&self.cost) {
            return Err(SettingsError::new("TEST_COST", "must be between 4 and 31"));
        }
        Ok(())
    }
}

fn source(env: &[(&str, &str)]) -> SettingsSource {
    SettingsSource::new("TEST_", &["DATABASE_URL"]).with_environment(env.iter().copied())
}

#[test]
fn defaults_apply_when_nothing_is_set() {
    assert_eq!(source(&[]).load::<Example>().unwrap(), Example::default());
}

#[test]
fn environment_overrides_file_which_overrides_defaults() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "listen = \"127.0.0.1:1\"\ncost = 10\n[nested]\ndepth = 3").unwrap();
    let settings: Example = source(&[("TEST_COST", "11"), ("UNRELATED", "x")])
        .with_file(Some(file.path()))
        .load()
        .unwrap();
    assert_eq!(settings.listen, "127.0.0.1:1");
    assert_eq!(settings.cost, 11);
    assert_eq!(settings.nested.depth, 3);
}

#[test]
fn unprefixed_names_and_nested_names_are_read() {
    let settings: Example = source(&[
        ("DATABASE_URL", "postgres://db/x"),
        ("TEST_NESTED__DEPTH", "7"),
        ("TEST_ENVIRONMENT", "production"),
    ])
    .load()
    .unwrap();
    assert_eq!(settings.database_url, "postgres://db/x");
    assert_eq!(settings.nested.depth, 7);
    assert_eq!(settings.environment, Environment::Production);
}

#[test]
fn file_secrets_are_read_verbatim_without_the_trailing_newline() {
    let mut secret = tempfile::NamedTempFile::new().unwrap();
    writeln!(secret, "12345").unwrap();
    let path = secret.path().to_str().unwrap();
    let settings: Example = source(&[("DATABASE_URL_FILE", path)]).load().unwrap();
    assert_eq!(settings.database_url, "12345");
}

#[test]
fn a_value_and_its_file_together_are_refused() {
    let error = source(&[("DATABASE_URL", "a"), ("DATABASE_URL_FILE", "/nonexistent")])
        .load::<Example>()
        .unwrap_err();
    assert_eq!(error.setting, "DATABASE_URL_FILE");
}

#[test]
fn an_unreadable_secret_file_names_the_variable() {
    let error = source(&[("TEST_LISTEN_FILE", "/nonexistent/secret")])
        .load::<Example>()
        .unwrap_err();
    assert_eq!(error.setting, "TEST_LISTEN_FILE");
    assert!(error.problem.contains("/nonexistent/secret"), "{error}");
}

#[test]
fn a_wrong_type_names_the_environment_variable() {
    let error = source(&[("TEST_COST", "lots")]).load::<Example>().unwrap_err();
    assert_eq!(error.setting, "TEST_COST");
    assert!(
        error
            .to_string()
            .starts_with("invalid configuration: TEST_COST: "),
        "{error}"
    );
}

#[test]
fn a_wrong_type_in_the_file_names_the_key_and_file() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "cost = \"many\"").unwrap();
    let error = source(&[])
        .with_file(Some(file.path()))
        .load::<Example>()
        .unwrap_err();
    assert!(error.setting.starts_with("cost (in TOML file"), "{error}");
}

#[test]
fn an_unknown_environment_value_is_refused() {
    let error = source(&[("TEST_ENVIRONMENT", "staging")])
        .load::<Example>()
        .unwrap_err();
    assert_eq!(error.setting, "TEST_ENVIRONMENT");
}

#[test]
fn validation_runs_after_loading() {
    let error = source(&[("TEST_COST", "3")]).load::<Example>().unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid configuration: TEST_COST: must be between 4 and 31"
    );
}

#[test]
fn a_missing_config_file_is_an_error() {
    let error = source(&[])
        .with_file(Some(Path::new("/nonexistent.toml")))
        .load::<Example>()
        .unwrap_err();
    assert_eq!(error.setting, "--config");
}

#[test]
fn a_list_is_read_from_brackets_or_from_commas() {
    for given in ["[a:26379, b:26379]", "a:26379,b:26379", " a:26379 , b:26379 ,"] {
        let loaded: Example = source(&[("TEST_HOSTS", given)]).load().unwrap();
        assert_eq!(loaded.hosts, ["a:26379", "b:26379"], "{given}");
    }
    let one: Example = source(&[("TEST_HOSTS", "a:26379")]).load().unwrap();
    assert_eq!(one.hosts, ["a:26379"]);
}
