//! The bounded on-disk spool between the store and one receiver: a directory
//! of batch files (`{n:020}.jsonl`, one event per line), shipped oldest first
//! and deleted once the receiver accepted them.
//!
//! A batch is written to a temporary file, synced and renamed, so a batch file
//! is whole or absent after a crash. The spool never grows past its cap except
//! by a single event when it is empty (so an event larger than the cap still
//! moves): the shipper stops claiming events instead, and they wait in the
//! store.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use crate::ExportError;
use crate::event::ExportEvent;

/// Suffix of a complete batch file.
const BATCH_SUFFIX: &str = ".jsonl";
/// Suffix of a batch being written.
const TEMP_SUFFIX: &str = ".tmp";
/// Suffix a batch file that cannot be read is renamed to, to be looked at.
const BAD_SUFFIX: &str = ".bad";

/// A batch file in the spool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SpoolFile {
    id: u64,
    bytes: u64,
}

/// Events read from the oldest batch files, to send together.
#[derive(Debug)]
pub(crate) struct Batch {
    files: Vec<SpoolFile>,
    /// The events, oldest first.
    pub(crate) events: Vec<ExportEvent>,
}

/// One receiver's spool.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    used: u64,
    next_id: u64,
    files: VecDeque<SpoolFile>,
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> ExportError {
    move |source| ExportError::Spool { what, source }
}

/// The bytes `line` takes in a batch file.
fn line_bytes(line: &str) -> u64 {
    u64::try_from(line.len()).unwrap_or(u64::MAX).saturating_add(1)
}

impl Spool {
    /// Opens (creating it if needed, readable by the service's user only) the
    /// spool in `dir`, capped at `max_bytes`. Batches left half-written by a
    /// crash are removed.
    pub(crate) async fn open(dir: &Path, max_bytes: u64) -> Result<Self, ExportError> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io_error(format!("creating {}", dir.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .await
                .map_err(io_error(format!("securing {}", dir.display())))?;
        }
        let mut found = Vec::new();
        let mut entries = tokio::fs::read_dir(dir)
            .await
            .map_err(io_error(format!("reading {}", dir.display())))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(io_error(format!("reading {}", dir.display())))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(TEMP_SUFFIX) {
                let _ = tokio::fs::remove_file(entry.path()).await;
                continue;
            }
            let Some(id) = name.strip_suffix(BATCH_SUFFIX).and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            let bytes = entry
                .metadata()
                .await
                .map_err(io_error(format!("reading {}", entry.path().display())))?
                .len();
            found.push(SpoolFile { id, bytes });
        }
        found.sort_by_key(|f| f.id);
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            used: found.iter().map(|f| f.bytes).sum(),
            next_id: found.last().map_or(1, |f| f.id + 1),
            files: found.into(),
        })
    }

    /// Bytes the spool holds.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// Whether nothing waits to be sent.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// How many of `lines`, from the first, fit under the cap (at least one
    /// when the spool is empty).
    pub(crate) fn room_for(&self, lines: &[String]) -> usize {
        let mut total = self.used;
        let mut fit = 0;
        for line in lines {
            total = total.saturating_add(line_bytes(line));
            if total > self.max_bytes {
                break;
            }
            fit += 1;
        }
        if fit == 0 && self.files.is_empty() && !lines.is_empty() {
            1
        } else {
            fit
        }
    }

    fn path(&self, id: u64, suffix: &str) -> PathBuf {
        self.dir.join(format!("{id:020}{suffix}"))
    }

    /// Writes `lines` as a new batch, durably, and returns it.
    pub(crate) async fn append(&mut self, lines: &[String]) -> Result<SpoolFile, ExportError> {
        let id = self.next_id;
        let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        let temp = self.path(id, TEMP_SUFFIX);
        let done = self.path(id, BATCH_SUFFIX);
        let failed = io_error(format!("writing {}", temp.display()));
        let mut file = tokio::fs::File::create(&temp).await.map_err(failed)?;
        let written = async {
            file.write_all(text.as_bytes()).await?;
            file.sync_all().await?;
            tokio::fs::rename(&temp, &done).await?;
            tokio::fs::File::open(&self.dir).await?.sync_all().await
        };
        if let Err(e) = written.await {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(ExportError::Spool {
                what: format!("writing {}", done.display()),
                source: e,
            });
        }
        let file = SpoolFile {
            id,
            bytes: u64::try_from(text.len()).unwrap_or(u64::MAX),
        };
        self.next_id += 1;
        self.used = self.used.saturating_add(file.bytes);
        self.files.push_back(file);
        Ok(file)
    }

    /// Removes a batch that was never sent (another instance claimed its events).
    pub(crate) async fn discard(&mut self, file: SpoolFile) -> Result<(), ExportError> {
        self.delete(file).await
    }

    async fn delete(&mut self, file: SpoolFile) -> Result<(), ExportError> {
        let path = self.path(file.id, BATCH_SUFFIX);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ExportError::Spool {
                    what: format!("removing {}", path.display()),
                    source: e,
                });
            }
        }
        self.files.retain(|f| f.id != file.id);
        self.used = self.used.saturating_sub(file.bytes);
        Ok(())
    }

    /// The events of the oldest batch files, whole files up to `max_events`
    /// (at least one file); `None` when the spool is empty. A file that cannot
    /// be read is set aside (renamed `*.bad`) and logged: its events are still
    /// in the store.
    pub(crate) async fn oldest(&mut self, max_events: usize) -> Result<Option<Batch>, ExportError> {
        let mut batch = Batch {
            files: Vec::new(),
            events: Vec::new(),
        };
        let candidates: Vec<SpoolFile> = self.files.iter().copied().collect();
        for file in candidates {
            let path = self.path(file.id, BATCH_SUFFIX);
            let text = tokio::fs::read_to_string(&path)
                .await
                .map_err(io_error(format!("reading {}", path.display())))?;
            let parsed: Result<Vec<ExportEvent>, serde_json::Error> =
                text.lines().map(serde_json::from_str::<ExportEvent>).collect();
            let events = match parsed {
                Ok(events) => events,
                Err(e) => {
                    self.set_aside(file, &e).await?;
                    continue;
                }
            };
            if !batch.files.is_empty() && batch.events.len() + events.len() > max_events {
                break;
            }
            batch.files.push(file);
            batch.events.extend(events);
        }
        Ok((!batch.files.is_empty()).then_some(batch))
    }

    async fn set_aside(&mut self, file: SpoolFile, why: &serde_json::Error) -> Result<(), ExportError> {
        let path = self.path(file.id, BATCH_SUFFIX);
        let bad = self.path(file.id, BAD_SUFFIX);
        tracing::error!(file = %path.display(), error = %why, "export spool file unreadable; set aside (its events are still in the store)");
        tokio::fs::rename(&path, &bad)
            .await
            .map_err(io_error(format!("setting aside {}", path.display())))?;
        self.files.retain(|f| f.id != file.id);
        self.used = self.used.saturating_sub(file.bytes);
        Ok(())
    }

    /// Deletes the batch files of `batch` (the receiver accepted them).
    pub(crate) async fn remove(&mut self, batch: &Batch) -> Result<(), ExportError> {
        for file in &batch.files {
            self.delete(*file).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use postern_store::SigninOutcome;

    use super::*;
    use crate::event::tests::signin;

    fn lines(seqs: std::ops::RangeInclusive<i64>) -> Vec<String> {
        seqs.map(|s| signin(s, SigninOutcome::Success).to_json_line().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn batches_survive_reopening_and_leave_once_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).await.unwrap();
        spool.append(&lines(1..=3)).await.unwrap();
        spool.append(&lines(4..=5)).await.unwrap();
        let used = spool.used();
        std::fs::write(dir.path().join("00000000000000000009.tmp"), "half").unwrap();

        let mut spool = Spool::open(dir.path(), 1 << 20).await.unwrap();
        assert_eq!(spool.used(), used, "the same batches, the half-written one gone");
        assert!(!dir.path().join("00000000000000000009.tmp").exists());
        let first = spool.oldest(3).await.unwrap().unwrap();
        assert_eq!(first.events.iter().map(ExportEvent::seq).collect::<Vec<_>>(), [1, 2, 3]);
        let both = spool.oldest(100).await.unwrap().unwrap();
        assert_eq!(both.events.len(), 5, "whole files up to the limit");
        spool.remove(&first).await.unwrap();
        let rest = spool.oldest(100).await.unwrap().unwrap();
        assert_eq!(rest.events.iter().map(ExportEvent::seq).collect::<Vec<_>>(), [4, 5]);
        spool.remove(&rest).await.unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.used(), 0);
        let next = spool.append(&lines(6..=6)).await.unwrap();
        assert!(next.id > 2, "numbers are not reused");
    }

    #[tokio::test]
    async fn the_cap_holds_except_for_one_event_in_an_empty_spool() {
        let dir = tempfile::tempdir().unwrap();
        let ten = lines(1..=10);
        let one = line_bytes(&ten[0]);
        let mut spool = Spool::open(dir.path(), one * 4).await.unwrap();
        assert_eq!(spool.room_for(&ten), 4);
        spool.append(&ten[..4]).await.unwrap();
        assert_eq!(spool.room_for(&ten[4..]), 0, "full");
        assert!(spool.used() <= one * 4);

        let mut tiny = Spool::open(&dir.path().join("tiny"), 10).await.unwrap();
        assert_eq!(tiny.room_for(&ten), 1, "an empty spool always takes one event");
        tiny.append(&ten[..1]).await.unwrap();
        assert_eq!(tiny.room_for(&ten[1..]), 0);
    }

    #[tokio::test]
    async fn an_unreadable_batch_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).await.unwrap();
        let bad = spool.append(&["not json".to_owned()]).await.unwrap();
        spool.append(&lines(1..=1)).await.unwrap();
        let batch = spool.oldest(10).await.unwrap().unwrap();
        assert_eq!(batch.events.len(), 1);
        assert!(dir.path().join(format!("{:020}.bad", bad.id)).exists());
    }
}
