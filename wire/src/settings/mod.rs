//! How every part of hexroad reads its settings: durations as people write
//! them (humantime strings) and one error that names the bad key.

pub mod duration_text;

/// A setting that cannot work, named by its key.
///
/// A section's `validate` names keys within the section; the caller that
/// knows the section adds it with [`SettingError::within`], so the message a
/// person reads is `setting ingest.max_open_uploads: must be at least 1`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("setting {key}: {message}")]
pub struct SettingError {
    pub key: String,
    pub message: String,
}

impl SettingError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same error with its key placed in `section`.
    #[must_use]
    pub fn within(self, section: &str) -> Self {
        Self {
            key: format!("{section}.{}", self.key),
            ..self
        }
    }
}

/// `Ok` when `ok`, else the error for `key`: keeps each check one line.
pub fn require(ok: bool, key: &str, message: &str) -> Result<(), SettingError> {
    if ok {
        Ok(())
    } else {
        Err(SettingError::new(key, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_named_before_the_key() {
        let e = SettingError::new("max_open_uploads", "must be at least 1").within("ingest");
        assert_eq!(
            e.to_string(),
            "setting ingest.max_open_uploads: must be at least 1"
        );
    }
}
