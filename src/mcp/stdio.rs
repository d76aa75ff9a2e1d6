//! The stdio transport's front door: reads newline-delimited JSON-RPC, answers the lines that
//! are not JSON-RPC messages itself (a `-32700` parse error, or a `-32600` invalid request
//! for non-messages and lines over the size limit, all with `id: null` unless the message
//! had one), and hands the rest to rmcp over an in-memory pipe. rmcp alone would drop such
//! lines without an answer. Replies from both go out whole lines at a time.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Reads lines of at most `max` bytes (a longer one is drained to its end and reported as
/// `Err(len)`), without ever buffering more than `max`.
struct LineReader<R> {
    inner: BufReader<R>,
    max: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    async fn next(&mut self) -> std::io::Result<Option<Result<Vec<u8>, usize>>> {
        let mut line = Vec::new();
        let mut len = 0usize;
        loop {
            let chunk = self.inner.fill_buf().await?;
            if chunk.is_empty() {
                return Ok(match len {
                    0 => None,
                    _ if len > self.max => Some(Err(len)),
                    _ => Some(Ok(line)),
                });
            }
            let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(at) => (&chunk[..at], at + 1),
                None => (chunk, chunk.len()),
            };
            let ends = done > part.len();
            len += part.len();
            if len <= self.max {
                line.extend_from_slice(part);
            } else {
                line = Vec::new();
            }
            self.inner.consume(done);
            if ends {
                return Ok(Some(if len > self.max { Err(len) } else { Ok(line) }));
            }
        }
    }
}

/// What to do with one incoming line.
fn triage(line: &[u8]) -> Option<Result<(), String>> {
    let text = line.strip_suffix(b"\r").unwrap_or(line);
    if text.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let message: serde_json::Value = match serde_json::from_slice(text) {
        Ok(message) => message,
        Err(e) => return Some(Err(error_line(serde_json::Value::Null, -32700, &format!("parse error: {e}")))),
    };
    if message.get("jsonrpc").and_then(serde_json::Value::as_str) != Some("2.0") {
        let id = message.get("id").cloned().unwrap_or(serde_json::Value::Null);
        return Some(Err(error_line(id, -32600, "invalid request: not a JSON-RPC 2.0 message")));
    }
    Some(Ok(()))
}

fn error_line(id: serde_json::Value, code: i64, message: &str) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

/// Pumps `read` into `to_rmcp` and `from_rmcp` (plus our own error replies) into `write`,
/// until the client closes its end and rmcp has written its last reply.
pub(super) async fn pump<R, W, RR, RW>(
    read: R,
    write: W,
    from_rmcp: RR,
    mut to_rmcp: RW,
    max: usize,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    RR: AsyncRead + Unpin + Send + 'static,
    RW: AsyncWrite + Unpin + Send + 'static,
{
    let (replies, mut outgoing) = mpsc::channel::<String>(64);

    let ours = replies.clone();
    let forward_replies = tokio::spawn(async move {
        let mut lines = BufReader::new(from_rmcp).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if ours.send(line).await.is_err() {
                break;
            }
        }
    });

    let writer = tokio::spawn(async move {
        let mut write = write;
        while let Some(mut line) = outgoing.recv().await {
            line.push('\n');
            write.write_all(line.as_bytes()).await?;
            write.flush().await?;
        }
        std::io::Result::Ok(())
    });

    let mut lines = LineReader { inner: BufReader::new(read), max };
    let result = loop {
        match lines.next().await {
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
            Ok(Some(Err(len))) => {
                tracing::warn!(bytes = len, limit = max, "dropping an oversized stdio message");
                let message = format!("the message is {len} bytes; the limit is {max}");
                let _ = replies.send(error_line(serde_json::Value::Null, -32600, &message)).await;
            }
            Ok(Some(Ok(line))) => match triage(&line) {
                None => {}
                Some(Err(reply)) => {
                    tracing::warn!("answering a stdio line that is not JSON-RPC");
                    let _ = replies.send(reply).await;
                }
                Some(Ok(())) => {
                    let sent = async {
                        to_rmcp.write_all(&line).await?;
                        to_rmcp.write_all(b"\n").await?;
                        to_rmcp.flush().await
                    };
                    if let Err(e) = sent.await {
                        break Err(e);
                    }
                }
            },
        }
    };
    // The client is done: let rmcp see the end, finish its replies, and stop.
    let _ = to_rmcp.shutdown().await;
    drop(to_rmcp);
    drop(replies);
    let _ = forward_replies.await;
    let written = writer.await.map_err(std::io::Error::other)?;
    result.and(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_drained_and_reported() {
        let input = format!("short\n{}\nafter\nlast", "x".repeat(100));
        let mut lines = LineReader { inner: BufReader::with_capacity(8, input.as_bytes()), max: 10 };
        assert_eq!(lines.next().await.unwrap(), Some(Ok(b"short".to_vec())));
        assert_eq!(lines.next().await.unwrap(), Some(Err(100)));
        assert_eq!(lines.next().await.unwrap(), Some(Ok(b"after".to_vec())));
        assert_eq!(lines.next().await.unwrap(), Some(Ok(b"last".to_vec())));
        assert_eq!(lines.next().await.unwrap(), None);
    }

    #[test]
    fn non_messages_get_json_rpc_errors() {
        assert!(triage(b"  ").is_none());
        assert!(triage(br#"{"jsonrpc":"2.0","id":1,"method":"x"}"#).unwrap().is_ok());
        let parse = triage(br#"{"jsonrpc":"#).unwrap().unwrap_err();
        assert!(parse.contains("-32700"), "{parse}");
        let invalid = triage(br#"{"id":7}"#).unwrap().unwrap_err();
        let invalid: serde_json::Value = serde_json::from_str(&invalid).unwrap();
        assert_eq!(invalid["error"]["code"], -32600);
        assert_eq!(invalid["id"], 7);
    }
}
