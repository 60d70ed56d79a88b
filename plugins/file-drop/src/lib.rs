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
//! | `max_records` | in `lines` mode, records per poll; a larger file is read a page at a time | `5000` |
//!
//! A file is never read while it may still be written: names ending in
//! `.part`, `.tmp` or `~` and hidden files are skipped, and so is a file
//! modified within `settle` seconds. The cursor lists the files already taken
//! that are still in the directory, so a file is taken once even when it
//! arrives with an old modification time (as `mv` keeps it). A file read in
//! part is listed with where its next page starts (byte offset and line), and
//! the host polls again at once while pages come: a file of a million lines
//! flows through in bounded memory.
//! Record keys are `<file>` or `<file>:<line>`.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Seek as _};
use std::time::{Duration, SystemTime};

use plexus_sdk::{Error, PollResult, Record, Source, config, log};

struct FileDrop;

/// One file waiting in the directory.
#[derive(Debug)]
struct Waiting {
    name: String,
    modified: SystemTime,
    /// Where the next page of a file read in part starts.
    resume: Option<Place>,
}

/// A place in a file: its byte offset and the number of the line there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    offset: u64,
    line: usize,
}

/// What the cursor says of a file: taken whole, or taken up to a place.
type Taken = BTreeMap<String, Option<Place>>;

/// Parse the cursor: a line per file, `name` or `name\t<offset>\t<line>`.
fn parse_cursor(cursor: Option<&str>) -> Taken {
    cursor
        .iter()
        .flat_map(|c| c.lines())
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut parts = line.split('\t');
            let name = parts.next().unwrap_or_default().to_owned();
            let place = match (parts.next(), parts.next()) {
                (Some(offset), Some(line)) => match (offset.parse(), line.parse()) {
                    (Ok(offset), Ok(line)) => Some(Place { offset, line }),
                    _ => None,
                },
                _ => None,
            };
            (name, place)
        })
        .collect()
}

fn write_cursor(taken: &Taken) -> String {
    taken
        .iter()
        .map(|(name, place)| match place {
            None => name.clone(),
            Some(p) => format!("{name}\t{}\t{}", p.offset, p.line),
        })
        .collect::<Vec<_>>()
        .join("\n")
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
        let settle = Duration::from_secs(number("settle", 2)? as u64);
        let max_files = number("max_files", 100)?.max(1);
        let max_records = number("max_records", 5000)?.max(1);

        let done = parse_cursor(cursor.as_deref());
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::Retryable(format!("cannot list {dir}: {e}")))?;
        let now = SystemTime::now();
        let mut present = Vec::new();
        let mut waiting = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::Retryable(format!("cannot list {dir}: {e}")))?;
            // A name that is not UTF-8, or holds a line break or tab (the
            // cursor's separators), cannot be kept in the cursor: it is left
            // where it is, and said so.
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                log::warn(&format!(
                    "skipping {:?} in {dir}: its name is not UTF-8",
                    entry.file_name()
                ));
                continue;
            };
            if name.contains(['\n', '\r', '\t']) {
                log::warn(&format!(
                    "skipping {name:?} in {dir}: its name holds a line break or tab"
                ));
                continue;
            }
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
            present.push(name.clone());
            let modified = meta.modified().unwrap_or(now);
            let settled = now.duration_since(modified).is_ok_and(|age| age >= settle);
            match done.get(&name) {
                // Taken whole.
                Some(None) => {}
                Some(Some(place)) => waiting.push(Waiting {
                    name,
                    modified,
                    resume: Some(*place),
                }),
                None if settled => waiting.push(Waiting {
                    name,
                    modified,
                    resume: None,
                }),
                None => {}
            }
        }
        // Files begun first, then the oldest.
        waiting.sort_by(|a, b| {
            (a.resume.is_none(), a.modified, &a.name).cmp(&(
                b.resume.is_none(),
                b.modified,
                &b.name,
            ))
        });
        waiting.truncate(max_files);

        let mut records = Vec::new();
        // Files gone from the directory are forgotten.
        let mut taken: Taken = done
            .into_iter()
            .filter(|(name, _)| present.contains(name))
            .collect();
        for file in waiting {
            let path = format!("{}/{}", dir.trim_end_matches('/'), file.name);
            if !lines {
                let bytes = std::fs::read(&path)
                    .map_err(|e| Error::Retryable(format!("cannot read {path}: {e}")))?;
                records.push(Record::new(file.name.clone(), bytes));
                taken.insert(file.name, None);
                continue;
            }
            let budget = max_records - records.len();
            let start = file.resume.unwrap_or(Place { offset: 0, line: 0 });
            let stopped = read_lines(&path, &file.name, start, skip_header, budget, &mut records)?;
            taken.insert(file.name, stopped);
            if records.len() >= max_records {
                break;
            }
        }
        Ok(PollResult {
            records,
            cursor: Some(write_cursor(&taken)),
        })
    }
}

fn number(key: &str, default: usize) -> Result<usize, Error> {
    match config::get(key) {
        None => Ok(default),
        Some(text) => text.trim().parse().map_err(|_| {
            Error::Permanent(format!("config `{key}` {text:?} is not a whole number"))
        }),
    }
}

/// Read the lines of `path` from `start`, one record each, until `budget`
/// records are taken; returns where to go on, or `None` at the end of the file.
fn read_lines(
    path: &str,
    name: &str,
    start: Place,
    skip_header: bool,
    budget: usize,
    records: &mut Vec<Record>,
) -> Result<Option<Place>, Error> {
    let retry = |e: std::io::Error| Error::Retryable(format!("cannot read {path}: {e}"));
    let mut file = std::fs::File::open(path).map_err(retry)?;
    file.seek(std::io::SeekFrom::Start(start.offset))
        .map_err(retry)?;
    let mut reader = std::io::BufReader::with_capacity(64 << 10, file);
    let mut place = start;
    let mut line = Vec::new();
    let mut taken = 0;
    loop {
        if taken == budget {
            return Ok(Some(place));
        }
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(retry)?;
        if n == 0 {
            return Ok(None);
        }
        place.offset += n as u64;
        place.line += 1;
        let mut text = String::from_utf8_lossy(&line).into_owned();
        if place.line == 1 {
            text = text.trim_start_matches('\u{feff}').to_owned();
            if skip_header {
                continue;
            }
        }
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        records.push(Record::new(format!("{name}:{}", place.line), text));
        taken += 1;
    }
}

plexus_sdk::export_source!(FileDrop);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let mut taken = Taken::new();
        taken.insert("a.csv".into(), None);
        taken.insert(
            "big.csv".into(),
            Some(Place {
                offset: 4096,
                line: 100,
            }),
        );
        let text = write_cursor(&taken);
        assert_eq!(parse_cursor(Some(&text)), taken);
        // Cursors written before pages existed: names only.
        assert_eq!(parse_cursor(Some("a.csv\nb.csv")).len(), 2);
    }

    #[test]
    fn a_large_file_is_read_a_page_at_a_time() {
        let dir = std::env::temp_dir().join(format!("file-drop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.csv");
        let text: String = (1..=25).map(|i| format!("row {i}\r\n")).collect();
        std::fs::write(&path, format!("header\n\n{text}")).unwrap();
        let path = path.to_str().unwrap();
        let mut all = Vec::new();
        let mut place = Some(Place { offset: 0, line: 0 });
        let mut pages = 0;
        while let Some(start) = place {
            let mut page = Vec::new();
            place = read_lines(path, "big.csv", start, true, 10, &mut page).unwrap();
            assert!(page.len() <= 10);
            all.extend(page);
            pages += 1;
        }
        assert_eq!(pages, 3);
        assert_eq!(all.len(), 25);
        assert_eq!(all[0].key, "big.csv:3");
        assert_eq!(all[0].payload, b"row 1");
        assert_eq!(all[24].key, "big.csv:27");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
