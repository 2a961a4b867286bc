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
    System,
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
            Danger::System => {
                "reads or changes the system outside the workspace (kernel log, login records, files elsewhere, other terminals)"
            }
        }
    }

    /// Dangers that defeat the whole policy: an admin listing one of these in safeBins would
    /// hand out every other program too, so `allowlist` refuses them anyway.
    pub fn escapes_allowlist(self) -> bool {
        matches!(self, Danger::Shell | Danger::Interpreter | Danger::RunsPrograms | Danger::Processes)
    }
}

const SHELLS: &[&str] = &[
    "sh", "bash", "rbash", "dash", "ash", "zsh", "ksh", "ksh93", "mksh", "pdksh", "csh", "tcsh", "fish", "yash",
    "posh", "pwsh", "nu", "elvish", "xonsh", "busybox", "toybox",
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
    "env",
    "xargs",
    "timeout",
    "nice",
    "nohup",
    "stdbuf",
    "sudo",
    "su",
    "doas",
    "runuser",
    "pkexec",
    "setsid",
    "chroot",
    "unshare",
    "nsenter",
    "ionice",
    "chrt",
    "taskset",
    "flock",
    "watch",
    "script",
    "scriptreplay",
    "strace",
    "ltrace",
    "valgrind",
    "perf",
    "time",
    "parallel",
    "run-parts",
    "start-stop-daemon",
    "setpriv",
    "capsh",
    "fakeroot",
    "fakechroot",
    "firejail",
    "bwrap",
    "systemd-run",
    "at",
    "batch",
    "crontab",
    "sg",
    "newgrp",
    "unbuffer",
    "catchsegv",
    "rlwrap",
    "faketime",
    "torsocks",
    "proxychains",
    "proxychains4",
    "make",
    "gmake",
    "cmake",
    "ninja",
    "meson",
    "ant",
    "mvn",
    "gradle",
    "cargo",
    "npm",
    "npx",
    "yarn",
    "pnpm",
    "pip",
    "pip3",
    "gem",
    "bundle",
    "git",
    "svn",
    "hg",
    "tar",
    "bsdtar",
    "zip",
    "split",
    "install",
    "sdiff",
    "diff3",
    "patch",
    "xdg-open",
    "run-mailcap",
    "see",
    "edit",
    "compose",
    "sensible-editor",
    "sensible-pager",
    "sensible-browser",
    "editor",
    "pager",
    "x-www-browser",
    "www-browser",
    "zless",
    "zmore",
    "zgrep",
    "zegrep",
    "zfgrep",
    "zdiff",
    "zcmp",
    "znew",
    "gzexe",
    "bzless",
    "bzmore",
    "bzgrep",
    "xzless",
    "xzmore",
    "xzgrep",
    "lzless",
    "dpkg",
    "dpkg-deb",
    "apt",
    "apt-get",
    "apt-config",
    "apt-key",
    "aptitude",
    "update-alternatives",
    "ldd",
    "ld.so",
    "rpm",
    "mail",
    "mailx",
    "mutt",
    "ssh-agent",
    "dbus-launch",
    "dbus-run-session",
    "xvfb-run",
    "gpg",
    "gpg2",
    "openssl",
    "busctl",
    "systemctl",
    "service",
    "invoke-rc.d",
    "cpio",
    "tmux",
    "screen",
    "exec",
    "eval",
    "command",
    "builtin",
    "nsjail",
    // Launchers that util-linux and others ship: each runs the program named after it.
    "setarch",
    "linux32",
    "linux64",
    "x86_64",
    "i386",
    "uname26",
    "choom",
    "runcon",
    "scriptlive",
    "uclampset",
    "login",
    // Package and system tools, which run maintainer scripts, hooks or helpers.
    "apt-cache",
    "apt-cdrom",
    "apt-mark",
    "dpkg-divert",
    "dpkg-maintscript-helper",
    "dpkg-query",
    "dpkg-realpath",
    "dpkg-split",
    "dpkg-statoverride",
    "dpkg-trigger",
    "deb-systemd-helper",
    "deb-systemd-invoke",
    // Shell scripts: whatever they do, they do it by running other programs.
    "gunzip",
    "zcat",
    "uncompress",
    "zforce",
    "savelog",
    "tzselect",
    "which",
    "which.debianutils",
    "mkfontdir",
    "bashbug",
    "gawkbug",
];

/// Perl programs (the image removes perl itself; they are refused by name all the same).
const PERL_PROGRAMS: &[&str] = &[
    "cpan",
    "cpan5.36-x86_64-linux-gnu",
    "perl5.36-x86_64-linux-gnu",
    "corelist",
    "enc2xs",
    "encguess",
    "h2ph",
    "h2xs",
    "instmodsh",
    "json_pp",
    "libnetcfg",
    "perlbug",
    "perldoc",
    "perlivp",
    "perlthanks",
    "piconv",
    "pl2pm",
    "pod2html",
    "pod2man",
    "pod2text",
    "pod2usage",
    "podchecker",
    "prove",
    "ptar",
    "ptardiff",
    "ptargrep",
    "shasum",
    "splain",
    "streamzip",
    "xsubpp",
    "zipdetails",
    "findrule",
    "debconf",
    "debconf-apt-progress",
    "debconf-communicate",
    "debconf-copydb",
    "debconf-escape",
    "debconf-set-selections",
    "debconf-show",
];

/// Reads or changes the system outside the workspace.
const SYSTEM: &[&str] = &[
    "dmesg", "logger", "wall", "mesg", "write", "last", "lastb", "lastlog", "lslogins", "faillog", "utmpdump", "wdctl",
    "ipcmk", // Create their files in /tmp unless told otherwise.
    "mktemp", "tempfile",
];

const PROCESSES: &[&str] = &[
    "ps", "top", "htop", "pgrep", "pkill", "pidof", "pidwait", "kill", "killall", "killall5", "pmap", "pwdx", "lsof",
    "fuser", "pstree", "prlimit", "renice", "skill", "snice", "w", "gcore", "lsfd", "lsns", "lslocks", "lsipc", "ipcs",
    "pldd",
];

const NETWORK: &[&str] = &[
    "curl",
    "wget",
    "wget2",
    "nc",
    "ncat",
    "netcat",
    "nc.openbsd",
    "nc.traditional",
    "socat",
    "telnet",
    "ftp",
    "tftp",
    "lftp",
    "aria2c",
    "ping",
    "ping6",
    "dig",
    "nslookup",
    "host",
    "whois",
    "nmap",
    "tcpdump",
    "tshark",
    "ip",
    "ifconfig",
    "route",
    "traceroute",
    "tracepath",
    "lynx",
    "links",
    "w3m",
    "http",
    "https",
    "xh",
    "ssh",
    "scp",
    "sftp",
    "rsync",
    "gnutls-cli",
    "smbclient",
    "ldapsearch",
    "mysql",
    "psql",
    "redis-cli",
    "mongo",
    "mongosh",
    "nsupdate",
    "arp",
    "arping",
    "iptables",
    "nft",
    // Name lookups (`getent hosts`, `hostname -f`) are DNS queries.
    "getent",
    "hostname",
    "dnsdomainname",
    "domainname",
    "nisdomainname",
    "ypdomainname",
];

const DESTRUCTIVE: &[&str] = &[
    "rm",
    "rmdir",
    "shred",
    "dd",
    "truncate",
    "wipefs",
    "mke2fs",
    "mkswap",
    "fdisk",
    "sfdisk",
    "cfdisk",
    "parted",
    "sgdisk",
    "blkdiscard",
    "mount",
    "umount",
    "swapon",
    "swapoff",
    "reboot",
    "shutdown",
    "halt",
    "poweroff",
    "init",
    "telinit",
    "modprobe",
    "insmod",
    "rmmod",
    "sysctl",
    "hwclock",
    "chown",
    "chgrp",
    "chattr",
    "setfacl",
    "useradd",
    "userdel",
    "usermod",
    "passwd",
    "chpasswd",
    "groupadd",
    "visudo",
    "unlink",
    "chcon",
    "mknod",
    "ipcrm",
    "localedef",
    "chage",
    "chfn",
    "chsh",
    "gpasswd",
    "expiry",
    "addpart",
    "delpart",
    "partx",
    "resizepart",
    "ginstall-info",
    "install-info",
];

const ARCHIVES: &[&str] = &["unzip", "7z", "7za", "7zr", "pax", "ar", "bsdcpio"];

/// Programs known to do nothing but read and write the files named in their arguments (which
/// the path rules confine), or to print what they compute. Under `security: blocklist` only
/// these, the programs with rules of their own, and nothing unclassified run: a program the
/// policy does not know (`setarch`, which runs another) is refused, not let through.
const KNOWN_SAFE: &[&str] = &[
    // coreutils
    "[",
    "arch",
    "b2sum",
    "base32",
    "base64",
    "basename",
    "basenc",
    "chmod",
    "cksum",
    "comm",
    "cp",
    "csplit",
    "date",
    "df",
    "dircolors",
    "dirname",
    "du",
    "echo",
    "expand",
    "expr",
    "factor",
    "false",
    "fmt",
    "fold",
    "groups",
    "head",
    "hostid",
    "id",
    "join",
    "link",
    "logname",
    "md5sum",
    "md5sum.textutils",
    "mkdir",
    "mkfifo",
    "mv",
    "nl",
    "nproc",
    "numfmt",
    "od",
    "paste",
    "pathchk",
    "pinky",
    "pr",
    "printenv",
    "printf",
    "ptx",
    "pwd",
    "readlink",
    "realpath",
    "seq",
    "sha1sum",
    "sha224sum",
    "sha256sum",
    "sha384sum",
    "sha512sum",
    "shuf",
    "sleep",
    "stat",
    "stty",
    "sum",
    "sync",
    "tac",
    "tee",
    "test",
    "touch",
    "true",
    "tsort",
    "tty",
    "uname",
    "unexpand",
    "users",
    "who",
    "whoami",
    "yes",
    // util-linux, ncurses and others: file tools, system facts, the terminal
    "cmp",
    "diff",
    "fallocate",
    "fincore",
    "findmnt",
    "getconf",
    "getopt",
    "gpgv",
    "gpgv1",
    "gpgv2",
    "gzip",
    "hardlink",
    "iconv",
    "ischroot",
    "locale",
    "lsattr",
    "lsblk",
    "lscpu",
    "lsirq",
    "lsmem",
    "mcookie",
    "mountpoint",
    "namei",
    "rename.ul",
    "rev",
    "whereis",
    "zdump",
    "clear",
    "clear_console",
    "reset",
    "setterm",
    "tabs",
    "tput",
    "tset",
    "tic",
    "toe",
    "infocmp",
    "captoinfo",
    "infotocap",
    "X11",
    // poppler and font tools
    "pdfattach",
    "pdfdetach",
    "pdffonts",
    "pdfimages",
    "pdfinfo",
    "pdfseparate",
    "pdfsig",
    "pdftocairo",
    "pdftohtml",
    "pdftoppm",
    "pdftops",
    "pdfunite",
    "mkfontscale",
    "bdftopcf",
    "bdftruncate",
    "fonttosfnt",
    "ucs2any",
];

/// Whether the catalog knows `name` as a program that only works on its arguments' files.
pub fn known_safe(name: &str) -> bool {
    KNOWN_SAFE.contains(&name)
}

/// Programs that write files by design (refused when the workspace is read-only). Per-program
/// rules add the write options of the others (`sed -i`, `sort -o`, `uniq IN OUT`, ...).
const WRITERS: &[&str] = &[
    "touch",
    "mkdir",
    "rmdir",
    "rm",
    "cp",
    "mv",
    "tee",
    "dd",
    "truncate",
    "ln",
    "link",
    "unlink",
    "chmod",
    "chown",
    "chgrp",
    "install",
    "shred",
    "mktemp",
    "mkfifo",
    "mknod",
    "split",
    "csplit",
    "patch",
    "tar",
    "unzip",
    "gzip",
    "gunzip",
    "bzip2",
    "bunzip2",
    "xz",
    "unxz",
    "zstd",
    "unzstd",
    "lz4",
    "zip",
    "7z",
    "sponge",
    "rsync",
    "wget",
    "curl",
    "setfacl",
    "chattr",
    "fallocate",
    "uudecode",
    "pdftoppm",
    "pdfimages",
    "pdfseparate",
    "pdfunite",
    "convert",
    "magick",
    "ffmpeg",
    "sqlite3",
    "git",
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
    } else if is(INTERPRETERS)
        || is(PERL_PROGRAMS)
        || ["-gcc", "-g++", "-cc", "-c++", "-cpp", "-clang"].iter().any(|s| base.ends_with(s))
    {
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
    } else if is(SYSTEM) {
        Some(Danger::System)
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

    /// Every program the agent image installs is classified: dangerous, known safe, or with a
    /// rule set of its own. A new program (a new package, a new Debian release) fails this
    /// until someone decides; meanwhile `blocklist` refuses it.
    #[test]
    fn every_program_of_the_sandbox_image_is_classified() {
        let list =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sandbox-programs.txt")).unwrap();
        let programs: Vec<&str> = list.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
        assert!(programs.len() > 300, "{} programs listed", programs.len());
        let unclassified: Vec<&&str> = programs
            .iter()
            .filter(|p| danger(p).is_none() && !known_safe(p) && !crate::agent::exec::rules::has_rule(p))
            .collect();
        assert!(unclassified.is_empty(), "unclassified programs of the sandbox image: {unclassified:?}");
        for launcher in ["setarch", "linux32", "linux64", "x86_64", "i386", "choom", "runcon", "scriptlive"] {
            assert_eq!(danger(launcher), Some(Danger::RunsPrograms), "{launcher}");
        }
        // Nothing is both safe and dangerous.
        let both: Vec<&&str> = KNOWN_SAFE.iter().filter(|p| danger(p).is_some()).collect();
        assert!(both.is_empty(), "{both:?}");
    }

    /// The list is of the image the Dockerfile builds: the same extra packages.
    #[test]
    fn the_program_list_is_of_the_dockerfiles_packages() {
        let root = env!("CARGO_MANIFEST_DIR");
        let list = std::fs::read_to_string(format!("{root}/scripts/sandbox-programs.txt")).unwrap();
        let listed = list
            .lines()
            .find_map(|l| l.strip_prefix("# installed by Dockerfile.sandbox: "))
            .expect("the header names the packages");
        let dockerfile = std::fs::read_to_string(format!("{root}/Dockerfile.sandbox")).unwrap();
        let lines: Vec<&str> = dockerfile.lines().collect();
        let start =
            lines.iter().position(|l| l.trim_end().ends_with("apt-get install -y --no-install-recommends \\")).unwrap();
        let installed: Vec<&str> = lines[start + 1..]
            .iter()
            .take_while(|l| !l.trim_start().starts_with("&&"))
            .map(|l| l.trim().trim_end_matches('\\').trim())
            .collect();
        assert_eq!(
            listed.split_whitespace().collect::<Vec<_>>(),
            installed,
            "regenerate: scripts/sandbox-programs > scripts/sandbox-programs.txt"
        );
    }
}
