//! `file-drop`: picks up files that legacy systems drop into a directory.
//!
//! | config key | meaning | default |
//! |---|---|---|
//! | `dir` | the directory; it must be granted in `grants.files` | required |
//! | `mode` | `file`: one record per file; `lines`: one record per non-empty line | `file` |
//! | `suffix` | only names ending with this, e.g. `.csv` | any |
//! | `skip_header` | in `lines` mode, skip each file's first line | `false` |
//! | `settle` | seconds a file must be unmodified before it is read | `2` |
//! | `max_files` | files taken per poll | `100` |
//!
//! A file is never read while it may still be written: names ending in
//! `.part`, `.tmp` or `~` and hidden files are skipped, and so is a file
//! modified within `settle` seconds. The cursor lists the files already taken
//! that are still in the directory, so a file is taken once even when it
//! arrives with an old modification time (as `mv` keeps it).
//! Record keys are `<file>` or `<file>:<line>`.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use plexus_sdk::{Error, PollResult, Record, Source, config};

struct FileDrop;

/// One file waiting in the directory.
#[derive(Debug)]
struct Waiting {
    name: String,
    modified: SystemTime,
}

impl Source for FileDrop {
    fn poll(cursor: Option<String>) -> Result<PollResult, Error> {
        let dir = config::get("dir")
            .ok_or_else(|| Error::Permanent("config `dir` is required".into()))?;
        let lines = match config::get("mode").as_deref() {
            None | Some("file") => false,
            Some("lines") => true,
            Some(other) => {
                return Err(Error::Permanent(format!(
                    "config `mode` {other:?} must be `file` or `lines`"
                )));
            }
        };
        let suffix = config::get("suffix").unwrap_or_default();
        let skip_header = config::get("skip_header").as_deref() == Some("true");
        let settle = Duration::from_secs(
            config::get("settle")
                .and_then(|s| s.parse().ok())
                .unwrap_or(2),
        );
        let max_files: usize = config::get("max_files")
            .and_then(|s| s.parse().ok())
            .unwrap_or(100);

        let done: BTreeSet<String> = cursor
            .iter()
            .flat_map(|c| c.lines())
            .map(str::to_owned)
            .collect();
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::Retryable(format!("cannot list {dir}: {e}")))?;
        let now = SystemTime::now();
        let mut present = BTreeSet::new();
        let mut waiting = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::Retryable(format!("cannot list {dir}: {e}")))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file()
                || name.starts_with('.')
                || name.ends_with(".part")
                || name.ends_with(".tmp")
                || name.ends_with('~')
                || !name.ends_with(&suffix)
            {
                continue;
            }
            present.insert(name.clone());
            let modified = meta.modified().unwrap_or(now);
            let settled = now.duration_since(modified).is_ok_and(|age| age >= settle);
            if settled && !done.contains(&name) {
                waiting.push(Waiting { name, modified });
            }
        }
        waiting.sort_by(|a, b| (a.modified, &a.name).cmp(&(b.modified, &b.name)));
        waiting.truncate(max_files);

        let mut records = Vec::new();
        let mut taken: BTreeSet<String> = done.intersection(&present).cloned().collect();
        for file in waiting {
            let path = format!("{}/{}", dir.trim_end_matches('/'), file.name);
            let bytes = std::fs::read(&path)
                .map_err(|e| Error::Retryable(format!("cannot read {path}: {e}")))?;
            if lines {
                let text = String::from_utf8_lossy(&bytes);
                let body = text
                    .trim_start_matches('\u{feff}')
                    .lines()
                    .enumerate()
                    .skip(usize::from(skip_header));
                for (n, line) in body.filter(|(_, l)| !l.trim().is_empty()) {
                    records.push(Record::new(
                        format!("{}:{}", file.name, n + 1),
                        line.trim_end_matches('\r'),
                    ));
                }
            } else {
                records.push(Record::new(file.name.clone(), bytes));
            }
            taken.insert(file.name);
        }
        let cursor = taken.into_iter().collect::<Vec<_>>().join("\n");
        Ok(PollResult {
            records,
            cursor: Some(cursor),
        })
    }
}

plexus_sdk::export_source!(FileDrop);
