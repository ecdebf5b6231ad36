//! A writer for the cpio "newc" format, the one the kernel unpacks as an initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! Each entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hex fields), the
//! NUL-terminated name padded to a multiple of 4 bytes, then the data padded likewise. The
//! archive ends with an entry named `TRAILER!!!`. Parent directories are added before their
//! contents automatically.

use std::collections::BTreeSet;

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// The name of the entry that ends an archive.
const TRAILER: &str = "TRAILER!!!";

/// An archive being written in memory.
#[derive(Debug, Default)]
pub struct Archive {
    buf: Vec<u8>,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

/// What makes an entry unrepresentable in newc.
#[derive(Debug, thiserror::Error)]
#[error("cpio entry {name}: {what}")]
pub struct CpioError {
    name: String,
    what: &'static str,
}

/// One entry's metadata.
struct Entry<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    data: &'a [u8],
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory (and its parents) with permissions `perm`.
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<(), CpioError> {
        let path = normalize(path);
        if path.is_empty() || self.dirs.contains(&path) {
            return Ok(());
        }
        self.parents(&path)?;
        self.entry(&Entry {
            name: &path,
            mode: S_IFDIR | (perm & 0o7777),
            nlink: 2,
            rdev: (0, 0),
            data: &[],
        })?;
        self.dirs.insert(path);
        Ok(())
    }

    /// A regular file with permissions `perm`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<(), CpioError> {
        let path = normalize(path);
        self.parents(&path)?;
        self.entry(&Entry {
            name: &path,
            mode: S_IFREG | (perm & 0o7777),
            nlink: 1,
            rdev: (0, 0),
            data,
        })
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        let path = normalize(path);
        self.parents(&path)?;
        self.entry(&Entry {
            name: &path,
            mode: S_IFLNK | 0o777,
            nlink: 1,
            rdev: (0, 0),
            data: target.as_bytes(),
        })
    }

    /// A character device node `major:minor`.
    pub fn char_dev(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        let path = normalize(path);
        self.parents(&path)?;
        self.entry(&Entry {
            name: &path,
            mode: S_IFCHR | (perm & 0o7777),
            nlink: 1,
            rdev: (major, minor),
            data: &[],
        })
    }

    /// Ends the archive and returns its bytes.
    pub fn finish(mut self) -> Result<Vec<u8>, CpioError> {
        self.entry(&Entry {
            name: TRAILER,
            mode: 0,
            nlink: 1,
            rdev: (0, 0),
            data: &[],
        })?;
        Ok(self.buf)
    }

    fn parents(&mut self, path: &str) -> Result<(), CpioError> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755)?;
        }
        Ok(())
    }

    fn entry(&mut self, e: &Entry) -> Result<(), CpioError> {
        let fail = |what| CpioError {
            name: e.name.to_string(),
            what,
        };
        if e.name.is_empty() || e.name.contains('\0') {
            return Err(fail("empty name or NUL in name"));
        }
        let size = u32::try_from(e.data.len()).map_err(|_| fail("larger than 4 GiB"))?;
        let namesize =
            u32::try_from(e.name.len() + 1).map_err(|_| fail("name longer than 4 GiB"))?;
        self.next_ino += 1;
        let fields = [
            self.next_ino, // c_ino
            e.mode,        // c_mode
            0,             // c_uid
            0,             // c_gid
            e.nlink,       // c_nlink
            0,             // c_mtime: 0, so equal inputs give equal archives
            size,          // c_filesize
            0,             // c_devmajor
            0,             // c_devminor
            e.rdev.0,      // c_rdevmajor
            e.rdev.1,      // c_rdevminor
            namesize,      // c_namesize, with the NUL
            0,             // c_check: unused by newc
        ];
        self.buf.extend_from_slice(b"070701");
        for field in fields {
            self.buf
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.buf.extend_from_slice(e.name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(e.data);
        self.pad();
        Ok(())
    }

    /// Pads with NULs to a multiple of 4 bytes (headers start at offset 0, so the header
    /// plus name and the data each end on a 4-byte boundary).
    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }
}

/// `"/bin//sh/"` -> `"bin/sh"`: archive names are relative, without empty components.
fn normalize(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal newc reader: (name, mode, data) of each entry before the trailer.
    fn parse(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = vec![];
        let total = b.len();
        loop {
            assert_eq!(&b[..6], b"070701");
            let field = |i: usize| {
                let s = std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap();
                usize::from_str_radix(s, 16).unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6), field(11));
            let name = std::str::from_utf8(&b[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(b[110 + namesize - 1], 0);
            let data_at = (110 + namesize).next_multiple_of(4);
            let data = b[data_at..data_at + size].to_vec();
            let next = (data_at + size).next_multiple_of(4);
            assert_eq!((total - b.len() + next) % 4, 0);
            b = &b[next..];
            if name == TRAILER {
                assert!(b.is_empty());
                return out;
            }
            out.push((name, u32::try_from(mode).unwrap(), data));
        }
    }

    #[test]
    fn writes_entries_with_parents_first() {
        let mut a = Archive::new();
        a.file("/usr/bin/tool", 0o755, b"hello").unwrap();
        a.symlink("/bin/sh", "busybox").unwrap();
        a.char_dev("/dev/console", 0o600, 5, 1).unwrap();
        a.dir("usr/bin", 0o755).unwrap(); // already there: no second entry
        let entries = parse(&a.finish().unwrap());
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "usr",
                "usr/bin",
                "usr/bin/tool",
                "bin",
                "bin/sh",
                "dev",
                "dev/console"
            ]
        );
        assert_eq!(entries[2].1, S_IFREG | 0o755);
        assert_eq!(entries[2].2, b"hello");
        assert_eq!(entries[4].1, S_IFLNK | 0o777);
        assert_eq!(entries[4].2, b"busybox");
        assert_eq!(entries[6].1, S_IFCHR | 0o600);
    }

    #[test]
    fn host_cpio_reads_it() {
        // Cross-check with GNU cpio where it is installed.
        let Ok(mut child) = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            return;
        };
        let mut a = Archive::new();
        a.file("init", 0o755, b"#!/bin/sh\n").unwrap();
        a.file("lib/modules/vnet/01-x.ko", 0o644, &[7; 1001])
            .unwrap();
        let bytes = a.finish().unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), &bytes).unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "init\nlib\nlib/modules\nlib/modules/vnet\nlib/modules/vnet/01-x.ko\n"
        );
    }
}
