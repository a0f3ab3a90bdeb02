//! Server evidence on disk: one JSON line per [`Evidence`], appended by a server process
//! at the instant of the report and read back by the runner after the run.
//!
//! Every line is written with one `write(2)` to a file opened with `O_APPEND`, before the
//! server goes on: a server killed with SIGKILL has lost nothing it reported (the page cache
//! holds it; the machine does not crash in these runs). A torn last line cannot come from a
//! kill between writes; it is still tolerated and counted rather than trusted.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use scenarios::evidence::{Evidence, EvidenceTap};

/// Why an evidence file cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: not a piece of evidence: {error}")]
    Parse { path: PathBuf, line: usize, error: String },
}

/// A tap that appends each report to `path` (created if absent).
pub fn file_tap(path: &Path) -> Result<EvidenceTap, EvidenceError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| EvidenceError::Io { path: path.to_path_buf(), source })?;
    let file = Mutex::new(file);
    let path = path.to_path_buf();
    Ok(Arc::new(move |ev: &Evidence| {
        let mut line = serde_json::to_vec(ev).expect("evidence serializes");
        line.push(b'\n');
        let mut f = engine::env::lock(&file);
        if let Err(e) = f.write_all(&line) {
            // The checkers would run on incomplete evidence: make the run fail loudly.
            tracing::error!(path = %path.display(), error = %e, "cannot record evidence");
            std::process::abort();
        }
    }))
}

/// What a file held.
#[derive(Debug, Default)]
pub struct Read {
    pub evidence: Vec<Evidence>,
    /// An unterminated last line (ignored).
    pub torn: usize,
}

/// Reads every complete line of `path`; a missing file holds nothing (a server killed before
/// it reported anything may not have created it).
pub fn read(path: &Path) -> Result<Read, EvidenceError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Read::default()),
        Err(source) => return Err(EvidenceError::Io { path: path.to_path_buf(), source }),
    };
    let mut out = Read::default();
    let mut reader = BufReader::new(file);
    let mut buf = String::new();
    let mut line = 0;
    loop {
        buf.clear();
        let n = reader
            .read_line(&mut buf)
            .map_err(|source| EvidenceError::Io { path: path.to_path_buf(), source })?;
        if n == 0 {
            return Ok(out);
        }
        line += 1;
        if !buf.ends_with('\n') {
            out.torn += 1;
            return Ok(out);
        }
        let ev = serde_json::from_str(buf.trim_end()).map_err(|e| EvidenceError::Parse {
            path: path.to_path_buf(),
            line,
            error: e.to_string(),
        })?;
        out.evidence.push(ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tapped_evidence_reads_back_and_a_torn_tail_is_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ev.jsonl");
        assert_eq!(read(&path).expect("missing is empty").evidence.len(), 0);
        let tap = file_tap(&path).expect("opens");
        let a = Evidence::Act { account: "a".into(), server: 1, link: "l".into(), t_ns: 5, tick: false };
        let w = Evidence::WallRead { wall_ms: 17, t_ns: 6 };
        tap(&a);
        tap(&w);
        let r = read(&path).expect("reads");
        assert_eq!(r.evidence, vec![a.clone(), w]);
        assert_eq!(r.torn, 0);
        // A torn tail is ignored and counted; garbage in the middle is an error.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open")
            .write_all(b"{\"kind\":")
            .expect("w");
        let r = read(&path).expect("reads");
        assert_eq!((r.evidence.len(), r.torn), (2, 1));
        std::fs::write(&path, b"nonsense\n").expect("write");
        assert!(matches!(read(&path), Err(EvidenceError::Parse { line: 1, .. })));
    }
}
