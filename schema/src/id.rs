//! [`Id`]: stable ids of messages, tasks, itinerary items and broadcasts; and [`MessageKey`],
//! the key under which a message is stored, which sorts in display order.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;

use crate::hlc::HLC_STR_LEN;
use crate::Hlc;

/// The longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// The id of a message, task, itinerary item or broadcast: chosen once by its writer, never
/// by Automerge, and unchanged by edits. weft writes 16 random bytes as 32 lowercase hex
/// digits; it accepts any 1 to [`MAX_ID_LEN`] characters of `A-Z a-z 0-9 _ -` written by other
/// clients. Ids compare as byte strings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(String);

/// A string that is not a valid [`Id`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an id: expected 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'")]
pub struct ParseIdError;

impl Id {
    /// A fresh id from the caller's random number generator (the library has no entropy of
    /// its own).
    pub fn random<R: RngCore + ?Sized>(rng: &mut R) -> Id {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        Id::from_bytes(b)
    }

    /// The id that renders these 16 bytes, for callers that derive ids deterministically.
    pub fn from_bytes(bytes: [u8; 16]) -> Id {
        use std::fmt::Write;
        let mut s = String::with_capacity(32);
        for b in bytes {
            let _ = write!(s, "{b:02x}");
        }
        Id(s)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn is_valid(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= MAX_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Id {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if Id::is_valid(s) {
            Ok(Id(s.to_owned()))
        } else {
            Err(ParseIdError)
        }
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Where a message sits in display order: `(created_at, id)`. Its string form,
/// `{created_at}_{id}`, is the message's key in the `messages` map, and the byte order of
/// those strings is display order, so Automerge's sorted map keys *are* the display order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageKey {
    /// When the message was written.
    pub created_at: Hlc,
    /// The message id.
    pub id: Id,
}

/// A string that is not a [`MessageKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a message key: expected {{created_at}}_{{id}}")]
pub struct ParseMessageKeyError;

impl fmt::Display for MessageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.created_at, self.id)
    }
}

impl FromStr for MessageKey {
    type Err = ParseMessageKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() <= HLC_STR_LEN + 1
            || !s.is_char_boundary(HLC_STR_LEN)
            || s.as_bytes()[HLC_STR_LEN] != b'_'
        {
            return Err(ParseMessageKeyError);
        }
        let created_at = s[..HLC_STR_LEN].parse().map_err(|_| ParseMessageKeyError)?;
        let id = s[HLC_STR_LEN + 1..]
            .parse()
            .map_err(|_| ParseMessageKeyError)?;
        Ok(MessageKey { created_at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids() {
        let id = Id::from_bytes([0xab; 16]);
        assert_eq!(id.as_str(), "abababababababababababababababab");
        assert_eq!(id.as_str().parse::<Id>().unwrap(), id);
        assert!("".parse::<Id>().is_err());
        assert!("a b".parse::<Id>().is_err());
        assert!("x".repeat(65).parse::<Id>().is_err());
        assert!("legacy_id-1".parse::<Id>().is_ok());
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_ne!(Id::random(&mut rng), Id::random(&mut rng));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::proptest_cases()))]
        #[test]
        fn key_order_is_display_order(
            a in (0..=crate::MAX_HLC_MS, any::<u16>(), any::<u64>(), "[a-z0-9_-]{1,64}"),
            b in (0..=crate::MAX_HLC_MS, any::<u16>(), any::<u64>(), "[a-z0-9_-]{1,64}"),
        ) {
            let mk = |(ms, c, n, id): (u64, u16, u64, String)| MessageKey {
                created_at: Hlc::new(ms, c, n).unwrap(),
                id: id.parse().unwrap(),
            };
            let (a, b) = (mk(a), mk(b));
            prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
            prop_assert_eq!(a.to_string().parse::<MessageKey>().unwrap(), a);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,120}") {
            let _ = s.parse::<MessageKey>();
            let _ = s.parse::<Id>();
        }
    }
}
