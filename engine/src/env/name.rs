//! Names used as znode path segments as they are (`app_id`s). Ids that may hold any
//! character (account ids, shard users, object keys) are not checked here: they go into
//! paths and keys through [`crate::keyname::encode`].

/// Longest `app_id`, in characters (it prefixes every znode path and Redis key).
pub const APP_ID_CHARS_MAX: usize = 128;

/// Why a name was refused. The message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("longer than {max} {unit}")]
    TooLong { max: usize, unit: &'static str },
    /// `.` and `..` are path segments with a meaning of their own.
    #[error("{0:?} is not a valid name")]
    Relative(String),
    /// A character the rules do not allow.
    #[error("{0:?} is not allowed{1}")]
    BadChar(char, &'static str),
}

/// Checks a name used as one znode path segment as it is: non-empty, at most `bytes_max`
/// bytes, not `.` or `..`, no `/` and no NUL.
pub fn validate_segment(name: &str, bytes_max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > bytes_max {
        return Err(NameError::TooLong { max: bytes_max, unit: "bytes" });
    }
    if name == "." || name == ".." {
        return Err(NameError::Relative(name.to_string()));
    }
    if let Some(c) = name.chars().find(|c| matches!(c, '/' | '\0')) {
        return Err(NameError::BadChar(c, ""));
    }
    Ok(())
}

/// Checks an `app_id`: a path segment (see [`validate_segment`]) of at most
/// [`APP_ID_CHARS_MAX`] ASCII letters, digits, `_`, `-` and `.`. Used by the manifest and by
/// `Cluster::join`, so a cluster can only be joined under an id a manifest could name.
pub fn validate_app_id(id: &str) -> Result<(), NameError> {
    if id.is_empty() {
        return Err(NameError::Empty);
    }
    if id.chars().count() > APP_ID_CHARS_MAX {
        return Err(NameError::TooLong { max: APP_ID_CHARS_MAX, unit: "characters" });
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return Err(NameError::BadChar(c, " (use ASCII letters, digits, '_', '-', '.')"));
    }
    // The allowed characters exclude `/` and NUL; this adds `.`/`..`, in one place.
    validate_segment(id, APP_ID_CHARS_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_refuse_what_would_break_a_path() {
        assert!(validate_segment("alice", 8).is_ok());
        assert!(validate_segment("ünï côdé", 64).is_ok(), "any other character is fine");
        assert_eq!(validate_segment("", 8), Err(NameError::Empty));
        assert_eq!(validate_segment("abcdefghi", 8), Err(NameError::TooLong { max: 8, unit: "bytes" }));
        assert_eq!(validate_segment("..", 8), Err(NameError::Relative("..".into())));
        assert_eq!(validate_segment("a/b", 8), Err(NameError::BadChar('/', "")));
        assert_eq!(validate_segment("a\0", 8), Err(NameError::BadChar('\0', "")));
    }

    #[test]
    fn app_ids_are_segments_in_a_small_alphabet() {
        assert!(validate_app_id("MyGame_1.0-beta").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "é", "a\0"] {
            assert!(validate_app_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_app_id(&"a".repeat(APP_ID_CHARS_MAX)).is_ok());
        assert_eq!(
            validate_app_id(&"a".repeat(APP_ID_CHARS_MAX + 1)).unwrap_err().to_string(),
            "longer than 128 characters"
        );
        assert_eq!(validate_app_id("..").unwrap_err().to_string(), "\"..\" is not a valid name");
    }
}
