//! Reading the queue stream: newline-delimited JSON [`QueueFrame`]s arriving in chunks
//! of any size. Lines are gathered in a bounded buffer (a line over [`MAX_LINE`] ends
//! the connection: the service never sends one, so the stream is broken or hostile),
//! a line that is not a frame is skipped (a newer service may send frame types this
//! agent does not know), and a stream that stays silent for longer than the heartbeat
//! timeout is given up. Nothing is buffered beyond the current line.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use postern_proto::relay::QueueFrame;
use tokio::time::Instant;

pub use postern_proto::lines::{LineDecoder, LineTooLong, MAX_LINE};

/// One line of the queue stream, decoded.
pub type Decoded = postern_proto::lines::Decoded<QueueFrame>;

/// Why a queue stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The service ended the response.
    Closed,
    /// No frame for the heartbeat timeout.
    Silent(Duration),
    /// A line over [`MAX_LINE`].
    LineTooLong,
    /// Reading failed (connection reset, TLS error, HTTP/2 stream reset).
    Broken(String),
    /// The caller asked to stop ([`Flow::Stop`]).
    Stopped,
}

/// What the frame handler wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Stop reading; the stream ends with [`StreamEnd::Stopped`].
    Stop,
}

/// Reads `chunks` until it ends, handing each frame to `on_frame`. Gives up when no
/// frame (a skipped line does not count) arrived for `silence`.
pub async fn read_frames<S, E>(chunks: S, silence: Duration, mut on_frame: impl FnMut(QueueFrame) -> Flow) -> StreamEnd
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut chunks = std::pin::pin!(chunks);
    let mut decoder = LineDecoder::default();
    let mut decoded = Vec::new();
    let mut deadline = Instant::now() + silence;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, chunks.next()).await {
            Err(_) => return StreamEnd::Silent(silence),
            Ok(None) => return StreamEnd::Closed,
            Ok(Some(Err(e))) => return StreamEnd::Broken(e.to_string()),
            Ok(Some(Ok(chunk))) => chunk,
        };
        if decoder.push(&chunk, &mut decoded).is_err() {
            return StreamEnd::LineTooLong;
        }
        for item in decoded.drain(..) {
            match item {
                Decoded::Frame(frame) => {
                    deadline = Instant::now() + silence;
                    if on_frame(frame) == Flow::Stop {
                        return StreamEnd::Stopped;
                    }
                }
                Decoded::Skipped(why) => tracing::warn!(why, "skipped a queue line that is not a frame"),
            }
        }
    }
}

/// The body of a response as a stream of chunks, read as they arrive.
pub(crate) fn body_chunks(response: reqwest::Response) -> impl Stream<Item = Result<Bytes, reqwest::Error>> {
    futures_util::stream::unfold(Some(response), |response| async move {
        let mut response = response?;
        match response.chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(response))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use postern_proto::relay::{AgentCiphertext, ValidationRequest};

    use super::*;

    fn validate_line(id: &str) -> String {
        let frame = QueueFrame::Validate(ValidationRequest {
            request_id: id.into(),
            tenant_id: "t".into(),
            username: "alice".into(),
            deadline_ms: 1,
            ciphertexts: vec![AgentCiphertext {
                key_id: "k".into(),
                ciphertext: "Y3Q=".into(),
            }],
            wait_if_busy: false,
        });
        serde_json::to_string(&frame).unwrap() + "\n"
    }

    fn frames(out: &[Decoded]) -> Vec<&QueueFrame> {
        out.iter()
            .filter_map(|d| match d {
                Decoded::Frame(f) => Some(f),
                Decoded::Skipped(_) => None,
            })
            .collect()
    }

    #[test]
    fn heartbeats_and_requests_in_one_chunk() {
        let text = format!("{{\"type\":\"heartbeat\",\"at\":7}}\r\n\n{}", validate_line("r1"));
        let mut d = LineDecoder::default();
        let mut out = Vec::new();
        d.push(text.as_bytes(), &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], Decoded::Frame(QueueFrame::Heartbeat { at: 7 }));
        assert!(matches!(&out[1], Decoded::Frame(QueueFrame::Validate(v)) if v.request_id == "r1"));
    }

    #[test]
    fn lines_split_across_chunks_of_every_size() {
        let text = format!(
            "{}{}{{\"type\":\"heartbeat\",\"at\":1}}\n",
            validate_line("a"),
            validate_line("b")
        );
        for size in [1, 2, 3, 7, 64, text.len()] {
            let mut d = LineDecoder::default();
            let mut out = Vec::new();
            for chunk in text.as_bytes().chunks(size) {
                d.push(chunk, &mut out).unwrap();
            }
            let got = frames(&out);
            assert_eq!(got.len(), 3, "chunk size {size}");
            assert!(matches!(got[1], QueueFrame::Validate(v) if v.request_id == "b"));
        }
        // An unfinished line is held, not decoded.
        let mut d = LineDecoder::default();
        let mut out: Vec<Decoded> = Vec::new();
        d.push(b"{\"type\":\"heartbeat\",\"at\":1}", &mut out).unwrap();
        assert!(out.is_empty());
        d.push(b"\n", &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn garbage_is_skipped_without_its_content() {
        let text = "not json at all secret-ish\n{\"type\":\"drain\"}\n[1,2]\n{\"type\":\"heartbeat\",\"at\":2}\n";
        let mut d = LineDecoder::default();
        let mut out = Vec::new();
        d.push(text.as_bytes(), &mut out).unwrap();
        assert_eq!(out.len(), 4);
        for skipped in &out[..3] {
            let Decoded::Skipped(why) = skipped else {
                panic!("{skipped:?}")
            };
            assert!(!why.contains("secret") && !why.contains("drain"), "{why}");
        }
        assert_eq!(out[3], Decoded::Frame(QueueFrame::Heartbeat { at: 2 }));
    }

    #[test]
    fn over_long_lines_are_refused_wherever_they_are_split() {
        let mut d = LineDecoder::new(16);
        let mut out: Vec<Decoded> = Vec::new();
        assert_eq!(d.push(&[b'x'; 17], &mut out), Err(LineTooLong));
        let mut d = LineDecoder::new(16);
        d.push(&[b'x'; 10], &mut out).unwrap();
        assert_eq!(d.push(&[b'x'; 7], &mut out), Err(LineTooLong));
        let mut d = LineDecoder::new(16);
        d.push(&[b'x'; 10], &mut out).unwrap();
        assert_eq!(d.push(b"xxxxxxx\n", &mut out), Err(LineTooLong));
        // Exactly at the limit is fine, and the buffer is reused afterwards.
        let mut d = LineDecoder::new(16);
        d.push(&[b' '; 16], &mut out).unwrap();
        d.push(b"\n", &mut out).unwrap();
        d.push(&[b' '; 16], &mut out).unwrap();
        assert!(out.is_empty());
    }

    fn stream_of(chunks: Vec<&'static [u8]>) -> impl Stream<Item = Result<Bytes, Infallible>> {
        futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))))
    }

    #[tokio::test]
    async fn reading_hands_frames_over_until_the_end() {
        let mut seen = Vec::new();
        let end = read_frames(
            stream_of(vec![
                b"{\"type\":\"heartbeat\",",
                b"\"at\":1}\n{\"type\":\"heartbeat\",\"at\":2}\n",
            ]),
            Duration::from_secs(5),
            |f| {
                seen.push(f);
                Flow::Continue
            },
        )
        .await;
        assert_eq!(end, StreamEnd::Closed);
        assert_eq!(seen.len(), 2);

        let long = Box::leak(vec![b'x'; MAX_LINE + 1].into_boxed_slice());
        let end = read_frames(stream_of(vec![long]), Duration::from_secs(5), |_| Flow::Continue).await;
        assert_eq!(end, StreamEnd::LineTooLong);

        let end = read_frames(
            stream_of(vec![
                b"{\"type\":\"heartbeat\",\"at\":1}\n{\"type\":\"heartbeat\",\"at\":2}\n",
            ]),
            Duration::from_secs(5),
            |_| Flow::Stop,
        )
        .await;
        assert_eq!(end, StreamEnd::Stopped);

        let broken = futures_util::stream::iter(vec![Err::<Bytes, _>("connection reset")]);
        let end = read_frames(broken, Duration::from_secs(5), |_| Flow::Continue).await;
        assert_eq!(end, StreamEnd::Broken("connection reset".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_ends_the_stream_even_while_bytes_trickle_in() {
        // Nothing at all.
        let silent = futures_util::stream::pending::<Result<Bytes, Infallible>>();
        let end = read_frames(silent, Duration::from_secs(3), |_| Flow::Continue).await;
        assert_eq!(end, StreamEnd::Silent(Duration::from_secs(3)));

        // One byte a second, never a whole frame: still silent.
        let trickle = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_secs(1)).await; // a trickling peer, on purpose
            Some((Ok::<_, Infallible>(Bytes::from_static(b" ")), ()))
        });
        let started = Instant::now();
        let end = read_frames(trickle, Duration::from_secs(3), |_| Flow::Continue).await;
        assert_eq!(end, StreamEnd::Silent(Duration::from_secs(3)));
        assert!(started.elapsed() < Duration::from_secs(4));

        // A heartbeat every second keeps it alive until the service closes.
        let beats = futures_util::stream::iter(0..10).then(|i| async move {
            tokio::time::sleep(Duration::from_secs(1)).await; // heartbeat period
            Ok::<_, Infallible>(Bytes::from(format!("{{\"type\":\"heartbeat\",\"at\":{i}}}\n")))
        });
        let mut count = 0;
        let end = read_frames(beats, Duration::from_secs(3), |_| {
            count += 1;
            Flow::Continue
        })
        .await;
        assert_eq!((end, count), (StreamEnd::Closed, 10));
    }
}
