//! How the stores encode a step's other columns (outcome, state writes, random position,
//! workspace changes) and the pending-step record: one versioned format for every backend.
//!
//! A record is `[0x80, 0x00, VERSION]` then the value as JSON (field names, byte strings in
//! base64), so a later 0.1.x can add fields (with defaults) and variants without making older
//! rows undecodable, and a field this version does not know is ignored. Rows written before
//! the format had a version are postcard and still decode. The tag cannot start a postcard
//! value as postcard writes them: those start with an enum variant (0 or 1 here) or a
//! canonical varint (never `0x80` then `0x00`). The random position is the exception: its
//! postcard form starts with the raw 32-byte seed, so it is told apart by length instead
//! (postcard's is at most 70 bytes, the tagged JSON always longer).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::RandomState;

/// The version of the record encoding this toolhost writes.
pub const RECORD_FORMAT: u8 = 1;

const TAG: [u8; 2] = [0x80, 0x00];

/// The longest postcard encoding of a [`RandomState`]: the seed, then two varint `u128`s.
const LEGACY_RANDOM_MAX: usize = 32 + 2 * 19;

/// Why a stored record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordFormatError {
    #[error("the record was written in format {found}, newer than this toolhost reads (up to {RECORD_FORMAT})")]
    Newer { found: u8 },
    #[error("the record (format {RECORD_FORMAT}) does not decode")]
    Json(#[source] serde_json::Error),
    #[error("the record (postcard, before formats were versioned) does not decode")]
    Postcard(#[source] postcard::Error),
    #[error("the record does not encode")]
    Encode(#[source] serde_json::Error),
}

/// Encodes `value` for the store, in the current format.
pub fn encode_record<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, RecordFormatError> {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(&[TAG[0], TAG[1], RECORD_FORMAT]);
    serde_json::to_writer(&mut bytes, value).map_err(RecordFormatError::Encode)?;
    Ok(bytes)
}

/// Decodes a stored record: the current format, or postcard written before formats had
/// versions. Not for [`RandomState`]: see [`decode_random`].
pub fn decode_record<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordFormatError> {
    match bytes {
        [0x80, 0x00, RECORD_FORMAT, json @ ..] => serde_json::from_slice(json).map_err(RecordFormatError::Json),
        [0x80, 0x00, found, ..] => Err(RecordFormatError::Newer { found: *found }),
        legacy => postcard::from_bytes(legacy).map_err(RecordFormatError::Postcard),
    }
}

/// Decodes a stored random position, which postcard wrote seed first (see the module docs).
pub fn decode_random(bytes: &[u8]) -> Result<RandomState, RecordFormatError> {
    if bytes.len() <= LEGACY_RANDOM_MAX {
        return postcard::from_bytes(bytes).map_err(RecordFormatError::Postcard);
    }
    decode_record(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ToolFailure;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Outcome {
        Output(String),
        Failed(ToolFailure),
    }

    #[test]
    fn records_round_trip_and_say_their_version() {
        let outcome = Outcome::Failed(ToolFailure::Denied("no".into()));
        let bytes = encode_record(&outcome).unwrap();
        assert_eq!(bytes[..3], [0x80, 0x00, RECORD_FORMAT]);
        assert_eq!(decode_record::<Outcome>(&bytes).unwrap(), outcome);
        let writes: Vec<(String, u64)> = vec![("a".into(), 1)];
        assert_eq!(decode_record::<Vec<(String, u64)>>(&encode_record(&writes).unwrap()).unwrap(), writes);
    }

    #[test]
    fn postcard_records_from_before_versions_still_decode() {
        // An output of one byte, and 255 writes: postcard bytes that begin like other tags.
        let one = Outcome::Output("1".into());
        assert_eq!(decode_record::<Outcome>(&postcard::to_stdvec(&one).unwrap()).unwrap(), one);
        let many: Vec<u8> = vec![7; 255];
        assert_eq!(decode_record::<Vec<u8>>(&postcard::to_stdvec(&many).unwrap()).unwrap(), many);
        let empty: Vec<u8> = Vec::new();
        assert_eq!(decode_record::<Vec<u8>>(&postcard::to_stdvec(&empty).unwrap()).unwrap(), empty);
    }

    #[test]
    fn random_positions_decode_whatever_their_seed_starts_with() {
        for random in [
            RandomState { seed: [0; 32], secure: 0, insecure: 0 },
            RandomState { seed: [0x80; 32], secure: u128::MAX, insecure: 5 },
            RandomState {
                seed: [0x80, 0x00, RECORD_FORMAT, 0x7b].repeat(8).try_into().unwrap(),
                secure: 1,
                insecure: 2,
            },
        ] {
            let legacy = postcard::to_stdvec(&random).unwrap();
            assert!(legacy.len() <= LEGACY_RANDOM_MAX);
            assert_eq!(decode_random(&legacy).unwrap(), random);
            let current = encode_record(&random).unwrap();
            assert!(current.len() > LEGACY_RANDOM_MAX);
            assert_eq!(decode_random(&current).unwrap(), random);
        }
    }

    #[test]
    fn a_field_added_later_is_ignored_and_a_newer_format_is_a_typed_error() {
        let mut newer = encode_record(&RandomState::default()).unwrap();
        newer.truncate(newer.len() - 1);
        newer.extend_from_slice(br#","drawn_at":7}"#);
        assert_eq!(decode_random(&newer).unwrap(), RandomState::default());
        assert!(matches!(
            decode_record::<Outcome>(&[0x80, 0x00, RECORD_FORMAT + 1, b'{']),
            Err(RecordFormatError::Newer { .. })
        ));
        assert!(matches!(
            decode_record::<Outcome>(&[0x80, 0x00, RECORD_FORMAT, b'{']),
            Err(RecordFormatError::Json(_))
        ));
    }
}
