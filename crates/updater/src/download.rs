//! Streaming a release's binary to its staging file: bytes counted and hashed
//! as they come, never more than the manifest's size, progress in the log.
//! A download that breaks off, stalls, runs long or does not match is a
//! refusal (the staging file is then removed by the caller).

use std::path::Path;
use std::time::Duration;

use postern_release::Manifest;
use postern_release::artifact::{Sha256Stream, check_digest};
use tokio::io::AsyncWriteExt;

/// Why a download cannot be installed.
#[derive(Debug)]
pub(crate) enum DownloadError {
    /// The bytes are not the release's (too long, or not matching the
    /// manifest): never installed, and reported as refused.
    Refused(String),
    /// The download broke off, stalled or came short: nothing installed; the
    /// next round may try again.
    Incomplete(String),
    /// The staging file could not be written.
    Local(String),
}

/// Streams `response` into a new file at `path` and checks it against
/// `manifest` (size and SHA-256). Each read must deliver within `stall`.
pub(crate) async fn download_to(
    mut response: reqwest::Response,
    path: &Path,
    manifest: &Manifest,
    stall: Duration,
) -> Result<(), DownloadError> {
    let size = manifest.size;
    if let Some(announced) = response.content_length()
        && announced != size
    {
        return Err(DownloadError::Refused(format!(
            "the service announces {announced} bytes, the manifest says {size}"
        )));
    }
    let local = |e: std::io::Error| DownloadError::Local(format!("{}: {e}", path.display()));
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).await.map_err(local)?;
    let mut hash = Sha256Stream::default();
    let mut next_report = 10u64;
    loop {
        let chunk = match tokio::time::timeout(stall, response.chunk()).await {
            Err(_) => {
                return Err(DownloadError::Incomplete(format!(
                    "the download stalled after {} of {size} bytes",
                    hash.len()
                )));
            }
            Ok(Err(e)) => {
                return Err(DownloadError::Incomplete(format!(
                    "the download broke off after {} of {size} bytes: {e}",
                    hash.len()
                )));
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        if hash.len() + chunk.len() as u64 > size {
            return Err(DownloadError::Refused(format!(
                "the download is longer than the {size} bytes of the manifest"
            )));
        }
        file.write_all(&chunk).await.map_err(local)?;
        hash.update(&chunk);
        let percent = hash.len() * 100 / size;
        if percent >= next_report {
            tracing::info!(
                bytes = hash.len(),
                of = size,
                "downloading {}: {percent}%",
                manifest.version
            );
            next_report = (percent / 10 + 1) * 10;
        }
    }
    file.sync_all().await.map_err(local)?;
    let (sha256, got) = hash.finish();
    if got < size {
        return Err(DownloadError::Incomplete(format!(
            "the download is truncated: {got} of {size} bytes"
        )));
    }
    check_digest(manifest, &sha256, got).map_err(|e| DownloadError::Refused(e.to_string()))
}
