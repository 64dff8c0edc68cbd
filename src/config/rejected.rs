//! A value a key cannot take, on its way from the parser that refused it
//! (which knows the value and why) through the config crate (which knows
//! the key) to [`ConfigError::Invalid`], which names both.

use super::ConfigError;
use serde::{de, Deserialize, Deserializer};
use std::fmt;

/// A value a key cannot take: what was written (never a secret) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub(super) value: String,
    pub(super) reason: String,
}

/// Starts a [`Rejected`] travelling as a serde message ([`InTransit`]).
const MARK: char = '\u{1e}';

impl Rejected {
    pub(super) fn new(value: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// As a serde error, to be read back by [`Rejected::from_message`].
    pub(super) fn into_de<E: de::Error>(self) -> E {
        E::custom(InTransit(self))
    }

    /// The [`Rejected`] an [`InTransit`] message carries; `None` for the
    /// config crate's own messages (type errors, unknown fields), which
    /// stay as they are.
    pub(super) fn from_message(message: &str) -> Option<Self> {
        let rest = message.strip_prefix(MARK)?;
        let (len, rest) = rest.split_once(':')?;
        let len: usize = len.parse().ok()?;
        if !rest.is_char_boundary(len) {
            return None;
        }
        let (value, reason) = rest.split_at(len);
        Some(Self::new(value, reason))
    }

    /// The error for `key`, the one line a broken deployment shows.
    pub(super) fn at(self, key: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            value: self.value,
            reason: self.reason,
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid value {:?}: {}", self.value, self.reason)
    }
}

impl std::error::Error for Rejected {}

/// The config crate keeps only the text of a serde error
/// (`de::Error::custom`), so a [`Rejected`] crosses it as
/// `MARK LEN ':' VALUE REASON`: the length makes the split exact whatever
/// the value holds. Only [`Rejected::from_message`] reads it.
struct InTransit(Rejected);

impl fmt::Display for InTransit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Rejected { value, reason } = &self.0;
        write!(f, "{MARK}{}:{value}{reason}", value.len())
    }
}

/// `Deserialize` for our types through their `TryFrom<String>`, with the
/// [`Rejected`] kept whole (serde's `try_from` attribute would pass on only
/// its `Display`).
macro_rules! deserialize_via_try_from {
    ($($t:ty),* $(,)?) => {$(
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::try_from(<String as serde::Deserialize>::deserialize(d)?)
                    .map_err($crate::config::Rejected::into_de)
            }
        }
    )*};
}

/// Reads the key's text and parses it with `parse`.
pub(super) fn text_with<'de, D, T>(
    d: D,
    parse: impl FnOnce(&str) -> Result<T, Rejected>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let text = String::deserialize(d)?;
    parse(&text).map_err(Rejected::into_de)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_crosses_a_message_whatever_the_value_holds() {
        for value in ["", "plain", "a:b", "\u{1e}3:x", "ü\u{1e}:", "12:34"] {
            let sent = Rejected::new(value, "why: not so");
            let message = InTransit(sent.clone()).to_string();
            assert_eq!(Rejected::from_message(&message), Some(sent), "{value:?}");
        }
        assert_eq!(Rejected::from_message("missing field `cert`"), None);
        assert_eq!(Rejected::from_message("\u{1e}99:short"), None);
    }
}
