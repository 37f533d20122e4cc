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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_for(bytes: &[u8]) -> Manifest {
        let mut h = Sha256Stream::default();
        h.update(bytes);
        let (sha256, size) = h.finish();
        Manifest {
            format: postern_release::MANIFEST_FORMAT.into(),
            version: "0.2.0".into(),
            target: "t".into(),
            sha256,
            size,
            min_upgrade_from: "0.1.0".into(),
            notes_url: "https://example.com/n".into(),
        }
    }

    fn response(body: Vec<u8>) -> reqwest::Response {
        reqwest::Response::from(http_response(body))
    }

    fn http_response(body: Vec<u8>) -> http::Response<Vec<u8>> {
        http::Response::new(body)
    }

    async fn fetch(body: Vec<u8>, manifest: &Manifest) -> (Result<(), DownloadError>, Option<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postern.new");
        let result = download_to(response(body), &path, manifest, Duration::from_secs(5)).await;
        (result, std::fs::read(&path).ok())
    }

    #[tokio::test]
    async fn only_the_exact_bytes_pass() {
        let good: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let manifest = manifest_for(&good);
        let (result, written) = fetch(good.clone(), &manifest).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(written.unwrap(), good);

        let (result, _) = fetch(good[..good.len() - 1].to_vec(), &manifest).await;
        assert!(
            matches!(&result, Err(DownloadError::Refused(m)) if m.contains("announces")),
            "{result:?}"
        );
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(
            fetch(longer, &manifest).await.0,
            Err(DownloadError::Refused(_))
        ));
        let mut changed = good.clone();
        changed[1000] ^= 1;
        let (result, _) = fetch(changed, &manifest).await;
        assert!(
            matches!(&result, Err(DownloadError::Refused(m)) if m.contains("SHA-256")),
            "{result:?}"
        );
    }
}
