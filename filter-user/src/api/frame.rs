//! Framing: one JSON message per line, with a limit on how long a line may
//! be. A line over the limit is read to its end and thrown away, never
//! buffered, so the connection can go on with the next line.
use std::io;

use serde::Serialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// What [`read_frame`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its `\n` (and without a `\r` before it).
    /// The bytes are in the buffer passed to [`read_frame`].
    Line,
    /// A line longer than the limit; `len` is how long it was. Its bytes
    /// have been skipped.
    TooLarge { len: usize },
    /// The peer closed the stream between two lines.
    Eof,
}

/// Reads one line into `buf` (cleared first), keeping at most `max` bytes.
/// A last line without `\n` before the end of the stream counts as a line.
pub async fn read_frame<R>(reader: &mut R, max: usize, buf: &mut Vec<u8>) -> io::Result<Frame>
where
    R: AsyncBufRead + Unpin,
{
    buf.clear();
    let mut len = 0usize;
    let mut too_large = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (len, too_large) {
                (0, _) => Frame::Eof,
                (len, true) => Frame::TooLarge { len },
                (_, false) => Frame::Line,
            });
        }
        let (chunk, used, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        len += chunk.len();
        if !too_large {
            if buf.len() + chunk.len() > max {
                too_large = true;
                *buf = Vec::new();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        reader.consume(used);
        if done {
            if too_large {
                return Ok(Frame::TooLarge { len });
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Frame::Line);
        }
    }
}

/// Writes `message` as one JSON line and flushes.
pub async fn write_frame<W, T>(writer: &mut W, message: &T) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use tokio::io::BufReader;

    use super::*;

    async fn frames(input: &[u8], max: usize) -> Vec<(Frame, Vec<u8>)> {
        // A tiny buffer so that lines span many reads.
        let mut reader = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let frame = match read_frame(&mut reader, max, &mut buf).await {
                Ok(f) => f,
                Err(e) => panic!("read: {e}"),
            };
            let eof = frame == Frame::Eof;
            out.push((frame, buf.clone()));
            if eof {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn lines_limits_and_eof() {
        let got = frames(b"abc\r\n0123456789abcdef\n\nxyz", 10).await;
        assert_eq!(
            got,
            vec![
                (Frame::Line, b"abc".to_vec()),
                (Frame::TooLarge { len: 16 }, vec![]),
                (Frame::Line, vec![]),
                (Frame::Line, b"xyz".to_vec()),
                (Frame::Eof, vec![]),
            ]
        );
        // Exactly at the limit is fine.
        let got = frames(b"0123456789\n", 10).await;
        assert_eq!(got[0], (Frame::Line, b"0123456789".to_vec()));
        // Over the limit at the end of the stream.
        let got = frames(b"0123456789ab", 10).await;
        assert_eq!(got[0], (Frame::TooLarge { len: 12 }, vec![]));
    }
}
