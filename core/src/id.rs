//! Identifiers: documents, devices and content addresses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Prefix of an automerge-repo document URL (`automerge:<id>`).
const AUTOMERGE_URL_PREFIX: &str = "automerge:";

/// A document id: 16 random bytes.
///
/// Its text form is the bs58check encoding of the bytes, the form `@automerge/automerge-repo`
/// uses, so a document keeps one id across Rust devices, the relay and JavaScript clients.
/// Parsing accepts the bare id and the `automerge:<id>` URL.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DocId(#[serde(with = "serde_bytes_array16")] [u8; 16]);

impl DocId {
    /// The raw bytes of the id.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        DocId(bytes)
    }

    /// A new random id from `rng` (the engine never draws randomness itself).
    pub fn random(rng: &mut impl rand::RngCore) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        DocId(bytes)
    }

    /// The raw bytes of the id.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The `automerge:<id>` URL of this document.
    pub fn url(&self) -> String {
        format!("{AUTOMERGE_URL_PREFIX}{self}")
    }
}

/// Why a string is not a document id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseIdError {
    /// Not valid base58 or the checksum does not match.
    #[error("{input:?} is not a valid id: not bs58check-encoded")]
    Encoding {
        /// The rejected text (shortened).
        input: String,
    },
    /// Decoded to the wrong number of bytes.
    #[error("{input:?} is not a valid id: expected {expected} bytes, got {actual}")]
    Length {
        /// The rejected text (shortened).
        input: String,
        /// The number of bytes an id of this kind has.
        expected: usize,
        /// The number of bytes the text decoded to.
        actual: usize,
    },
}

fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

impl FromStr for DocId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bare = s.strip_prefix(AUTOMERGE_URL_PREFIX).unwrap_or(s);
        // bs58check of 16 bytes is at most 28 characters; refuse long input before decoding.
        if bare.is_empty() || bare.len() > 40 {
            return Err(ParseIdError::Encoding { input: shorten(s) });
        }
        let bytes = bs58::decode(bare)
            .with_check(None)
            .into_vec()
            .map_err(|_| ParseIdError::Encoding { input: shorten(s) })?;
        let arr: [u8; 16] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| ParseIdError::Length {
                input: shorten(s),
                expected: 16,
                actual: bytes.len(),
            })?;
        Ok(DocId(arr))
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).with_check().into_string())
    }
}

impl fmt::Debug for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocId({self})")
    }
}

/// A device id: the blake3 fingerprint of the device's public key (its TLS certificate's
/// SubjectPublicKeyInfo), so it can be checked against the key a connection presents.
///
/// Text form: base58 (no checksum) of the 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(#[serde(with = "serde_bytes_array32")] [u8; 32]);

impl DeviceId {
    /// The id of the device whose public key (DER SubjectPublicKeyInfo) is `spki_der`.
    pub fn from_public_key(spki_der: &[u8]) -> Self {
        DeviceId(*blake3::hash(spki_der).as_bytes())
    }

    /// The raw fingerprint.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        DeviceId(bytes)
    }

    /// The raw fingerprint.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for DeviceId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 64 {
            return Err(ParseIdError::Encoding { input: shorten(s) });
        }
        let bytes = bs58::decode(s)
            .into_vec()
            .map_err(|_| ParseIdError::Encoding { input: shorten(s) })?;
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| ParseIdError::Length {
                input: shorten(s),
                expected: 32,
                actual: bytes.len(),
            })?;
        Ok(DeviceId(arr))
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

/// A blake3 content address (of a stored chunk, a checkpoint, ...).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// The blake3 hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ContentHash(*blake3::hash(bytes).as_bytes())
    }

    /// Wrap raw hash bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        ContentHash(bytes)
    }

    /// The raw hash bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

macro_rules! serde_bytes_array {
    ($name:ident, $n:literal) => {
        mod $name {
            use serde::{Deserialize, Deserializer, Serializer};

            pub(super) fn serialize<S: Serializer>(v: &[u8; $n], s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(v)
            }

            pub(super) fn deserialize<'de, D: Deserializer<'de>>(
                d: D,
            ) -> Result<[u8; $n], D::Error> {
                let buf: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
                buf.as_slice().try_into().map_err(|_| {
                    serde::de::Error::invalid_length(buf.len(), &concat!($n, " bytes"))
                })
            }
        }
    };
}
serde_bytes_array!(serde_bytes_array16, 16);
serde_bytes_array!(serde_bytes_array32, 32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_id_round_trips_and_accepts_urls() {
        let id = DocId::from_bytes([7; 16]);
        let text = id.to_string();
        assert_eq!(text.parse::<DocId>().unwrap(), id);
        assert_eq!(id.url().parse::<DocId>().unwrap(), id);
        assert!(id.url().starts_with("automerge:"));
    }

    #[test]
    fn doc_id_reads_automerge_repo_urls() {
        // The example URL in automerge-repo's own type docs and tests.
        let id: DocId = "automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu".parse().unwrap();
        assert_eq!(id.to_string(), "4NMNnkMhL8jXrdJ9jamS58PAVdXu");
        assert!("automerge:badbadbad".parse::<DocId>().is_err());
    }

    #[test]
    fn doc_id_rejects_bad_text() {
        let good = DocId::from_bytes([1; 16]).to_string();
        let mut bad_checksum = good.clone();
        let last = bad_checksum.pop().unwrap();
        bad_checksum.push(if last == '2' { '3' } else { '2' });
        for input in ["", "0OIl", "automerge:", &bad_checksum, &"z".repeat(500)] {
            assert!(input.parse::<DocId>().is_err(), "{input:?} parsed");
        }
        let short = bs58::encode([1u8; 8]).with_check().into_string();
        assert!(matches!(
            short.parse::<DocId>(),
            Err(ParseIdError::Length { actual: 8, .. })
        ));
    }

    #[test]
    fn device_id_round_trips() {
        let id = DeviceId::from_public_key(b"some public key");
        assert_eq!(id.to_string().parse::<DeviceId>().unwrap(), id);
        assert!("abc".parse::<DeviceId>().is_err());
    }

    #[test]
    fn ids_serialize_as_msgpack_bin() {
        let id = DocId::from_bytes([9; 16]);
        let bytes = rmp_serde::to_vec(&id).unwrap();
        assert_eq!(bytes.len(), 2 + 16); // bin8 header + payload
        assert_eq!(rmp_serde::from_slice::<DocId>(&bytes).unwrap(), id);
        assert!(rmp_serde::from_slice::<DocId>(
            &rmp_serde::to_vec(&serde_bytes::Bytes::new(&[1, 2])).unwrap()
        )
        .is_err());
    }
}
