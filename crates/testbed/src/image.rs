//! The guest image: Debian's cloud kernel and an initramfs with busybox, the virtio-net
//! modules, iperf3 and our init script.
//!
//! Built once under `<target>/guest/` and reused while its stamp (a hash of the init script,
//! the module list and the layout version) matches; a change to any of them rebuilds it.
//!
//! Sources, all from Debian packages through apt:
//! * the kernel and its modules: `apt-get download` of the package `linux-image-cloud-amd64`
//!   depends on (e.g. `linux-image-6.1.0-56-cloud-amd64`), unpacked with `dpkg-deb -x`;
//! * busybox: `/bin/busybox` when the `busybox-static` package provides it, else the package
//!   downloaded and unpacked;
//! * iperf3: the host's `/usr/bin/iperf3` with the libraries and dynamic loader `ldd` lists
//!   (the host is Debian 12, like the userland the guest kernel expects).
//!
//! The initramfs is an uncompressed newc archive written by [`crate::cpio`]: the kernel
//! unpacks it without a decompression pass, which under TCG is the faster boot, and no
//! compressor is needed on the host.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::cpio::Archive;
use crate::error::{io, Error, Result};

/// The init script, PID 1 of the guest.
pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// The virtio-net driver and its dependencies, in load order (module names).
pub const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// Bumped when the image's layout changes in a way the other inputs do not show.
const LAYOUT_VERSION: u32 = 1;

/// The metapackage whose dependency names the current cloud kernel.
const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
const BUSYBOX_PACKAGE: &str = "busybox-static";
const IPERF3: &str = "/usr/bin/iperf3";

/// File names inside the image directory.
const KERNEL_FILE: &str = "vmlinuz";
const INITRD_FILE: &str = "initrd.img";
const STAMP_FILE: &str = "stamp";

/// Builds are serialised within a process; across processes each builds in its own
/// directory and renames the results into place.
static BUILD: Mutex<()> = Mutex::new(());

/// A built guest: what QEMU's `-kernel` and `-initrd` take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The kernel (`vmlinuz`).
    pub kernel: PathBuf,
    /// The initramfs (uncompressed newc cpio).
    pub initrd: PathBuf,
    /// The Debian package the kernel came from, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub kernel_package: String,
}

/// Where the image lives under a cargo target directory.
pub fn image_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("guest")
}

/// The hash the stamp file records: everything the image is made from that lives in this
/// crate.
fn inputs_hash() -> String {
    let mut h = Fnv64::new();
    h.write(&LAYOUT_VERSION.to_le_bytes());
    h.write(INIT_SCRIPT.as_bytes());
    for m in MODULES {
        h.write(m.as_bytes());
        h.write(b"\0");
    }
    format!("{:016x}", h.finish())
}

/// Returns the guest image under `target_dir/guest`, building it first when it is missing
/// or out of date.
pub fn ensure_image(target_dir: &Path) -> Result<GuestImage> {
    let _guard = BUILD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = image_dir(target_dir);
    let hash = inputs_hash();
    if let Some(image) = cached(&dir, &hash) {
        return Ok(image);
    }
    build(&dir, &hash)
}

/// The image in `dir` if its stamp records `hash` and its files are there.
fn cached(dir: &Path, hash: &str) -> Option<GuestImage> {
    let stamp = fs::read_to_string(dir.join(STAMP_FILE)).ok()?;
    let mut stamp_hash = None;
    let mut package = None;
    for line in stamp.lines() {
        if let Some(v) = line.strip_prefix("hash=") {
            stamp_hash = Some(v);
        } else if let Some(v) = line.strip_prefix("kernel_package=") {
            package = Some(v);
        }
    }
    let image = GuestImage {
        kernel: dir.join(KERNEL_FILE),
        initrd: dir.join(INITRD_FILE),
        kernel_package: package?.to_string(),
    };
    (stamp_hash? == hash && image.kernel.is_file() && image.initrd.is_file()).then_some(image)
}

fn build(dir: &Path, hash: &str) -> Result<GuestImage> {
    fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    let work = dir.join(format!("build-{}", std::process::id()));
    if work.exists() {
        fs::remove_dir_all(&work).map_err(io("cannot remove", &work))?;
    }
    fs::create_dir_all(&work).map_err(io("cannot create", &work))?;
    let result = build_in(dir, &work, hash);
    let _ = fs::remove_dir_all(&work);
    result
}

fn build_in(dir: &Path, work: &Path, hash: &str) -> Result<GuestImage> {
    let kernel_package = resolve_kernel_package()?;
    let kernel_root = work.join("kernel");
    let deb = download(&kernel_package, work)?;
    unpack(&deb, &kernel_root)?;

    let vmlinuz = find_vmlinuz(&kernel_root)?;
    let modules = find_modules(&kernel_root)?;
    let busybox = busybox(work)?;

    let mut cpio = Archive::new();
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "root", "etc",
    ] {
        cpio.dir(d, 0o755)?;
    }
    // The kernel opens /dev/console for init's stdio before init mounts devtmpfs.
    cpio.char_dev("dev/console", 0o600, 5, 1)?;
    cpio.file("init", 0o755, INIT_SCRIPT.as_bytes())?;
    cpio.file("bin/busybox", 0o755, &read(&busybox)?)?;
    cpio.symlink("bin/sh", "busybox")?;
    for (i, (name, path)) in modules.iter().enumerate() {
        let data = module_bytes(path)?;
        cpio.file(
            &format!("lib/modules/vnet/{:02}-{name}.ko", i + 1),
            0o644,
            &data,
        )?;
    }
    add_program(&mut cpio, Path::new(IPERF3))?;
    cpio.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    cpio.file("etc/group", 0o644, b"root:x:0:\n")?;
    let initrd = cpio.finish()?;

    // Into place: the files first (each rename is atomic), the stamp last.
    let image = GuestImage {
        kernel: dir.join(KERNEL_FILE),
        initrd: dir.join(INITRD_FILE),
        kernel_package: kernel_package.clone(),
    };
    let staged_initrd = work.join(INITRD_FILE);
    fs::write(&staged_initrd, &initrd).map_err(io("cannot write", &staged_initrd))?;
    let staged_kernel = work.join(KERNEL_FILE);
    fs::copy(&vmlinuz, &staged_kernel).map_err(io("cannot copy", &vmlinuz))?;
    fs::rename(&staged_kernel, &image.kernel).map_err(io("cannot rename to", &image.kernel))?;
    fs::rename(&staged_initrd, &image.initrd).map_err(io("cannot rename to", &image.initrd))?;
    let staged_stamp = work.join(STAMP_FILE);
    let stamp = format!("hash={hash}\nkernel_package={kernel_package}\n");
    fs::write(&staged_stamp, stamp).map_err(io("cannot write", &staged_stamp))?;
    let stamp_path = dir.join(STAMP_FILE);
    fs::rename(&staged_stamp, &stamp_path).map_err(io("cannot rename to", &stamp_path))?;
    Ok(image)
}

/// The real package name behind [`KERNEL_METAPACKAGE`], from `apt-cache depends`; runs
/// `apt-get update` once if apt knows nothing yet.
fn resolve_kernel_package() -> Result<String> {
    let lookup = || {
        let out = run_output(Command::new("apt-cache").args(["depends", KERNEL_METAPACKAGE]))
            .unwrap_or_default();
        kernel_dependency(&out)
    };
    if let Some(p) = lookup() {
        return Ok(p);
    }
    apt_update()?;
    lookup().ok_or_else(|| {
        Error::Image(format!(
            "apt-cache depends {KERNEL_METAPACKAGE} names no linux-image package"
        ))
    })
}

/// The versioned kernel package in `apt-cache depends` output:
/// `  Depends: linux-image-6.1.0-56-cloud-amd64`.
fn kernel_dependency(apt_cache_depends: &str) -> Option<String> {
    apt_cache_depends.lines().find_map(|line| {
        let dep = line.trim().strip_prefix("Depends:")?.trim();
        let dep = dep.trim_matches(|c| c == '<' || c == '>');
        (dep.starts_with("linux-image-") && dep != KERNEL_METAPACKAGE).then(|| dep.to_string())
    })
}

/// `apt-get download PACKAGE` into `dir`, retrying once after `apt-get update`; returns
/// the .deb.
fn download(package: &str, dir: &Path) -> Result<PathBuf> {
    let attempt = || {
        run_output(
            Command::new("apt-get")
                .args(["download", "-q", package])
                .current_dir(dir),
        )
    };
    if let Err(first) = attempt() {
        apt_update().map_err(|_| first)?;
        attempt()?;
    }
    let entries = fs::read_dir(dir).map_err(io("cannot list", dir))?;
    entries
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&format!("{package}_")) && name.ends_with(".deb")
        })
        .ok_or_else(|| Error::Image(format!("apt-get download {package} left no .deb")))
}

fn apt_update() -> Result<()> {
    run_output(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .map(drop)
}

/// `dpkg-deb -x DEB DIR`.
fn unpack(deb: &Path, into: &Path) -> Result<()> {
    fs::create_dir_all(into).map_err(io("cannot create", into))?;
    run_output(Command::new("dpkg-deb").arg("-x").arg(deb).arg(into)).map(drop)
}

fn find_vmlinuz(root: &Path) -> Result<PathBuf> {
    let boot = root.join("boot");
    let entries = fs::read_dir(&boot).map_err(io("cannot list", &boot))?;
    entries
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| Error::Image(format!("no vmlinuz-* in {}", boot.display())))
}

/// Each of [`MODULES`] under `lib/modules/*/kernel`, in order: (name, file).
fn find_modules(root: &Path) -> Result<Vec<(&'static str, PathBuf)>> {
    let mut files = Vec::new();
    for base in [root.join("lib/modules"), root.join("usr/lib/modules")] {
        if base.is_dir() {
            walk(&base, &mut files)?;
        }
    }
    MODULES
        .iter()
        .map(|name| {
            let wanted: Vec<String> = ["ko", "ko.xz", "ko.zst", "ko.gz"]
                .iter()
                .map(|ext| format!("{name}.{ext}"))
                .collect();
            files
                .iter()
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| wanted.iter().any(|w| n.to_string_lossy() == *w))
                })
                .map(|p| (*name, p.clone()))
                .ok_or_else(|| {
                    Error::Image(format!(
                        "module {name} not found in the kernel package (built in? then drop it from MODULES)"
                    ))
                })
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io("cannot list", dir))? {
        let entry = entry.map_err(io("cannot list", dir))?;
        let file_type = entry.file_type().map_err(io("cannot stat", entry.path()))?;
        if file_type.is_dir() {
            walk(&entry.path(), out)?;
        } else if file_type.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// A module's bytes, decompressed: busybox `insmod` loads plain ELF objects.
fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        return read(path);
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| Error::Spawn {
            command: format!("{tool} -dc {name}"),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{tool} -dc {name}"),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out.stdout)
}

/// A static busybox: the installed one from `busybox-static`, or that package downloaded.
fn busybox(work: &Path) -> Result<PathBuf> {
    let status =
        run_output(Command::new("dpkg-query").args(["-W", "-f=${Status}", BUSYBOX_PACKAGE]))
            .unwrap_or_default();
    let installed = Path::new("/bin/busybox");
    if status.trim() == "install ok installed" && installed.is_file() {
        return Ok(installed.to_path_buf());
    }
    let deb = download(BUSYBOX_PACKAGE, work)?;
    let root = work.join("busybox");
    unpack(&deb, &root)?;
    let p = root.join("bin/busybox");
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::Image(format!(
            "{BUSYBOX_PACKAGE} has no bin/busybox"
        )))
    }
}

/// A dynamically linked host program with the libraries and loader `ldd` lists, each at
/// its host path.
fn add_program(cpio: &mut Archive, program: &Path) -> Result<()> {
    if !program.is_file() {
        return Err(Error::Image(format!(
            "{} is missing (install iperf3: cargo xtask deps)",
            program.display()
        )));
    }
    cpio.file(&program.to_string_lossy(), 0o755, &read(program)?)?;
    let ldd = run_output(Command::new("ldd").arg(program))?;
    for lib in ldd_paths(&ldd) {
        cpio.file(&lib, 0o755, &read(Path::new(&lib))?)?;
    }
    Ok(())
}

/// The absolute paths in `ldd` output: `libc.so.6 => /lib/.../libc.so.6 (0x..)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x..)`; the vDSO has none.
fn ldd_paths(ldd: &str) -> Vec<String> {
    ldd.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(io("cannot read", path))
}

/// Runs `cmd` with stdin closed, returning stdout; a failure carries stderr.
pub(crate) fn run_output(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| Error::Spawn {
            command: shown.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: shown,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let _ = write!(s, " {}", a.to_string_lossy());
    }
    s
}

/// FNV-1a, 64 bits: a stable hash for the stamp (std's hashers may change between
/// releases).
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd_output() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibiperf.so.0 => /lib/x86_64-linux-gnu/libiperf.so.0 (0x00007f7f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f7e)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f7f15313000)\n";
        assert_eq!(
            ldd_paths(ldd),
            [
                "/lib/x86_64-linux-gnu/libiperf.so.0",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn finds_the_kernel_behind_the_metapackage() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            kernel_dependency(out).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(kernel_dependency(""), None);
        assert_eq!(
            kernel_dependency("  Depends: <linux-image-cloud-amd64>\n"),
            None
        );
    }

    #[test]
    fn fnv_matches_reference_values() {
        let mut h = Fnv64::new();
        h.write(b"");
        assert_eq!(h.finish(), 0xcbf2_9ce4_8422_2325);
        let mut h = Fnv64::new();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn stamp_decides_reuse() {
        let dir = std::env::temp_dir().join(format!("vnet-testbed-stamp-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let hash = inputs_hash();
        assert!(cached(&dir, &hash).is_none());
        fs::write(dir.join(KERNEL_FILE), b"k").unwrap();
        fs::write(dir.join(INITRD_FILE), b"i").unwrap();
        fs::write(
            dir.join(STAMP_FILE),
            format!("hash={hash}\nkernel_package=linux-image-x\n"),
        )
        .unwrap();
        let image = cached(&dir, &hash).unwrap();
        assert_eq!(image.kernel_package, "linux-image-x");
        assert!(cached(&dir, "0000000000000000").is_none());
        fs::remove_dir_all(&dir).unwrap();
    }
}
