//! Config text to typed config, with errors that name the key's path.
//!
//! Both daemons load TOML through [`parse_toml`]: an unknown key or a bad value fails with the
//! dotted path of the key (`sources[1].trace_host`), and [`Problems`] lets a `validate()` report
//! every problem at once rather than one per restart.

use serde::de::DeserializeOwned;

/// A config that cannot be used, with every reason found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid config:\n{}", .0.iter().map(|p| format!("  - {}: {}", p.path, p.message)).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// One problem with one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key, e.g. `sources[0].gpus`.
    pub path: String,
    pub message: String,
}

/// Collects problems during validation.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Adds a problem at `path` unless `ok`.
    pub fn check(&mut self, ok: bool, path: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.add(path, message);
        }
    }

    /// # Errors
    /// [`ConfigError::Invalid`] with every problem added, if any.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.0))
        }
    }
}

/// A config file: parsed with key paths in errors, then validated as a whole. Implementors
/// provide [`ConfigFile::validate`]; loading comes with it.
pub trait ConfigFile: DeserializeOwned {
    /// Every problem found, each with its key path.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing them.
    fn validate(&self) -> Result<(), ConfigError>;

    /// Parses and validates a config file's text.
    ///
    /// # Errors
    /// The key path and reason of an unknown key or bad value, or every validation problem.
    fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = parse_toml(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates a config file.
    ///
    /// # Errors
    /// As [`ConfigFile::from_toml`], or the file cannot be read.
    fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        Self::from_toml(&read_file(path)?)
    }
}

/// Reads a config file's text.
///
/// # Errors
/// [`ConfigError::Parse`] naming the file when it cannot be read.
fn read_file(path: &std::path::Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Parse {
        path: path.display().to_string(),
        message: error.to_string(),
    })
}

/// Parses TOML into `T`, naming the key at fault on error.
///
/// # Errors
/// [`ConfigError::Parse`] with the key's path (or `(document)` for a syntax error).
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|error| ConfigError::Parse {
        path: "(document)".to_owned(),
        message: error.to_string().trim().to_owned(),
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        ConfigError::Parse {
            path: if path == "." {
                "(document)".to_owned()
            } else {
                path
            },
            message: inner.message().trim().to_owned(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[allow(dead_code)]
        name: String,
        #[serde(default)]
        #[allow(dead_code)]
        inner: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        count: u32,
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let error = parse_toml::<Outer>("name = 'a'\n[[inner]]\ncount = 1\n[[inner]]\ncuont = 2\n")
            .expect_err("typo must fail");
        let text = error.to_string();
        assert!(text.starts_with("inner[1]"), "{text}");
        assert!(text.contains("cuont"), "{text}");
    }

    #[test]
    fn bad_value_is_named_with_its_path() {
        let error =
            parse_toml::<Outer>("name = 'a'\n[[inner]]\ncount = -4\n").expect_err("negative count");
        assert!(error.to_string().starts_with("inner[0].count"), "{error}");
    }

    #[test]
    fn problems_are_reported_together() {
        let mut problems = Problems::default();
        problems.add("a", "first");
        problems.check(false, "b.c", "second");
        problems.check(true, "d", "not reported");
        let text = problems.finish().expect_err("two problems").to_string();
        assert!(text.contains("a: first") && text.contains("b.c: second") && !text.contains("d:"));
    }
}
