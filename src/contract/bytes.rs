//! Byte strings in the stored encodings: base64 text in a human-readable format (the JSON
//! journal), a plain sequence of bytes otherwise (postcard, as `Vec<u8>` always encoded), so
//! one type definition reads both the current and the legacy journal.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Borrowed bytes, serialized as described above.
struct Out<'a>(&'a [u8]);

impl Serialize for Out<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.serialize_str(&STANDARD.encode(self.0)) } else { self.0.serialize(s) }
    }
}

/// Owned bytes, deserialized as described above.
struct In(Vec<u8>);

impl<'de> Deserialize<'de> for In {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            STANDARD.decode(text).map(In).map_err(D::Error::custom)
        } else {
            Vec::<u8>::deserialize(d).map(In)
        }
    }
}

pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    Out(bytes).serialize(s)
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    In::deserialize(d).map(|b| b.0)
}

/// A state read's result, its value as bytes.
pub(super) mod state_value {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{In, Out};
    use crate::contract::StateError;

    pub(in crate::contract) fn serialize<S: Serializer>(
        value: &Result<Option<Vec<u8>>, StateError>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        value.as_ref().map(|v| v.as_deref().map(Out)).serialize(s)
    }

    pub(in crate::contract) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Result<Option<Vec<u8>>, StateError>, D::Error> {
        let value: Result<Option<In>, StateError> = Deserialize::deserialize(d)?;
        Ok(value.map(|v| v.map(|b| b.0)))
    }
}

/// An optional byte string (a state write's value; `None` deletes).
pub(crate) mod optional {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{In, Out};

    pub(crate) fn serialize<S: Serializer>(value: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        value.as_deref().map(Out).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<In>::deserialize(d)?.map(|b| b.0))
    }
}

/// sha256 hashes (a workspace file's chunks): in a human-readable format, one base64 string of
/// the hashes end to end (43 bytes a hash; record format 1 wrote an array of 32 numbers per
/// hash, about 110 bytes, and that still decodes); a sequence of 32-byte arrays otherwise.
pub(crate) mod hashes {
    use std::fmt;

    use base64::Engine as _;
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::STANDARD;

    pub(crate) fn serialize<S: Serializer>(hashes: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&STANDARD.encode(hashes.as_flattened()))
        } else {
            hashes.serialize(s)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        if d.is_human_readable() { d.deserialize_any(Hashes) } else { Vec::<[u8; 32]>::deserialize(d) }
    }

    /// Either form a human-readable record holds.
    struct Hashes;

    impl<'de> Visitor<'de> for Hashes {
        type Value = Vec<[u8; 32]>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("sha256 hashes end to end in base64, or an array of 32-byte arrays")
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<Self::Value, E> {
            let bytes = STANDARD.decode(text).map_err(E::custom)?;
            match bytes.as_chunks::<32>() {
                (hashes, []) => Ok(hashes.to_vec()),
                _ => Err(E::invalid_length(bytes.len(), &self)),
            }
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut hashes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(hash) = seq.next_element::<[u8; 32]>()? {
                hashes.push(hash);
            }
            Ok(hashes)
        }
    }
}
