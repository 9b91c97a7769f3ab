//! The store file holds callers' contact details: readable and writable by
//! handoff's own user only (0600), and so are SQLite's side files (`-wal`, `-shm`,
//! `-journal`), which hold the same data. SQLite creates the side files with the
//! main file's mode, so a main file created 0600 is enough for new ones; files
//! found wider (an older handoff, a copy) are tightened with a warning.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode the store's files are created with.
pub const STORE_MODE: u32 = 0o600;

/// Whether a file's mode lets anyone but its owner read or write it.
pub fn too_open(mode: u32) -> bool {
    mode & 0o077 != 0
}

/// The mode a too-open file gets: its group and other bits cleared.
pub fn tightened(mode: u32) -> u32 {
    mode & 0o700
}

/// The main file and the side files SQLite keeps beside it.
pub fn store_files(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        out.push(PathBuf::from(p));
    }
    out
}

/// A file whose mode was tightened: its path and the mode it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tightened {
    pub path: PathBuf,
    pub was: u32,
}

/// Create the store file 0600 when missing (before SQLite opens it), and tighten
/// the main and side files that exist with a wider mode. Returns what was
/// tightened, for the caller to warn about.
pub fn secure_store_files(path: &Path) -> io::Result<Vec<Tightened>> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(STORE_MODE)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let mut done = Vec::new();
    for p in store_files(path) {
        let meta = match std::fs::metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mode = meta.permissions().mode() & 0o777;
        if too_open(mode) {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(tightened(mode)))?;
            done.push(Tightened { path: p, was: mode });
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_judged_and_tightened() {
        assert!(!too_open(0o600) && !too_open(0o400) && !too_open(0o700));
        assert!(too_open(0o644) && too_open(0o660) && too_open(0o604));
        assert_eq!(tightened(0o644), 0o600);
        assert_eq!(tightened(0o666), 0o600);
        assert_eq!(tightened(0o755), 0o700);
    }

    #[test]
    fn side_files_are_named_after_the_store() {
        let f = store_files(Path::new("/var/lib/handoff/h.db"));
        assert_eq!(
            f,
            [
                "/var/lib/handoff/h.db",
                "/var/lib/handoff/h.db-wal",
                "/var/lib/handoff/h.db-shm",
                "/var/lib/handoff/h.db-journal"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn creates_0600_and_tightens_what_is_wider() {
        let dir = std::env::temp_dir().join(format!("handoff-mode-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.db");
        assert_eq!(secure_store_files(&path).unwrap(), []);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        let wal = dir.join("h.db-wal");
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        let t = secure_store_files(&path).unwrap();
        assert_eq!(
            t,
            [
                Tightened {
                    path: path.clone(),
                    was: 0o664
                },
                Tightened {
                    path: wal.clone(),
                    was: 0o644
                }
            ]
        );
        assert_eq!((mode(&path), mode(&wal)), (0o600, 0o600));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
