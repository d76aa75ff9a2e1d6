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

/// The version of the record encoding this toolhost writes. Format 2 stores a workspace
/// file's chunk hashes as one base64 string, where format 1 wrote 32 numbers per hash (3x the
/// bytes); both are read.
pub const RECORD_FORMAT: u8 = 2;

/// The first tagged format, still read.
const FIRST_FORMAT: u8 = 1;

const TAG: [u8; 2] = [0x80, 0x00];

/// The longest postcard encoding of a [`RandomState`]: the seed, then two varint `u128`s.
const LEGACY_RANDOM_MAX: usize = 32 + 2 * 19;

/// Why a stored record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordFormatError {
    #[error("the record was written in format {found}, newer than this toolhost reads (up to {RECORD_FORMAT})")]
    Newer { found: u8 },
    #[error("the record (JSON, format {FIRST_FORMAT} to {RECORD_FORMAT}) does not decode")]
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
        [0x80, 0x00, FIRST_FORMAT..=RECORD_FORMAT, json @ ..] => {
            serde_json::from_slice(json).map_err(RecordFormatError::Json)
        }
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
    use sha2::{Digest, Sha256};

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
    fn workspace_changes_store_chunk_hashes_compactly_and_format_1_still_decodes() {
        use crate::contract::workspace::{FileChange, WorkspaceEntry};
        let hashes: Vec<[u8; 32]> = (0..400u32).map(|i| Sha256::digest(i.to_le_bytes()).into()).collect();
        let changes = vec![
            FileChange { path: "big.bin".into(), entry: Some(WorkspaceEntry::File { size: 1 << 20, chunks: hashes }) },
            FileChange { path: "empty".into(), entry: Some(WorkspaceEntry::File { size: 0, chunks: Vec::new() }) },
            FileChange { path: "d".into(), entry: Some(WorkspaceEntry::Dir) },
            FileChange { path: "gone".into(), entry: None },
        ];
        let current = encode_record(&changes).unwrap();
        assert_eq!(decode_record::<Vec<FileChange>>(&current).unwrap(), changes);
        assert!(current.len() < 400 * 44 + 200, "{} bytes for 400 hashes", current.len());
        // Format 1 as it was written: each hash an array of 32 numbers.
        let mut json: serde_json::Value = serde_json::from_slice(&current[3..]).unwrap();
        for (stored, change) in json.as_array_mut().unwrap().iter_mut().zip(&changes) {
            if let Some(WorkspaceEntry::File { chunks, .. }) = &change.entry {
                stored["entry"]["File"]["chunks"] = serde_json::json!(chunks);
            }
        }
        let mut format_1 = vec![0x80, 0x00, 1];
        serde_json::to_writer(&mut format_1, &json).unwrap();
        assert!(format_1.len() > 2 * current.len());
        assert_eq!(decode_record::<Vec<FileChange>>(&format_1).unwrap(), changes);
        assert_eq!(decode_record::<Vec<FileChange>>(&postcard::to_stdvec(&changes).unwrap()).unwrap(), changes);
        // A string that is not whole hashes is an error, not a truncated list.
        let broken = br#"[{"path":"a","entry":{"File":{"size":1,"chunks":"AAAA"}}}]"#;
        let mut record = vec![0x80, 0x00, RECORD_FORMAT];
        record.extend_from_slice(broken);
        assert!(matches!(decode_record::<Vec<FileChange>>(&record), Err(RecordFormatError::Json(_))));
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
