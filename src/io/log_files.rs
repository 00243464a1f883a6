//! `--out-file` and `--error-file`: the files the workers' lines go to
//! instead of the primary's stdout and stderr, as PM2's `out_file` and
//! `error_file`.
//!
//! The primary opens them itself (appending; created with mode 0640, less
//! the umask, in a directory that must exist), so that a bad path is an
//! error at start that names it, not lines lost later. Only the output
//! writer thread ([`super::output`]) writes to them, and it opens them
//! again by path when asked ([`LogFiles::reopen`], on SIGUSR1, after
//! logrotate moved them: the convention of nginx and of logrotate's
//! `postrotate kill -USR1`); SIGUSR2 is the self-upgrade, whose new image
//! opens them again by path too. The primary's own log lines stay on its
//! stderr.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::log_format::Stream;
use crate::options::Settings;

/// One open file, with the path to open again.
struct Sink {
    path: PathBuf,
    file: BufWriter<File>,
}

/// The open out and error files (one, when both name the same path).
pub struct LogFiles {
    sinks: Vec<Sink>,
    /// Which sink each stream goes to (stdout, stderr); `None`: the
    /// primary's own fd 1 or 2.
    route: [Option<usize>; 2],
}

/// Opens `path` for appending, creating it (mode 0640) if missing.
fn open(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().append(true).create(true).mode(0o640).open(path)
}

impl LogFiles {
    /// Opens what the settings name; `None` when they name neither file.
    /// The error names the option and the path.
    pub fn open(settings: &Settings) -> anyhow::Result<Option<LogFiles>> {
        let mut files = LogFiles { sinks: Vec::new(), route: [None, None] };
        for (i, (key, path)) in
            [("out-file", &settings.out_file), ("error-file", &settings.error_file)].into_iter().enumerate()
        {
            let Some(path) = path else { continue };
            if let Some(j) = files.sinks.iter().position(|s| &s.path == path) {
                files.route[i] = Some(j);
                continue;
            }
            let file = open(path).map_err(|e| {
                let hint = match e.kind() {
                    std::io::ErrorKind::NotFound => " (its directory must exist)",
                    std::io::ErrorKind::PermissionDenied => " (not writable by this user)",
                    _ => "",
                };
                anyhow::anyhow!("{key} {}: cannot open for appending: {e}{hint}", path.display())
            })?;
            files.route[i] = Some(files.sinks.len());
            files.sinks.push(Sink { path: path.clone(), file: BufWriter::with_capacity(64 * 1024, file) });
        }
        Ok((!files.sinks.is_empty()).then_some(files))
    }

    /// What `hotswap check` says of the files without creating them: the
    /// same errors [`LogFiles::open`] would give (a missing directory, a
    /// file or directory this user may not write).
    pub fn check(settings: &Settings) -> anyhow::Result<()> {
        use nix::unistd::{access, AccessFlags};
        for (key, path) in [("out-file", &settings.out_file), ("error-file", &settings.error_file)] {
            let Some(path) = path else { continue };
            let dir = path.parent().unwrap_or(Path::new("/"));
            let why = if path.is_dir() {
                Some("a directory, not a file".to_string())
            } else if path.exists() {
                access(path, AccessFlags::W_OK).err().map(|e| format!("{e} (not writable by this user)"))
            } else if !dir.is_dir() {
                Some("No such file or directory (its directory must exist)".to_string())
            } else {
                access(dir, AccessFlags::W_OK)
                    .err()
                    .map(|e| format!("{e} (cannot create it in {}: not writable by this user)", dir.display()))
            };
            if let Some(why) = why {
                anyhow::bail!("{key} {}: cannot open for appending: {why}", path.display());
            }
        }
        Ok(())
    }

    /// Whether lines of `stream` go to a file, and writes them there.
    /// False: the caller writes them to its own fd.
    pub fn write(&mut self, stream: Stream, bytes: &[u8]) -> bool {
        let i = match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        };
        let Some(j) = self.route[i] else { return false };
        // A full disk loses the line, as it would on a redirected stdout.
        let _ = self.sinks[j].file.write_all(bytes);
        true
    }

    pub fn flush(&mut self) {
        for s in &mut self.sinks {
            let _ = s.file.flush();
        }
    }

    /// Opens every file again by its path (after logrotate renamed it):
    /// what was written so far is flushed to the old file, the next lines
    /// go to the new one. A file that cannot be opened keeps the old one
    /// (said in the answer, and the first of the pair is then false).
    pub fn reopen(&mut self) -> (bool, Vec<String>) {
        let mut said = Vec::new();
        let mut ok = true;
        for s in &mut self.sinks {
            let _ = s.file.flush();
            match open(&s.path) {
                Ok(file) => {
                    s.file = BufWriter::with_capacity(64 * 1024, file);
                    said.push(format!("reopened {}", s.path.display()));
                }
                Err(e) => {
                    ok = false;
                    said.push(format!("cannot reopen {}: {e}; still writing to the file it had", s.path.display()))
                }
            }
        }
        (ok, said)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_options_on_one_path_share_one_file_and_a_missing_directory_is_named() {
        let dir = std::env::temp_dir().join(format!("hotswap-logfiles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Settings::for_tests();
        s.out_file = Some(dir.join("app.log"));
        s.error_file = Some(dir.join("app.log"));
        let mut f = LogFiles::open(&s).unwrap().unwrap();
        assert_eq!(f.sinks.len(), 1);
        assert!(f.write(Stream::Stdout, b"out\n") && f.write(Stream::Stderr, b"err\n"));
        f.flush();
        assert_eq!(std::fs::read_to_string(dir.join("app.log")).unwrap(), "out\nerr\n");
        s.error_file = Some(dir.join("missing/err.log"));
        let e = LogFiles::open(&s).err().unwrap().to_string();
        assert!(e.contains("error-file") && e.contains("missing/err.log") && e.contains("directory must exist"), "{e}");
        s.out_file = None;
        s.error_file = None;
        assert!(LogFiles::open(&s).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
