//! What we know about programs by name: which ones are dangerous, and which ones write.
//!
//! Names are checked both as the agent typed them and as the file they resolve to
//! (`/usr/bin/rbash -> bash`), so a renamed link does not slip past.

/// Why a program is blocked under `security: blocklist`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Danger {
    Shell,
    Interpreter,
    RunsPrograms,
    Processes,
    Network,
    Destructive,
    Archive,
}

impl Danger {
    pub fn describe(self) -> &'static str {
        match self {
            Danger::Shell => "is a shell",
            Danger::Interpreter => "runs code in its own language",
            Danger::RunsPrograms => "runs other programs",
            Danger::Processes => "inspects or signals other processes (including the agent and its secrets)",
            Danger::Network => "talks to the network",
            Danger::Destructive => "destroys data or changes the system",
            Danger::Archive => "unpacks archives, which can carry symbolic links that lead outside the workspace",
        }
    }

    /// Dangers that defeat the whole policy: an admin listing one of these in safeBins would
    /// hand out every other program too, so `allowlist` refuses them anyway.
    pub fn escapes_allowlist(self) -> bool {
        matches!(self, Danger::Shell | Danger::Interpreter | Danger::RunsPrograms | Danger::Processes)
    }
}

const SHELLS: &[&str] = &[
    "sh", "bash", "rbash", "dash", "ash", "zsh", "ksh", "ksh93", "mksh", "pdksh", "csh", "tcsh", "fish", "yash", "posh",
    "pwsh", "nu", "elvish", "xonsh", "busybox", "toybox",
];

/// Matched after stripping a version suffix (`python3.11`, `perl5.36.0`, `lua5.4`).
const INTERPRETERS: &[&str] = &[
    "python", "pypy", "perl", "ruby", "irb", "node", "nodejs", "deno", "bun", "php", "lua", "luajit", "tclsh", "wish",
    "expect", "guile", "racket", "rscript", "r", "julia", "java", "jshell", "groovy", "scala", "kotlin", "dotnet",
    "mono", "m4", "dc", "sqlite", "gdb", "ghci", "runghc", "erl", "escript", "elixir", "iex", "ocaml", "swipl",
    "gforth", "octave", "qjs", "rhino", "jjs", "sbcl", "clisp", "ecl", "emacs", "vim", "vi", "nvim", "ex", "view",
    "rvim", "vimdiff", "ed", "red", "nano", "less", "more", "most", "pg", "man", "info", "pandoc", "groff", "troff",
    "nroff", "gcc", "g++", "cc", "c++", "cpp", "clang", "clang++", "tcc", "rustc", "go", "javac",
];

const RUNS_PROGRAMS: &[&str] = &[
    "env", "xargs", "timeout", "nice", "nohup", "stdbuf", "sudo", "su", "doas", "runuser", "pkexec", "setsid",
    "chroot", "unshare", "nsenter", "ionice", "chrt", "taskset", "flock", "watch", "script", "scriptreplay",
    "strace", "ltrace", "valgrind", "perf", "time", "parallel", "run-parts", "start-stop-daemon", "setpriv",
    "capsh", "fakeroot", "fakechroot", "firejail", "bwrap", "systemd-run", "at", "batch", "crontab", "sg", "newgrp",
    "unbuffer", "catchsegv", "rlwrap", "faketime", "torsocks", "proxychains", "proxychains4", "make", "gmake",
    "cmake", "ninja", "meson", "ant", "mvn", "gradle", "cargo", "npm", "npx", "yarn", "pnpm", "pip", "pip3", "gem",
    "bundle", "git", "svn", "hg", "tar", "bsdtar", "zip", "split", "install", "sdiff", "diff3", "patch", "xdg-open",
    "run-mailcap", "see", "edit", "compose", "sensible-editor", "sensible-pager", "sensible-browser", "editor",
    "pager", "x-www-browser", "www-browser", "zless", "zmore", "zgrep", "zegrep", "zfgrep", "zdiff", "zcmp", "znew",
    "gzexe", "bzless", "bzmore", "bzgrep", "xzless", "xzmore", "xzgrep", "lzless", "dpkg", "dpkg-deb", "apt",
    "apt-get", "apt-config", "apt-key", "aptitude", "update-alternatives", "ldd", "ld.so", "rpm", "mail", "mailx",
    "mutt", "ssh-agent", "dbus-launch", "dbus-run-session", "xvfb-run", "gpg", "gpg2", "openssl", "busctl",
    "systemctl", "service", "invoke-rc.d", "cpio", "tmux", "screen", "exec", "eval", "command", "builtin", "nsjail",
];

const PROCESSES: &[&str] = &[
    "ps", "top", "htop", "pgrep", "pkill", "pidof", "pidwait", "kill", "killall", "killall5", "pmap", "pwdx", "lsof",
    "fuser", "pstree", "prlimit", "renice", "skill", "snice", "w", "gcore",
];

const NETWORK: &[&str] = &[
    "curl", "wget", "wget2", "nc", "ncat", "netcat", "nc.openbsd", "nc.traditional", "socat", "telnet", "ftp", "tftp",
    "lftp", "aria2c", "ping", "ping6", "dig", "nslookup", "host", "whois", "nmap", "tcpdump", "tshark", "ip",
    "ifconfig", "route", "traceroute", "tracepath", "lynx", "links", "w3m", "http", "https", "xh", "ssh", "scp",
    "sftp", "rsync", "gnutls-cli", "smbclient", "ldapsearch", "mysql", "psql", "redis-cli", "mongo", "mongosh",
    "nsupdate", "arp", "arping", "iptables", "nft",
];

const DESTRUCTIVE: &[&str] = &[
    "rm", "rmdir", "shred", "dd", "truncate", "wipefs", "mke2fs", "mkswap", "fdisk", "sfdisk", "cfdisk", "parted",
    "sgdisk", "blkdiscard", "mount", "umount", "swapon", "swapoff", "reboot", "shutdown", "halt", "poweroff", "init",
    "telinit", "modprobe", "insmod", "rmmod", "sysctl", "hwclock", "chown", "chgrp", "chattr", "setfacl", "useradd",
    "userdel", "usermod", "passwd", "chpasswd", "groupadd", "visudo",
];

const ARCHIVES: &[&str] = &["unzip", "7z", "7za", "7zr", "pax", "ar", "bsdcpio"];

/// Programs that write files by design (refused when the workspace is read-only). Per-program
/// rules add the write options of the others (`sed -i`, `sort -o`, `uniq IN OUT`, ...).
const WRITERS: &[&str] = &[
    "touch", "mkdir", "rmdir", "rm", "cp", "mv", "tee", "dd", "truncate", "ln", "link", "unlink", "chmod", "chown",
    "chgrp", "install", "shred", "mktemp", "mkfifo", "mknod", "split", "csplit", "patch", "tar", "unzip", "gzip",
    "gunzip", "bzip2", "bunzip2", "xz", "unxz", "zstd", "unzstd", "lz4", "zip", "7z", "sponge", "rsync", "wget",
    "curl", "setfacl", "chattr", "fallocate", "uudecode", "pdftoppm", "pdfimages", "pdfseparate", "pdfunite",
    "convert", "magick", "ffmpeg", "sqlite3", "git",
];

/// `python3.11` -> `python`, `perl5.36.0` -> `perl`, `guile-3.0` -> `guile`.
fn without_version(name: &str) -> &str {
    name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-')
}

/// The danger of a program, by its name or the name of the file it resolves to.
pub fn danger(name: &str) -> Option<Danger> {
    let lower = name.to_ascii_lowercase();
    let name = lower.as_str();
    let base = without_version(name);
    let is = |list: &[&str]| list.contains(&name) || list.contains(&base);
    if is(SHELLS) {
        Some(Danger::Shell)
    } else if is(INTERPRETERS) || ["-gcc", "-g++", "-cc", "-c++", "-cpp", "-clang"].iter().any(|s| base.ends_with(s)) {
        Some(Danger::Interpreter)
    } else if is(RUNS_PROGRAMS) {
        Some(Danger::RunsPrograms)
    } else if is(PROCESSES) {
        Some(Danger::Processes)
    } else if is(NETWORK) {
        Some(Danger::Network)
    } else if is(DESTRUCTIVE) || name.starts_with("mkfs") {
        Some(Danger::Destructive)
    } else if is(ARCHIVES) {
        Some(Danger::Archive)
    } else {
        None
    }
}

/// Whether a program writes files by design.
pub fn writes(name: &str) -> bool {
    WRITERS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_name_and_versioned_name() {
        let table = [
            ("sh", Some(Danger::Shell)),
            ("busybox", Some(Danger::Shell)),
            ("python3", Some(Danger::Interpreter)),
            ("python3.11", Some(Danger::Interpreter)),
            ("perl5.36.0", Some(Danger::Interpreter)),
            ("x86_64-linux-gnu-gcc-12", Some(Danger::Interpreter)),
            ("env", Some(Danger::RunsPrograms)),
            ("xargs", Some(Danger::RunsPrograms)),
            ("ps", Some(Danger::Processes)),
            ("curl", Some(Danger::Network)),
            ("rm", Some(Danger::Destructive)),
            ("mkfs.ext4", Some(Danger::Destructive)),
            ("unzip", Some(Danger::Archive)),
            ("cat", None),
            ("sha256sum", None),
            ("base64", None),
            ("grep", None),
        ];
        for (name, want) in table {
            assert_eq!(danger(name), want, "{name}");
        }
    }
}
