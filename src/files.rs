//! Files only this user may read: the data directory, keys and secrets.
//! A leaf module: std and tracing only, so `auth`, `tls` and `server` can all
//! use it without importing each other.

use std::path::Path;

/// Creates `dir` (and missing parents) readable by its owner only, or
/// tightens an existing one to 0700 with a warning: the database under it
/// holds every private message and password hash, and sled creates its files
/// with the process umask (often 0644).
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                was = format!("{mode:o}"),
                "directory was readable by other users; setting it to 0700"
            );
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("setting {} to 0700", dir.display()))?;
        }
    }
    Ok(())
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}
