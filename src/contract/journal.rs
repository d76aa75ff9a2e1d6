//! The step journal's entries, and how a step's journal is stored.
//!
//! A stored journal is versioned: `[0, VERSION]` then the entries as JSON (serde with field
//! names, byte strings in base64), so a later 0.1.x can add fields (with defaults) and
//! variants without making older rows undecodable, and an entry with a field this version
//! does not know still decodes. Journals written before the format had a version are
//! postcard (positional) encodings of the same types, and still decode: a postcard journal
//! starts with its length as a varint, whose first byte is 0 only for the empty journal,
//! which is then one byte long.

use serde::{Deserialize, Serialize};

use super::http::{HttpOutcome, HttpRequestPrint};
use super::model::{ChatResponse, ModelError};
use super::state::StateError;

/// One recorded input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JournalEntry {
    WallClock {
        secs: u64,
        nanos: u32,
    },
    MonotonicClock {
        nanos: u64,
    },
    StateGet {
        namespace: String,
        key: String,
        #[serde(with = "super::bytes::state_value")]
        result: Result<Option<Vec<u8>>, StateError>,
    },
    StateSet {
        namespace: String,
        key: String,
        result: Result<(), StateError>,
    },
    StateDelete {
        namespace: String,
        key: String,
        result: Result<bool, StateError>,
    },
    StateListKeys {
        namespace: String,
        prefix: String,
        result: Result<Vec<String>, StateError>,
    },
    /// `request` is the sha256 of the serialized request, to detect a replay that asks
    /// something else.
    Model {
        model: String,
        request: String,
        result: Result<ChatResponse, ModelError>,
    },
    /// `count` wall-clock readings: `start_nanos` (since the epoch), then one nanosecond more
    /// each. A clock read in a loop costs one entry per quantum of real time, not per read.
    WallClockRun {
        start_nanos: u64,
        count: u32,
    },
    /// `count` monotonic readings from `start`, one nanosecond apart (see `WallClockRun`).
    MonotonicClockRun {
        start: u64,
        count: u32,
    },
    /// `count` reads of a key answered from the step's own view: its write of the key, or
    /// the value an earlier `StateGet` of this step recorded. No value is copied again.
    StateGetRepeat {
        namespace: String,
        key: String,
        count: u32,
    },
    /// Secure random bytes from the OS, as drawn by one or more consecutive requests.
    SecureRandom {
        #[serde(with = "super::bytes")]
        bytes: Vec<u8>,
    },
    /// One outgoing HTTP request and what it came to.
    Http {
        request: HttpRequestPrint,
        outcome: HttpOutcome,
    },
}

impl JournalEntry {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::WallClock { .. } => "wall-clock",
            Self::MonotonicClock { .. } => "monotonic-clock",
            Self::StateGet { .. } => "state.get",
            Self::StateSet { .. } => "state.set",
            Self::StateDelete { .. } => "state.delete",
            Self::StateListKeys { .. } => "state.list-keys",
            Self::Model { .. } => "model.chat",
            Self::WallClockRun { .. } => "wall-clock",
            Self::MonotonicClockRun { .. } => "monotonic-clock",
            Self::StateGetRepeat { .. } => "state.get",
            Self::SecureRandom { .. } => "secure random bytes",
            Self::Http { .. } => "http",
        }
    }

    /// How many guest requests the entry answers.
    pub(crate) fn run_len(&self) -> u32 {
        match self {
            Self::WallClockRun { count, .. }
            | Self::MonotonicClockRun { count, .. }
            | Self::StateGetRepeat { count, .. } => *count,
            _ => 1,
        }
    }

    /// Host memory the entry holds, near enough to charge it.
    pub(crate) fn approx_bytes(&self) -> usize {
        let heap = match self {
            Self::WallClock { .. }
            | Self::MonotonicClock { .. }
            | Self::WallClockRun { .. }
            | Self::MonotonicClockRun { .. } => 0,
            Self::StateGet { namespace, key, result } => {
                namespace.len() + key.len() + result.as_ref().map_or(64, |v| v.as_ref().map_or(0, Vec::len))
            }
            Self::StateSet { namespace, key, .. } | Self::StateDelete { namespace, key, .. } => {
                namespace.len() + key.len() + 64
            }
            Self::StateListKeys { namespace, prefix, result } => {
                namespace.len()
                    + prefix.len()
                    + result.as_ref().map_or(64, |keys| keys.iter().map(|k| k.len() + 24).sum())
            }
            Self::StateGetRepeat { namespace, key, .. } => namespace.len() + key.len(),
            Self::SecureRandom { bytes } => bytes.len(),
            Self::Model { .. } => postcard::to_stdvec(self).map_or(0, |b| b.len()),
            Self::Http { request, outcome } => super::http::approx_bytes(request, outcome),
        };
        std::mem::size_of::<Self>() + heap
    }
}

/// Where a tool instance's random streams stand after a step: the session seed they are
/// drawn from (a fork switches to a fresh one after its fork point) and their positions.
/// `secure` moves only in steps committed before secure randomness was journaled entropy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RandomState {
    pub seed: [u8; 32],
    pub secure: u128,
    pub insecure: u128,
}

/// The version of the stored journal encoding this toolhost writes.
pub const JOURNAL_FORMAT: u8 = 1;

/// Why a stored journal could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JournalFormatError {
    #[error("the journal was written in format {found}, newer than this toolhost reads (up to {JOURNAL_FORMAT})")]
    Newer { found: u8 },
    #[error("the journal (format {JOURNAL_FORMAT}) does not decode")]
    Json(#[source] serde_json::Error),
    #[error("the journal (postcard, before formats were versioned) does not decode")]
    Postcard(#[source] postcard::Error),
    #[error("the journal does not encode")]
    Encode(#[source] serde_json::Error),
}

/// Encodes a step's journal for the store, in the current format.
pub fn encode_journal(entries: &[JournalEntry]) -> Result<Vec<u8>, JournalFormatError> {
    let mut bytes = vec![0, JOURNAL_FORMAT];
    serde_json::to_writer(&mut bytes, entries).map_err(JournalFormatError::Encode)?;
    Ok(bytes)
}

/// Decodes a stored journal: the current format, or a postcard one written before formats
/// were versioned.
pub fn decode_journal(bytes: &[u8]) -> Result<Vec<JournalEntry>, JournalFormatError> {
    match bytes {
        [0, JOURNAL_FORMAT, json @ ..] => serde_json::from_slice(json).map_err(JournalFormatError::Json),
        [0, found, ..] => Err(JournalFormatError::Newer { found: *found }),
        legacy => postcard::from_bytes(legacy).map_err(JournalFormatError::Postcard),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::http::{HttpRequestPrint, HttpResponseRecord};
    use crate::contract::{FinishReason, Usage};

    fn entries() -> Vec<JournalEntry> {
        let response = ChatResponse {
            text: "hi".into(),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage: Usage { input_tokens: 3, output_tokens: 1 },
            model: "m".into(),
        };
        vec![
            JournalEntry::WallClockRun { start_nanos: 1_000_000, count: 3 },
            JournalEntry::StateGet { namespace: "n".into(), key: "k".into(), result: Ok(Some(vec![0, 1, 255])) },
            JournalEntry::StateSet {
                namespace: "n".into(),
                key: "k".into(),
                result: Err(StateError::Denied("no".into())),
            },
            JournalEntry::Model { model: "default".into(), request: "ab".repeat(32), result: Ok(response) },
            JournalEntry::SecureRandom { bytes: vec![7; 40] },
            JournalEntry::Http {
                request: HttpRequestPrint {
                    method: "GET".into(),
                    url: "http://x/".into(),
                    headers: "h".into(),
                    body: None,
                },
                outcome: Some(Ok(HttpResponseRecord {
                    status: 200,
                    headers: vec![("a".into(), b"b".to_vec())],
                    body: b"ok".to_vec(),
                })),
            },
        ]
    }

    #[test]
    fn the_current_format_round_trips_and_says_its_version() {
        let bytes = encode_journal(&entries()).unwrap();
        assert_eq!(bytes[..2], [0, JOURNAL_FORMAT]);
        assert_eq!(decode_journal(&bytes).unwrap(), entries());
        assert_eq!(decode_journal(&encode_journal(&[]).unwrap()).unwrap(), []);
    }

    #[test]
    fn a_journal_written_as_postcard_before_formats_had_versions_still_decodes() {
        let legacy = postcard::to_stdvec(&entries()).unwrap();
        assert_eq!(decode_journal(&legacy).unwrap(), entries());
        assert_eq!(decode_journal(&postcard::to_stdvec(&Vec::<JournalEntry>::new()).unwrap()).unwrap(), []);
    }

    #[test]
    fn an_entry_with_a_field_this_version_does_not_know_still_decodes() {
        let bytes = encode_journal(&entries()).unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(&bytes[2..]).unwrap();
        // As a newer 0.1.x would write them: a new field on an entry, on a nested response,
        // and on a request fingerprint.
        json[1]["StateGet"]["observed_at"] = serde_json::json!(123);
        json[3]["Model"]["result"]["Ok"]["cached_tokens"] = serde_json::json!(9);
        json[5]["Http"]["request"]["trailers"] = serde_json::json!("t");
        let mut newer = vec![0, JOURNAL_FORMAT];
        newer.extend(serde_json::to_vec(&json).unwrap());
        assert_eq!(decode_journal(&newer).unwrap(), entries());
    }

    #[test]
    fn a_newer_or_broken_journal_is_a_typed_error() {
        assert!(matches!(
            decode_journal(&[0, JOURNAL_FORMAT + 1, b'[', b']']),
            Err(JournalFormatError::Newer { found: 2 })
        ));
        assert!(matches!(decode_journal(&[0, JOURNAL_FORMAT, b'{']), Err(JournalFormatError::Json(_))));
        assert!(matches!(decode_journal(&[5, 200]), Err(JournalFormatError::Postcard(_))));
    }
}
