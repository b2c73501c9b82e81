//! Files that hold secrets (private keys, join-token secrets, admin credentials), the directories
//! that hold them, and join tokens handed to a process without putting them on its command line.
//!
//! A secret file is owner-only from its first byte, whatever the umask: it is written to a fresh
//! temporary file created with its final mode (`O_EXCL`, a random name) and renamed over the old
//! one, so there is never a moment when it is readable by others, and a crash leaves the old
//! contents or the new ones, never a torn file. chmod after the write would leave such a window.
//! A file or directory an older version left open is tightened when the process starts.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of a file that holds a secret: read and write for its owner only.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Mode of a data directory: only its owner may list or enter it.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// The environment variable `shoal-agent join` and `shoal-manager join` read their token from.
pub const JOIN_TOKEN_ENV: &str = "SHOAL_JOIN_TOKEN";

/// The warning `--token` prints: the command line of every process is public on the host.
pub const TOKEN_ON_COMMAND_LINE_WARNING: &str = "warning: --token puts the join token on the command line, where every user of this host can read it (ps, /proc/PID/cmdline); use --token-file PATH or the SHOAL_JOIN_TOKEN environment variable instead";

/// Bits that give anyone but the owner access.
const GROUP_OTHER: u32 = 0o077;

/// Why a private file or directory could not be written, read or secured.
#[derive(Debug, thiserror::Error)]
pub enum SecureFileError {
    /// A file system call failed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("create", "rename", …).
        op: &'static str,
        /// The error.
        source: io::Error,
    },
    /// A data directory path names something that is not a directory.
    #[error("{path}: not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A token file holds no token.
    #[error("{path}: the token file is empty (expected the join token on its first line)")]
    EmptyTokenFile {
        /// The file.
        path: PathBuf,
    },
}

impl From<SecureFileError> for io::Error {
    /// For callers whose errors carry an `io::Error`: the kind is kept, the message names the path.
    fn from(e: SecureFileError) -> io::Error {
        let kind = match &e {
            SecureFileError::Io { source, .. } => source.kind(),
            SecureFileError::NotADirectory { .. } => io::ErrorKind::NotADirectory,
            SecureFileError::EmptyTokenFile { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e.to_string())
    }
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> SecureFileError + 'a {
    move |source| SecureFileError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// The directory a file is in ("." for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `contents` to `path` atomically, owner-only (mode 0600) from the start, whatever the
/// umask; an existing file is replaced, and ends up 0600 even if it was more open.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), SecureFileError> {
    write_atomic(path, contents, PRIVATE_FILE_MODE)
}

/// Writes `contents` to `path` atomically with exactly `mode` (the umask does not apply): a new
/// temporary file beside it, created with at most `mode`, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), SecureFileError> {
    let dir = parent_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // create_new with the final mode: the umask can only narrow it, never widen it, and no
    // temporary file left by a crash (or planted) is reused.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(mode & !GROUP_OTHER))
        .tempfile_in(dir)
        .map_err(io_err(path, "create a temporary file"))?;
    // Widen to exactly `mode` (if asked) while the file is still empty.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err(tmp.path(), "chmod"))?;
    tmp.write_all(contents).map_err(io_err(path, "write"))?;
    tmp.as_file().sync_all().map_err(io_err(path, "fsync"))?;
    tmp.persist(path)
        .map_err(|e| io_err(path, "rename into place")(e.error))?;
    // The rename itself must reach the disk before we rely on the file being there.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync the directory"))
}

/// Creates `dir` (and missing parents) as an owner-only directory (0700), or tightens an
/// existing one that others may read or enter. Parents keep the usual modes.
pub fn ensure_private_dir(dir: &Path) -> Result<(), SecureFileError> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err(parent, "create"))?;
    }
    match fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(dir) {
        Ok(()) => {
            // The umask may have cut owner bits too (0o277): owner rwx exactly, no window for
            // others since they never had any bit.
            fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
                .map_err(io_err(dir, "chmod"))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::metadata(dir).map_err(io_err(dir, "stat"))?;
            if !meta.is_dir() {
                return Err(SecureFileError::NotADirectory {
                    path: dir.to_path_buf(),
                });
            }
            tighten(dir)?;
            Ok(())
        }
        Err(e) => Err(io_err(dir, "create")(e)),
    }
}

/// Takes away every group and other permission bit of `path` if it has any, logging it at info
/// (a file an older version left open). Returns the old mode when it changed anything; a missing
/// path is not an error (nothing to tighten). Symbolic links are not followed.
pub fn tighten(path: &Path) -> Result<Option<u32>, SecureFileError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, "stat")(e)),
    };
    if meta.file_type().is_symlink() {
        return Ok(None);
    }
    let old = meta.permissions().mode() & 0o7777;
    if old & GROUP_OTHER == 0 {
        return Ok(None);
    }
    let new = old & !GROUP_OTHER;
    fs::set_permissions(path, fs::Permissions::from_mode(new)).map_err(io_err(path, "chmod"))?;
    tracing::info!(
        path = %path.display(),
        old_mode = format!("{old:o}"),
        new_mode = format!("{new:o}"),
        "tightened permissions left open by an older version"
    );
    Ok(Some(old))
}

/// [`tighten`] on `dir` and everything below it (symbolic links are neither followed nor
/// changed); returns how many entries changed. For directories whose whole content is private
/// (a manager's data dir), not for ones holding container images.
pub fn tighten_tree(dir: &Path) -> Result<usize, SecureFileError> {
    let mut changed = usize::from(tighten(dir)?.is_some());
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(changed),
        Err(e) => return Err(io_err(dir, "stat")(e)),
    };
    if !meta.is_dir() {
        return Ok(changed);
    }
    for entry in fs::read_dir(dir).map_err(io_err(dir, "list"))? {
        let entry = entry.map_err(io_err(dir, "list"))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io_err(&path, "stat"))?;
        if kind.is_dir() {
            changed += tighten_tree(&path)?;
        } else if !kind.is_symlink() {
            changed += usize::from(tighten(&path)?.is_some());
        }
    }
    Ok(changed)
}

/// Restricts the umask of this process to owner-only (077), for files third-party code creates
/// (a database's own files) in a process whose every file is private. Returns the old umask.
pub fn restrict_umask() -> u32 {
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(GROUP_OTHER));
    old.bits()
}

/// Reads a secret from the first line of a file (surrounding white space trimmed), as
/// `--token-file` does. A file others can read still works, with a warning: it is the
/// operator's, and only the operator can decide who else should see it.
pub fn read_secret_file(path: &Path) -> Result<String, SecureFileError> {
    let text = fs::read_to_string(path).map_err(io_err(path, "read"))?;
    let secret = text.lines().next().unwrap_or_default().trim();
    if secret.is_empty() {
        return Err(SecureFileError::EmptyTokenFile {
            path: path.to_path_buf(),
        });
    }
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & GROUP_OTHER != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the token file is readable by other users; chmod 600 it");
        }
    }
    Ok(secret.to_string())
}

/// Where a join token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token TOKEN`: on the command line, visible to every user (warn).
    CommandLine,
    /// `--token-file PATH`.
    File,
    /// The `SHOAL_JOIN_TOKEN` environment variable.
    Environment,
}

/// The join token of a `join` command: `--token` (deprecated), else `--token-file`, else the
/// value of `SHOAL_JOIN_TOKEN` (`env`, empty counts as unset); `None` when none is given (a
/// restart from an existing data dir needs none).
pub fn join_token(
    flag: Option<&str>,
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<Option<(String, TokenSource)>, SecureFileError> {
    if let Some(t) = flag.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(Some((t.to_string(), TokenSource::CommandLine)));
    }
    if let Some(path) = file {
        return Ok(Some((read_secret_file(path)?, TokenSource::File)));
    }
    Ok(env
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| (t.to_string(), TokenSource::Environment)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The umask is one per process: tests that change it run one at a time and put it back.
    static UMASK: Mutex<()> = Mutex::new(());

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").permissions().mode() & 0o7777
    }

    fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
        let _guard = UMASK.lock().unwrap_or_else(|e| e.into_inner());
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
        let out = f();
        nix::sys::stat::umask(old);
        out
    }

    #[test]
    fn private_file_is_0600_whatever_the_umask() {
        let dir = tempfile::tempdir().expect("tempdir");
        for mask in [0o000, 0o022, 0o077, 0o277] {
            let p = dir.path().join(format!("key-{mask:o}.pem"));
            with_umask(mask, || write_private(&p, b"secret")).expect("write");
            assert_eq!(mode(&p), 0o600, "umask {mask:o}");
            assert_eq!(fs::read(&p).expect("read"), b"secret");
        }
        // A public file gets exactly its mode too, even under a strict umask.
        let p = dir.path().join("ca.pem");
        with_umask(0o077, || write_atomic(&p, b"cert", 0o644)).expect("write");
        assert_eq!(mode(&p), 0o644);
    }

    #[test]
    fn private_file_replaces_atomically_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("admin.conf");
        write_private(&p, b"one").expect("write");
        // An older, world-readable version is replaced by a private one.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private(&p, b"two").expect("rewrite");
        assert_eq!(fs::read_to_string(&p).expect("read"), "two");
        assert_eq!(mode(&p), 0o600);
        let names: Vec<String> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["admin.conf".to_string()]);
    }

    #[test]
    fn a_planted_temporary_file_is_not_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("node-key.pem");
        // What the old helper used as its temporary, open to everyone: it must stay untouched.
        let old_tmp = dir.path().join("node-key.pem.tmp");
        fs::write(&old_tmp, b"planted").expect("plant");
        fs::set_permissions(&old_tmp, fs::Permissions::from_mode(0o666)).expect("chmod");
        write_private(&p, b"key").expect("write");
        assert_eq!(mode(&p), 0o600);
        assert_eq!(fs::read(&old_tmp).expect("read"), b"planted");
    }

    #[test]
    fn writing_into_a_missing_directory_fails_with_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("missing/key.pem");
        let err = write_private(&p, b"x").expect_err("no dir");
        assert!(err.to_string().contains("key.pem"), "{err}");
    }

    #[test]
    fn private_dir_is_created_0700_and_an_open_one_is_tightened() {
        let base = tempfile::tempdir().expect("tempdir");
        let d = base.path().join("a/data");
        with_umask(0o000, || ensure_private_dir(&d)).expect("create");
        assert_eq!(mode(&d), 0o700);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod");
        ensure_private_dir(&d).expect("tighten");
        assert_eq!(mode(&d), 0o700);
        let f = base.path().join("file");
        fs::write(&f, b"x").expect("write");
        assert!(matches!(
            ensure_private_dir(&f),
            Err(SecureFileError::NotADirectory { .. })
        ));
    }

    #[test]
    fn an_old_0644_key_is_tightened_and_a_private_one_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("node-key.pem");
        fs::write(&key, b"key").expect("write");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(tighten(&key).expect("tighten"), Some(0o644));
        assert_eq!(mode(&key), 0o600);
        assert_eq!(tighten(&key).expect("again"), None);
        assert_eq!(tighten(&dir.path().join("absent")).expect("absent"), None);
    }

    #[test]
    fn a_tree_is_tightened_without_following_links() {
        let base = tempfile::tempdir().expect("tempdir");
        let outside = base.path().join("outside");
        fs::write(&outside, b"public").expect("write");
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).expect("chmod");
        let root = base.path().join("data");
        fs::create_dir_all(root.join("raft/blobs")).expect("mkdir");
        fs::write(root.join("raft/db"), b"db").expect("write");
        fs::write(root.join("raft/blobs/1"), b"blob").expect("write");
        std::os::unix::fs::symlink(&outside, root.join("link")).expect("symlink");
        for p in [
            root.clone(),
            root.join("raft"),
            root.join("raft/blobs"),
            root.join("raft/db"),
            root.join("raft/blobs/1"),
        ] {
            let m = if p.is_dir() { 0o755 } else { 0o644 };
            fs::set_permissions(&p, fs::Permissions::from_mode(m)).expect("chmod");
        }
        assert_eq!(tighten_tree(&root).expect("tighten"), 5);
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("raft/blobs")), 0o700);
        assert_eq!(mode(&root.join("raft/db")), 0o600);
        assert_eq!(mode(&root.join("raft/blobs/1")), 0o600);
        assert_eq!(
            mode(&outside),
            0o644,
            "a link's target is not ours to change"
        );
        assert_eq!(tighten_tree(&root).expect("again"), 0);
    }

    #[test]
    fn token_file_first_line_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("join-token");
        write_private(&p, b"  SHLTKN-1-abc-def  \nsecond line\n").expect("write");
        assert_eq!(read_secret_file(&p).expect("read"), "SHLTKN-1-abc-def");
        write_private(&p, b"\n\n").expect("write");
        assert!(matches!(
            read_secret_file(&p),
            Err(SecureFileError::EmptyTokenFile { .. })
        ));
        let missing = read_secret_file(&dir.path().join("nope")).expect_err("missing");
        assert!(missing.to_string().contains("nope"), "{missing}");
    }

    #[test]
    fn join_token_prefers_the_flag_then_the_file_then_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("join-token");
        write_private(&p, b"from-file\n").expect("write");
        let got = |flag, file, env| join_token(flag, file, env).expect("resolve");
        assert_eq!(
            got(Some("from-flag"), Some(p.as_path()), Some("from-env")),
            Some(("from-flag".into(), TokenSource::CommandLine))
        );
        assert_eq!(
            got(None, Some(p.as_path()), Some("from-env")),
            Some(("from-file".into(), TokenSource::File))
        );
        assert_eq!(
            got(Some(""), None, Some(" from-env ")),
            Some(("from-env".into(), TokenSource::Environment))
        );
        assert_eq!(got(None, None, Some("")), None);
        assert_eq!(got(None, None, None), None);
    }
}
