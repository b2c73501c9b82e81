//! Unpacking one layer tar into a directory that overlayfs can use as a lower layer.
//!
//! OCI whiteouts become overlayfs markers: `.wh.<name>` a 0:0 character device named `<name>`,
//! `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on its directory. Nothing is ever written
//! outside the layer directory or through a symlink, whatever the tar says.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use super::ImageError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to hide a lower directory's content.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// A reader that hashes everything read through it (for checking a layer's diff id).
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Reads the rest of the stream and returns `sha256:<hex>` of all of it.
    pub fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(format!("sha256:{}", hex::encode(self.hasher.finalize())))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Opens a layer blob, transparently gunzipping it; zstd and other formats are refused.
pub fn open_layer(path: &Path, digest: &str) -> Result<Box<dyn Read + Send>, ImageError> {
    let mut file = fs::File::open(path).map_err(ImageError::io("open layer", path))?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::io("read layer", path)(e)),
        }
    }
    let head = io::Cursor::new(magic[..got].to_vec());
    let chained = head.chain(file);
    match &magic[..got] {
        [0x1f, 0x8b, ..] => Ok(Box::new(flate2::read::GzDecoder::new(chained))),
        [0x28, 0xb5, 0x2f, 0xfd] => Err(ImageError::UnsupportedLayer {
            digest: digest.to_string(),
            reason: "zstd compression is not supported".to_string(),
        }),
        _ => Ok(Box::new(chained)),
    }
}

/// Unpacks `tar` into the existing directory `dest` and returns the sha256 of the uncompressed tar.
pub fn unpack_layer(tar: impl Read, dest: &Path) -> Result<String, ImageError> {
    let mut reader = HashingReader::new(tar);
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    {
        let mut archive = tar::Archive::new(&mut reader);
        let entries = archive
            .entries()
            .map_err(ImageError::io("read layer tar", dest))?;
        for entry in entries {
            let entry = entry.map_err(ImageError::io("read layer tar", dest))?;
            unpack_entry(entry, dest, &mut dir_times)?;
        }
    }
    // Children change their directory's mtime, so directories get theirs last, deepest first.
    for (dir, mtime) in dir_times.iter().rev() {
        set_mtime(dir, *mtime)?;
    }
    reader
        .finish()
        .map_err(ImageError::io("read layer tar", dest))
}

fn unpack_entry<R: Read>(
    mut entry: tar::Entry<'_, R>,
    dest: &Path,
    dir_times: &mut Vec<(PathBuf, u64)>,
) -> Result<(), ImageError> {
    let raw = entry
        .path()
        .map_err(ImageError::io("read entry path", dest))?
        .into_owned();
    let header = entry.header().clone();
    let Some(rel) = clean_path(&raw)? else {
        // The layer root itself ("./"): only its owner and mode matter.
        if header.entry_type() == EntryType::Directory {
            lchown(dest, header.uid().unwrap_or(0), header.gid().unwrap_or(0))?;
            chmod(dest, header.mode().unwrap_or(0o755) & 0o7777)?;
        }
        return Ok(());
    };
    let kind = header.entry_type();
    // Like Go's archive/tar (which wrote most layers), a blank numeric field reads as 0.
    let uid = header.uid().unwrap_or(0);
    let gid = header.gid().unwrap_or(0);
    let mtime = header.mtime().unwrap_or(0);
    let mode = header
        .mode()
        .map_err(ImageError::io("read entry mode", &raw))?
        & 0o7777;
    let link_name = entry
        .link_name()
        .map_err(ImageError::io("read entry link", &raw))?
        .map(|l| l.into_owned());
    let xattrs = pax_xattrs(&mut entry, &raw)?;

    let parent = ensure_parent_dirs(dest, &rel)?;
    let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();

    if name == OPAQUE_MARKER.as_bytes() {
        set_xattr(&parent, OPAQUE_XATTR, b"y")
            .map_err(ImageError::io("set opaque xattr", &parent))?;
        return Ok(());
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) || hidden.is_empty() {
            return Ok(()); // aufs bookkeeping (.wh..wh.plnk etc.), meaningless to overlayfs
        }
        let target = parent.join(std::ffi::OsStr::from_bytes(hidden));
        remove_existing(&target, false)?;
        mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
            .map_err(|e| ImageError::io("create whiteout", &target)(e.into()))?;
        lchown(&target, uid, gid)?;
        return Ok(());
    }

    let target = dest.join(&rel);
    match kind {
        EntryType::Directory => {
            remove_existing(&target, true)?;
            if !target.is_dir() {
                fs::create_dir(&target).map_err(ImageError::io("create dir", &target))?;
            }
            lchown(&target, uid, gid)?;
            chmod(&target, mode)?;
            apply_xattrs(&target, &xattrs)?;
            dir_times.push((target, mtime));
        }
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
            remove_existing(&target, false)?;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&target)
                .map_err(ImageError::io("create file", &target))?;
            io::copy(&mut entry, &mut file).map_err(ImageError::io("write file", &target))?;
            drop(file);
            lchown(&target, uid, gid)?;
            chmod(&target, mode)?; // after chown, which clears setuid bits
            apply_xattrs(&target, &xattrs)?;
            set_mtime(&target, mtime)?;
        }
        EntryType::Symlink => {
            let link = link_name.ok_or_else(|| unsafe_path(&raw, "symlink without target"))?;
            remove_existing(&target, false)?;
            // The target is stored as is (absolute targets are fine); it is never followed here.
            std::os::unix::fs::symlink(&link, &target)
                .map_err(ImageError::io("create symlink", &target))?;
            lchown(&target, uid, gid)?;
            set_mtime(&target, mtime)?;
        }
        EntryType::Link => {
            let link = link_name.ok_or_else(|| unsafe_path(&raw, "hardlink without target"))?;
            let link_rel = clean_path(&link)?
                .ok_or_else(|| unsafe_path(&raw, "hardlink to the layer root"))?;
            check_no_symlink_parents(dest, &link_rel)?;
            let source = dest.join(&link_rel);
            remove_existing(&target, false)?;
            // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
            fs::hard_link(&source, &target).map_err(ImageError::io("create hardlink", &target))?;
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            let sflag = match kind {
                EntryType::Char => SFlag::S_IFCHR,
                EntryType::Block => SFlag::S_IFBLK,
                _ => SFlag::S_IFIFO,
            };
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            remove_existing(&target, false)?;
            mknod(
                &target,
                sflag,
                Mode::from_bits_truncate(mode),
                makedev(u64::from(major), u64::from(minor)),
            )
            .map_err(|e| ImageError::io("create device", &target)(e.into()))?;
            lchown(&target, uid, gid)?;
            chmod(&target, mode)?;
            set_mtime(&target, mtime)?;
        }
        other => {
            tracing::debug!(path = %raw.display(), kind = ?other, "skipping tar entry of unsupported kind");
        }
    }
    Ok(())
}

fn unsafe_path(raw: &Path, reason: &str) -> ImageError {
    ImageError::UnsafePath {
        path: raw.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Makes a tar path relative and refuses any `..`; `None` for the root itself.
fn clean_path(raw: &Path) -> Result<Option<PathBuf>, ImageError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => return Err(unsafe_path(raw, "contains '..'")),
            Component::Prefix(_) => return Err(unsafe_path(raw, "has a path prefix")),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Fails if any parent of `rel` inside `dest` is a symlink or not a directory.
fn check_no_symlink_parents(dest: &Path, rel: &Path) -> Result<(), ImageError> {
    let mut current = dest.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            current.push(c);
            let meta = fs::symlink_metadata(&current).map_err(ImageError::io("stat", &current))?;
            if !meta.is_dir() {
                return Err(unsafe_path(
                    rel,
                    "goes through a symlink or a non-directory",
                ));
            }
        }
    }
    Ok(())
}

/// Creates missing parent directories of `rel` (as real directories) and returns the parent's path.
fn ensure_parent_dirs(dest: &Path, rel: &Path) -> Result<PathBuf, ImageError> {
    let mut current = dest.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            current.push(c);
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(unsafe_path(
                        rel,
                        "goes through a symlink or a non-directory",
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&current).map_err(ImageError::io("create dir", &current))?;
                    chmod(&current, 0o755)?;
                }
                Err(e) => return Err(ImageError::io("stat", &current)(e)),
            }
        }
    }
    Ok(current)
}

/// Removes whatever is at `path`, except a directory when a directory is about to be written there.
fn remove_existing(path: &Path, keep_dir: bool) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            if !keep_dir {
                fs::remove_dir_all(path).map_err(ImageError::io("remove dir", path))?;
            }
        }
        Ok(_) => fs::remove_file(path).map_err(ImageError::io("remove file", path))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ImageError::io("stat", path)(e)),
    }
    Ok(())
}

fn lchown(path: &Path, uid: u64, gid: u64) -> Result<(), ImageError> {
    let id = |v: u64| u32::try_from(v).map_err(|_| unsafe_path(path, "uid/gid out of range"));
    std::os::unix::fs::lchown(path, Some(id(uid)?), Some(id(gid)?))
        .map_err(ImageError::io("chown", path))
}

fn chmod(path: &Path, mode: u32) -> Result<(), ImageError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(ImageError::io("chmod", path))
}

fn set_mtime(path: &Path, mtime: u64) -> Result<(), ImageError> {
    let secs = i64::try_from(mtime).unwrap_or(i64::MAX);
    let ts = TimeSpec::new(secs, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &ts,
        &ts,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| ImageError::io("set mtime", path)(e.into()))
}

fn pax_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    raw: &Path,
) -> Result<Vec<(String, Vec<u8>)>, ImageError> {
    let mut out = Vec::new();
    if let Some(exts) = entry
        .pax_extensions()
        .map_err(ImageError::io("read pax header", raw))?
    {
        for ext in exts {
            let ext = ext.map_err(ImageError::io("read pax header", raw))?;
            if let Ok(key) = ext.key() {
                if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(out)
}

fn apply_xattrs(path: &Path, xattrs: &[(String, Vec<u8>)]) -> Result<(), ImageError> {
    for (name, value) in xattrs {
        set_xattr(path, name, value).map_err(ImageError::io("set xattr", path))?;
    }
    Ok(())
}

/// Sets an extended attribute on `path` itself (never on a symlink's target).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes())?;
    let n = CString::new(name)?;
    // SAFETY: `p` and `n` are NUL-terminated and live across the call; `value` is a valid slice
    // whose pointer and length are passed together.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads an extended attribute of `path` itself; `None` when it is not set.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let p = CString::new(path.as_os_str().as_bytes())?;
    let n = CString::new(name)?;
    let mut buf = vec![0u8; 256];
    // SAFETY: pointers are valid NUL-terminated strings; `buf` is writable for `buf.len()` bytes.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc >= 0 {
        buf.truncate(rc as usize);
        return Ok(Some(buf));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENODATA) {
        Ok(None)
    } else {
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    fn header(kind: EntryType, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h.set_size(0);
        h
    }

    fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
        let mut h = header(EntryType::Directory, mode);
        b.append_data(&mut h, path, io::empty())
            .expect("append dir");
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
        let mut h = header(EntryType::Regular, mode);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).expect("append file");
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: EntryType, path: &str, target: &str) {
        let mut h = header(kind, 0o777);
        b.append_link(&mut h, path, target).expect("append link");
    }

    fn build(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        b.into_inner().expect("finish tar")
    }

    #[test]
    fn files_links_dirs_and_permissions() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tar = build(|b| {
            dir(b, "bin", 0o755);
            file(b, "bin/busybox", b"ELF", 0o4755);
            link(b, EntryType::Symlink, "bin/sh", "busybox");
            link(b, EntryType::Symlink, "bin/abs", "/etc/passwd");
            link(b, EntryType::Link, "bin/hard", "bin/busybox");
            dir(b, "tmp", 0o1777);
            file(b, "deep/er/file", b"x", 0o640);
        });
        let digest = unpack_layer(&tar[..], tmp.path()).expect("unpack");
        assert_eq!(digest, crate::image::manifest::sha256_digest(&tar));
        let root = tmp.path();
        let bb = fs::symlink_metadata(root.join("bin/busybox")).expect("busybox");
        assert_eq!(bb.mode() & 0o7777, 0o4755);
        assert_eq!(bb.nlink(), 2);
        assert_eq!(
            fs::read_link(root.join("bin/sh")).expect("sh"),
            Path::new("busybox")
        );
        assert_eq!(
            fs::read_link(root.join("bin/abs")).expect("abs"),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            fs::symlink_metadata(root.join("tmp")).expect("tmp").mode() & 0o7777,
            0o1777
        );
        assert_eq!(
            fs::symlink_metadata(root.join("bin")).expect("bin").mtime(),
            1_000_000
        );
        assert_eq!(fs::read(root.join("deep/er/file")).expect("deep"), b"x");
    }

    #[test]
    fn whiteouts_and_opaque_dirs_become_overlay_markers() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tar = build(|b| {
            dir(b, "etc", 0o755);
            file(b, "etc/.wh.motd", b"", 0o644);
            dir(b, "var/cache", 0o755);
            file(b, "var/cache/.wh..wh..opq", b"", 0o644);
            file(b, "var/cache/new", b"n", 0o644);
            file(b, ".wh..wh.plnk", b"", 0o644);
        });
        unpack_layer(&tar[..], tmp.path()).expect("unpack");
        let motd = fs::symlink_metadata(tmp.path().join("etc/motd")).expect("whiteout");
        assert!(motd.file_type().is_char_device());
        assert_eq!(motd.rdev(), 0);
        assert!(!tmp.path().join("etc/.wh.motd").exists());
        let cache = tmp.path().join("var/cache");
        assert_eq!(
            get_xattr(&cache, OPAQUE_XATTR).expect("xattr"),
            Some(b"y".to_vec())
        );
        assert!(cache.join("new").exists());
        assert!(!cache.join(".wh..wh..opq").exists());
        assert_eq!(
            get_xattr(&tmp.path().join("etc"), OPAQUE_XATTR).expect("xattr"),
            None
        );
        assert!(!tmp.path().join(".wh..wh.plnk").exists());
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tar = build(|b| {
            file(b, "a", b"1", 0o644);
            link(b, EntryType::Symlink, "a", "/x");
            dir(b, "d", 0o700);
            dir(b, "d", 0o755);
        });
        unpack_layer(&tar[..], tmp.path()).expect("unpack");
        assert!(fs::symlink_metadata(tmp.path().join("a"))
            .expect("a")
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::symlink_metadata(tmp.path().join("d"))
                .expect("d")
                .mode()
                & 0o777,
            0o755
        );
    }

    /// Appends an entry with a raw name, bypassing the tar crate's own `..` checks.
    fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &[u8], kind: EntryType, link: Option<&[u8]>) {
        let mut h = header(kind, 0o644);
        {
            let gnu = h.as_gnu_mut().expect("gnu header");
            gnu.name[..name.len()].copy_from_slice(name);
            if let Some(link) = link {
                gnu.linkname[..link.len()].copy_from_slice(link);
            }
        }
        h.set_cksum();
        b.append(&h, io::empty()).expect("append raw");
    }

    #[test]
    fn refuses_escapes() {
        let outside = tempfile::tempdir().expect("tempdir");
        // `..` in a file path.
        let tmp = tempfile::tempdir().expect("tempdir");
        let tar = build(|b| raw_entry(b, b"../escaped", EntryType::Regular, None));
        assert!(matches!(
            unpack_layer(&tar[..], tmp.path()),
            Err(ImageError::UnsafePath { .. })
        ));
        // Writing through a symlink planted by the same layer.
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = outside.path().to_str().expect("utf8").as_bytes().to_vec();
        let tar = build(|b| {
            raw_entry(b, b"evil", EntryType::Symlink, Some(&target));
            raw_entry(b, b"evil/file", EntryType::Regular, None);
        });
        assert!(matches!(
            unpack_layer(&tar[..], tmp.path()),
            Err(ImageError::UnsafePath { .. })
        ));
        assert!(!outside.path().join("file").exists());
        // A hardlink to a file outside.
        let tmp = tempfile::tempdir().expect("tempdir");
        let tar = build(|b| raw_entry(b, b"h", EntryType::Link, Some(b"../../etc/passwd")));
        assert!(matches!(
            unpack_layer(&tar[..], tmp.path()),
            Err(ImageError::UnsafePath { .. })
        ));
        // Overwriting a symlink replaces the link, never its target.
        let tmp = tempfile::tempdir().expect("tempdir");
        let victim = outside.path().join("victim");
        fs::write(&victim, b"keep").expect("victim");
        let victim_b = victim.to_str().expect("utf8").as_bytes().to_vec();
        let tar = build(|b| {
            raw_entry(b, b"v", EntryType::Symlink, Some(&victim_b));
            file(b, "v", b"new", 0o644);
        });
        unpack_layer(&tar[..], tmp.path()).expect("unpack");
        assert_eq!(fs::read(&victim).expect("victim"), b"keep");
        assert_eq!(fs::read(tmp.path().join("v")).expect("v"), b"new");
    }

    #[test]
    fn gzip_is_detected() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tar = build(|b| file(b, "f", b"data", 0o644));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).expect("gzip");
        let blob = tmp.path().join("blob");
        fs::write(&blob, gz.finish().expect("gzip")).expect("write");
        let out = tmp.path().join("out");
        fs::create_dir(&out).expect("mkdir");
        let reader = open_layer(&blob, "sha256:x").expect("open");
        let diff_id = unpack_layer(reader, &out).expect("unpack");
        assert_eq!(diff_id, crate::image::manifest::sha256_digest(&tar));
        assert_eq!(fs::read(out.join("f")).expect("f"), b"data");
    }
}
