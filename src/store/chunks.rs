//! Content-defined chunking of snapshots: a snapshot that differs from the previous one by a
//! few bytes shares all but one or two chunks with it, so it costs a few KiB, not its size.

use sha2::{Digest, Sha256};

const MIN_CHUNK: usize = 512;
const AVG_CHUNK: usize = 2 * 1024;
/// The largest chunk a snapshot is cut into.
pub(crate) const MAX_CHUNK: usize = 16 * 1024;

/// A chunk addressed by the sha256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub hash: [u8; 32],
    pub data: Vec<u8>,
}

/// Splits `bytes` at content-defined boundaries (FastCDC 2020).
pub fn chunk_snapshot(bytes: &[u8]) -> Vec<Chunk> {
    if bytes.is_empty() {
        return Vec::new();
    }
    fastcdc::v2020::FastCDC::new(bytes, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
        .map(|c| {
            let data = bytes[c.offset..c.offset + c.length].to_vec();
            Chunk { hash: Sha256::digest(&data).into(), data }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::chunk_snapshot;

    #[test]
    fn a_small_edit_changes_few_chunks() {
        let mut state: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
        let before = chunk_snapshot(&state);
        assert_eq!(before.iter().map(|c| c.data.len()).sum::<usize>(), state.len());
        state.splice(500_000..500_000, *b"a few new bytes");
        let after = chunk_snapshot(&state);
        let old: std::collections::HashSet<_> = before.iter().map(|c| c.hash).collect();
        let new_bytes: usize = after.iter().filter(|c| !old.contains(&c.hash)).map(|c| c.data.len()).sum();
        assert!(new_bytes <= 2 * 16 * 1024, "{new_bytes} new bytes for a 15-byte insertion");
    }
}
