//! The exec policy as the model meets it: what is refused and the reason it reads, what is
//! allowed and the output it gets, and how commands run (timeout, output cap, stdin,
//! environment, read-only workspaces, the `exec-policy` CLI).

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use moltmates::agent::exec::{ExecLimits, ExecPolicy, check, execute};
use moltmates::crd::{ExecSecurity, Profile, WorkspaceAccess};

/// Every program with a rule set, plus programs that must stay refused even when an admin
/// lists them (they would hand out everything else).
const WIDE_BINS: &[&str] = &[
    "cat", "head", "tail", "grep", "wc", "ls", "sort", "uniq", "cut", "tr", "sed", "awk", "find", "ln", "env", "xargs",
    "busybox", "bash", "sh", "timeout", "nice", "python3", "ps", "setarch",
];

#[derive(Clone, Copy, Debug)]
enum P {
    /// allowlist: cat, grep.
    Narrow,
    /// allowlist: WIDE_BINS.
    Wide,
    WideRo,
    Block,
    BlockRo,
    Full,
    FullRo,
    /// A profile's preset.
    Preset(Profile),
}

fn policy(p: P) -> ExecPolicy {
    let make = |security, bins: &[&str], access| ExecPolicy {
        security,
        safe_bins: bins.iter().map(|b| b.to_string()).collect(),
        workspace_access: access,
    };
    match p {
        P::Narrow => make(ExecSecurity::Allowlist, &["cat", "grep"], WorkspaceAccess::Rw),
        P::Wide => make(ExecSecurity::Allowlist, WIDE_BINS, WorkspaceAccess::Rw),
        P::WideRo => make(ExecSecurity::Allowlist, WIDE_BINS, WorkspaceAccess::Ro),
        P::Block => make(ExecSecurity::Blocklist, &[], WorkspaceAccess::Rw),
        P::BlockRo => make(ExecSecurity::Blocklist, &[], WorkspaceAccess::Ro),
        P::Full => make(ExecSecurity::Full, &[], WorkspaceAccess::Rw),
        P::FullRo => make(ExecSecurity::Full, &[], WorkspaceAccess::Ro),
        P::Preset(profile) => {
            let preset = moltmates::profile::preset(profile);
            ExecPolicy {
                security: preset.exec_security,
                safe_bins: preset.safe_bins,
                workspace_access: preset.workspace_access,
            }
        }
    }
}

/// A workspace with ordinary files, plus traps: symlinks that lead outside (made here,
/// pointing at a directory outside the workspace) and a `cat` script planted in `files/`.
struct Fixture {
    _tmp: tempfile::TempDir,
    _outside: tempfile::TempDir,
    ws: PathBuf,
}

impl Fixture {
    fn files(&self) -> PathBuf {
        self.ws.join("files")
    }
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("workspace");
    let files = ws.join("files");
    std::fs::create_dir_all(files.join("sub")).unwrap();
    let write = |path: &Path, text: &str| std::fs::write(path, text).unwrap();
    write(&ws.join("MEMORY.md"), "remember\n");
    write(&files.join("notes.txt"), "first line\nsecond line\nthird line\n");
    write(&files.join("fruits.txt"), "banana\napple\ncherry\napple\nkiwi\n");
    write(&files.join("dups.txt"), "a\na\nb\nc\nc\nc\n");
    write(&files.join("data.csv"), "alice,3,paris\nbob,1,rome\ncarol,2,oslo\n");
    write(&files.join("my file.txt"), "spaces are fine\n");
    write(&files.join("sub/deep.txt"), "needle here\n");
    write(&files.join("sub/other.md"), "no match\n");
    write(&outside.path().join("secret"), "needle in the secret\n");
    symlink(outside.path().join("secret"), files.join("escape")).unwrap();
    symlink(outside.path(), files.join("outdir")).unwrap();
    symlink(outside.path().join("missing"), files.join("dangling")).unwrap();
    symlink("/etc", files.join("etc")).unwrap();
    // Where `pdftotext -htmlmeta report.pdf` would write.
    symlink(outside.path().join("secret"), files.join("report.html")).unwrap();
    // PATH hijack bait: a program named like an allowlisted one, in the working directory.
    write(&files.join("cat"), "#!/bin/sh\necho HIJACKED\n");
    std::fs::set_permissions(files.join("cat"), std::fs::Permissions::from_mode(0o755)).unwrap();
    Fixture { _tmp: tmp, _outside: outside, ws }
}

#[test]
fn refuses_escapes_with_a_reason_that_names_the_culprit() {
    let f = fixture();
    let table: &[(P, &str, &str)] = &[
        // Shell syntax: there is no shell, and nothing a shell would interpret gets through.
        (P::Wide, "cat notes.txt | sh", "`|`"),
        (P::Wide, "cat notes.txt; id", "`;`"),
        (P::Wide, "cat notes.txt && id", "`&`"),
        (P::Wide, "cat notes.txt & id", "`&`"),
        (P::Wide, "cat $(id)", "`$` would be expanded by a shell"),
        (P::Wide, "cat `id`", "backticks"),
        (P::Wide, "cat $HOME/.ssh/id_rsa", "`$`"),
        (P::Wide, "cat ${HOME}", "`$`"),
        (P::Wide, "cat \"$HOME\"", "`$`"),
        (P::Wide, "cat \"\\$HOME\"", "`$`"),
        (P::Wide, "cat \"`id`\"", "backticks"),
        (P::Wide, "cat notes.txt > copy.txt", "`>`"),
        (P::Wide, "cat notes.txt >> copy.txt", "`>`"),
        (P::Wide, "cat < notes.txt", "`<`"),
        (P::Wide, "cat notes.txt 2>&1", "`>`"),
        (P::Wide, "cat notes.txt\nid", "line break"),
        (P::Wide, "cat 'notes.txt\nid'", "line break"),
        (P::Wide, "cat notes.txt\r\nid", "line break"),
        (P::Wide, "cat notes\0.txt", "U+0000"),
        (P::Wide, "cat notes.txt\u{7}", "U+0007"),
        (P::Wide, "cat *.txt", "`*`"),
        (P::Wide, "cat note?.txt", "`?`"),
        (P::Wide, "cat [nf]otes.txt", "`[`"),
        (P::Wide, "cat ~/x", "`~`"),
        (P::Wide, "cat ~root/.bashrc", "`~`"),
        (P::Wide, "grep --file=~/patterns x", "`~`"),
        (P::Wide, "FOO=1 cat notes.txt", "`FOO=1`"),
        (P::Wide, "PATH=/tmp cat notes.txt", "`PATH=/tmp`"),
        (P::Wide, "LD_PRELOAD=/tmp/x.so cat notes.txt", "`LD_PRELOAD=/tmp/x.so`"),
        (P::Wide, "cat notes.txt # hidden", "`#`"),
        (P::Wide, "(cat notes.txt)", "`(`"),
        (P::Wide, "{ cat notes.txt; }", "`{`"),
        (P::Wide, "cat {notes,fruits}.txt", "`{`"),
        (P::Wide, "cat 'notes.txt", "unterminated single quote"),
        (P::Wide, "cat \"notes.txt", "unterminated double quote"),
        (P::Wide, "cat notes.txt\\", "backslash"),
        (P::Wide, "", "empty"),
        // Which program: safeBins, paths, PATH hijacks, wrappers, shells, interpreters.
        (P::Narrow, "python3 -c 'print(1)'", "`python3` is not in safeBins (allowed: cat, grep)"),
        (P::Narrow, "sort fruits.txt", "`sort` is not in safeBins (allowed: cat, grep)"),
        (P::Wide, "/bin/cat notes.txt", "`/bin/cat` is a path"),
        (P::Wide, "./cat notes.txt", "`./cat` is a path"),
        (P::Wide, "files/cat", "`files/cat` is a path"),
        (P::Full, "../files/cat notes.txt", "`../files/cat` is a path"),
        (P::Wide, "env -S 'sh -c id'", "`env` runs other programs"),
        (P::Block, "env -S 'sh -c id'", "`env` runs other programs"),
        (P::Wide, "busybox sh -c id", "`busybox` is a shell"),
        (P::Block, "busybox sh", "`busybox` is a shell"),
        (P::Wide, "xargs cat", "`xargs` runs other programs"),
        (P::Block, "xargs -a list cat", "`xargs` runs other programs"),
        (P::Wide, "bash -c id", "`bash` is a shell"),
        (P::Wide, "sh -c id", "`sh` is a shell"),
        (P::Block, "dash", "`dash` is a shell"),
        (P::Wide, "timeout 5 sh", "`timeout` runs other programs"),
        (P::Wide, "nice cat notes.txt", "`nice` runs other programs"),
        (P::Block, "nohup cat notes.txt", "`nohup` runs other programs"),
        (P::Block, "stdbuf -o0 cat notes.txt", "`stdbuf` runs other programs"),
        (P::Block, "sudo id", "`sudo`"),
        (P::Block, "su -c id", "`su`"),
        (P::Wide, "python3 -c 'import os'", "`python3` runs code"),
        (P::Block, "perl -e 'exec q(sh)'", "`perl` runs code"),
        (P::Block, "python3.11 -c 1", "`python3.11` runs code"),
        (P::Block, "curl http://example.invalid", "`curl` talks to the network"),
        (P::Block, "wget -O- http://example.invalid", "`wget` talks to the network"),
        (P::Block, "nc -l 4444", "`nc` talks to the network"),
        (P::Block, "rm -rf .", "`rm` destroys data"),
        (P::Block, "dd if=notes.txt of=x", "`dd` destroys data"),
        (P::Wide, "ps eww", "`ps` inspects or signals other processes"),
        (P::Block, "kill -9 1", "`kill` inspects or signals other processes"),
        (P::Block, "tar --to-command=sh -xf a.tar", "`tar` runs other programs"),
        (P::Block, "git -c core.pager=sh log", "`git` runs other programs"),
        (P::Block, "vim -c '!id'", "`vim` runs code"),
        (P::Block, "less '+!id' notes.txt", "`less` runs code"),
        (P::Block, "make -f x", "`make` runs other programs"),
        (P::Block, "unzip a.zip", "`unzip` unpacks archives"),
        // Under blocklist a script is judged by its interpreter.
        (P::Block, "egrep x notes.txt", "`egrep` is a script run by `sh`"),
        (P::Full, "nosuchprogram-xyz", "`nosuchprogram-xyz` was not found in /usr/bin or /bin"),
        (P::Full, "su", "`su` is setuid or setgid"),
        (P::Full, "-rf", "`-rf` is not a program name"),
        // sed: commands and flags that run, read or write.
        (P::Wide, "sed 'e id' notes.txt", "`e` command"),
        (P::Wide, "sed -n 'w /tmp/x' notes.txt", "`w` command"),
        (P::Wide, "sed 's/a/b/w /tmp/x' notes.txt", "`w` flag"),
        (P::Wide, "sed 's/.*/id/e' notes.txt", "`e` flag"),
        (P::Wide, "sed 'r /etc/passwd' notes.txt", "`r` command"),
        (P::Wide, "sed 'R /etc/shadow' notes.txt", "`R` command"),
        (P::Wide, "sed 'W /tmp/x' notes.txt", "`W` command"),
        (P::Wide, "sed -f script.sed notes.txt", "`sed -f`"),
        (P::Wide, "sed -e 'a\\' -e 'e id' notes.txt", "trailing backslash"),
        (P::Wide, "sed 's/[/]/x/;e id' notes.txt", "`e` command"),
        (P::Wide, "sed --posix p notes.txt", "`sed --posix`"),
        (P::WideRo, "sed -i 's/a/b/' notes.txt", "read-only"),
        (P::Wide, "sed --in-place=/tmp/ 's/a/b/' notes.txt", "`/tmp/`"),
        (P::Wide, "sed p /etc/passwd", "`/etc/passwd` is outside files/"),
        // awk: system(), pipes, getline from files, redirections, program files, gawk directives.
        (P::Wide, "awk 'BEGIN{system(\"id\")}'", "`system`"),
        (P::Wide, "awk 'BEGIN{print \"x\" | \"sh\"}'", "`|`"),
        (P::Wide, "awk 'BEGIN{\"id\" | getline x; print x}'", "`|`"),
        (P::Wide, "awk 'BEGIN{while ((getline l < \"/etc/passwd\") > 0) print l}'", "`getline`"),
        (P::Wide, "awk '{print > \"/tmp/x\"}' notes.txt", "`>`"),
        (P::Wide, "awk '{print >> \"out\"}' notes.txt", "`>`"),
        (P::Wide, "awk -f prog.awk notes.txt", "`awk -f`"),
        (P::Wide, "awk -E prog.awk", "`awk -E`"),
        (P::Wide, "awk '@load \"readdir\"; BEGIN{}'", "`@`"),
        (P::Wide, "awk 'BEGIN{ARGV[1]=\"/etc/passwd\"; ARGC=2} {print}'", "`ARGV`"),
        (P::Wide, "awk '{print}' /etc/passwd", "`/etc/passwd`"),
        // sort.
        (P::Wide, "sort --compress-program=sh fruits.txt", "`sort --compress-program`"),
        (P::Wide, "sort --compress=sh fruits.txt", "`--compress-program`"),
        (P::Wide, "sort -o /tmp/out fruits.txt", "`/tmp/out` is outside files/"),
        (P::WideRo, "sort -o sorted.txt fruits.txt", "`sort` would write `sorted.txt`, but the workspace is read-only"),
        (P::Wide, "sort --files0-from=list", "`sort --files0-from`"),
        (P::Wide, "sort -T /tmp fruits.txt", "`sort -T`"),
        // find.
        (P::Wide, "find . -exec id '{}' +", "`find -exec`"),
        (P::Wide, "find . -execdir id '{}' ';'", "`find -execdir`"),
        (P::Wide, "find . -ok rm '{}' ';'", "`find -ok`"),
        (P::Wide, "find . -okdir rm '{}' ';'", "`find -okdir`"),
        (P::Wide, "find . -delete", "`find -delete`"),
        (P::Wide, "find . -fprint /tmp/x", "`find -fprint`"),
        (P::Wide, "find . -fls /tmp/x", "`find -fls`"),
        (P::Wide, "find . -fprintf /tmp/x %p", "`find -fprintf`"),
        (P::Wide, "find -L . -name secret", "`find -L`"),
        (P::Wide, "find . -follow", "`find -follow`"),
        (P::Wide, "find / -name passwd", "`/` is outside files/"),
        // head and tail.
        (P::Wide, "tail -f notes.txt", "`tail -f`"),
        (P::Wide, "tail -F notes.txt", "`tail -F`"),
        (P::Wide, "tail --follow=name notes.txt", "`tail --follow`"),
        (P::Wide, "tail -5f notes.txt", "`tail -5f`"),
        (P::Wide, "head -n 2 /etc/passwd", "`/etc/passwd` is outside files/"),
        // grep.
        (P::Wide, "grep -f /etc/passwd notes.txt", "`/etc/passwd`"),
        (P::Wide, "grep -R needle .", "`grep -R`"),
        (P::Wide, "grep -r root /etc", "`/etc` is outside files/"),
        (P::Wide, "grep root ../../etc/passwd", "`../../etc/passwd` is outside files/"),
        (P::Wide, "grep --exclude-from=/etc/passwd x .", "`/etc/passwd`"),
        // ls.
        (P::Wide, "ls -L outdir", "`ls -L`"),
        (P::Wide, "ls /", "`/` is outside files/"),
        (P::Wide, "ls ../..", "`../..` is outside files/"),
        (P::Wide, "ls outdir", "`outdir` leads outside files/ through a symbolic link"),
        // uniq, wc, cut, cat, ln: file arguments, symlink escapes, unknown options.
        (P::Wide, "uniq dups.txt /tmp/out", "`/tmp/out` is outside files/"),
        (P::WideRo, "uniq dups.txt out.txt", "`uniq` would write `out.txt`"),
        (P::Wide, "wc --files0-from=list", "`wc --files0-from`"),
        (P::Wide, "cut -d: -f1 /etc/passwd", "`/etc/passwd`"),
        (P::Wide, "cat /proc/self/environ", "`/proc/self/environ` is outside files/"),
        (P::Wide, "cat ../../etc/passwd", "`../../etc/passwd` is outside files/"),
        (P::Wide, "cat /etc/passwd", "`/etc/passwd` is outside files/"),
        (P::Wide, "cat escape", "`escape` leads outside files/ through a symbolic link"),
        (P::Wide, "cat outdir/secret", "`outdir/secret` leads outside files/"),
        (P::Wide, "cat etc/passwd", "`etc/passwd` leads outside files/"),
        (P::Wide, "cat dangling", "`dangling` cannot be resolved"),
        (P::Wide, "cat /dev/zero", "`/dev/zero` is outside files/"),
        (P::Wide, "cat -- /etc/passwd", "`/etc/passwd`"),
        (P::Wide, "cat --bogus notes.txt", "`cat --bogus`: this option is not known"),
        (P::Wide, "ln -s /etc/passwd link", "`ln -s`"),
        // A read-only workspace refuses programs and options that write.
        (P::FullRo, "touch x", "`touch` writes files, but the workspace is read-only"),
        (P::BlockRo, "mkdir d", "`mkdir` writes files"),
        (P::FullRo, "cp notes.txt copy.txt", "`cp` writes files"),
        (P::FullRo, "mv notes.txt x", "`mv` writes files"),
        (P::FullRo, "tee x", "`tee` writes files"),
        (P::FullRo, "ln notes.txt x", "`ln` writes files"),
        (P::FullRo, "chmod 600 notes.txt", "`chmod` writes files"),
        (P::FullRo, "truncate -s0 notes.txt", "`truncate` writes files"),
        (P::FullRo, "dd if=notes.txt of=x", "`dd` writes files"),
        (P::FullRo, "rm notes.txt", "`rm` writes files"),
        // Even `full` keeps every file argument inside the workspace.
        (P::Full, "cat /etc/passwd", "`/etc/passwd` is outside files/"),
        (P::Full, "od -c /etc/shadow", "`/etc/shadow` is outside files/"),
        (P::Block, "du --exclude-from=/etc/passwd .", "`/etc/passwd` is outside files/"),
        (P::Full, "cp escape copy", "`escape` leads outside"),
        (P::Block, "du -sh /", "`/` is outside files/"),
        (P::Block, "stat -c %n outdir/secret", "`outdir/secret` leads outside"),
        // The agent's own state beside files/: persona, memory, sessions, reset record.
        (P::Preset(Profile::Family), "uniq evil.txt ../SOUL.md", "`../SOUL.md` is outside files/"),
        (
            P::Preset(Profile::Family),
            "sort -o ../sessions/replies.jsonl planted.txt",
            "`../sessions/replies.jsonl` is outside files/",
        ),
        (P::Preset(Profile::Family), "cat ../MEMORY.md", "`../MEMORY.md` is outside files/"),
        (P::Wide, "ls ..", "`..` is outside files/"),
        (P::Full, "cp planted ../.moltmate/reset-generation", "`../.moltmate/reset-generation` is outside files/"),
        (P::Block, "du -a ..", "`..` is outside files/"),
        // Operands that a program opens as URIs or descriptors, wherever they point.
        (P::Preset(Profile::Family), "pdftotext file:///etc/passwd -", "looks like a URI"),
        (P::Preset(Profile::Family), "pdftotext fd://0 -", "looks like a URI"),
        (P::Preset(Profile::Family), "pdftotext -layout FILE:/x.pdf out.txt", "looks like a URI"),
        (P::Block, "stat http://example.invalid/x", "looks like a URI"),
        (P::Preset(Profile::Family), "pdftotext -htmlmeta report.pdf", "`report.html` leads outside"),
        (P::Preset(Profile::Family), "pdftotext report.pdf -bbox", "`report.html` leads outside"),
        // Programs that run the program named after them: gawk without the awk rule would read
        // and write anywhere and talk raw HTTP. Refused by name, and anything the catalog does
        // not know is refused under blocklist too.
        (P::Block, "setarch x86_64 gawk 'BEGIN { print 1 }'", "`setarch` runs other programs"),
        (P::Block, "linux64 gawk 'BEGIN { print 1 }'", "`linux64` runs other programs"),
        (P::Block, "x86_64 gawk 'BEGIN { print 1 }'", "`x86_64` runs other programs"),
        (P::Block, "choom -n 0 -- gawk 'BEGIN { print 1 }'", "`choom` runs other programs"),
        (P::Block, "runcon -t x gawk 'BEGIN { print 1 }'", "`runcon` runs other programs"),
        (P::Block, "scriptlive -T timing log", "`scriptlive` runs other programs"),
        (P::Block, "uclampset -m 0 gawk 'BEGIN { print 1 }'", "`uclampset` runs other programs"),
        (P::Wide, "setarch x86_64 cat notes.txt", "`setarch` runs other programs"),
        (P::Block, "getent hosts example.org", "`getent` talks to the network"),
        (P::Block, "dmesg", "`dmesg` reads or changes the system"),
        (P::Block, "mktemp", "`mktemp` reads or changes the system"),
        (P::Block, "lsfd", "`lsfd` inspects or signals other processes"),
        (P::Block, "gpg --version", "`gpg` runs other programs"),
        (P::Block, "nosuchprogram-xyz", "`nosuchprogram-xyz` is not a program the policy knows"),
        (P::Block, "file notes.txt", "`file` is not a program the policy knows"),
        // Programs without a rule: clustered short options and abbreviated long ones.
        (P::Block, "date -uf/etc/passwd", "`/etc/passwd` is outside files/"),
        (P::Block, "cp -at/outside notes.txt", "`/outside` is outside files/"),
        (P::Block, "du --files0-fr=list", "`du --files0-from`"),
        (P::Block, "du --files0 list", "`du --files0-from`"),
    ];
    assert!(table.len() >= 80, "{} rows", table.len());
    let mut failures = Vec::new();
    for (p, line, want) in table {
        match check(&policy(*p), &f.ws, line) {
            Ok(approved) => failures.push(format!("{p:?} {line:?}: allowed as {approved:?}")),
            Err(denied) if !denied.to_string().contains(want) => {
                failures.push(format!("{p:?} {line:?}: reason {:?} does not mention {want:?}", denied.to_string()));
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), table.len(), failures.join("\n"));
}

#[tokio::test]
async fn ordinary_commands_run_and_print_what_the_model_expects() {
    let f = fixture();
    let notes = "first line\nsecond line\nthird line\n";
    let table: &[(P, &str, &str)] = &[
        (P::Wide, "cat notes.txt", notes),
        (P::Wide, "cat -- notes.txt", notes),
        (P::Wide, "cat 'my file.txt'", "spaces are fine\n"),
        (P::Wide, "cat \"my file.txt\"", "spaces are fine\n"),
        (P::Wide, "cat my\\ file.txt", "spaces are fine\n"),
        (P::Wide, "cat -n notes.txt", "     1\tfirst line\n     2\tsecond line\n     3\tthird line\n"),
        (P::Wide, "head -n 2 notes.txt", "first line\nsecond line\n"),
        (P::Wide, "head -1 notes.txt", "first line\n"),
        (P::Wide, "head -c 5 notes.txt", "first"),
        (P::Wide, "tail -n 1 notes.txt", "third line\n"),
        (P::Wide, "tail -n +2 notes.txt", "second line\nthird line\n"),
        (P::Wide, "wc -l notes.txt", "3 notes.txt\n"),
        (P::Wide, "wc -c notes.txt", "34 notes.txt\n"),
        (P::Wide, "wc -w 'my file.txt'", "3 my file.txt\n"),
        // grep -r does not follow the `escape` and `outdir` links, whose target also has a needle.
        (P::Wide, "grep -r needle .", "./sub/deep.txt:needle here\n"),
        (P::Wide, "grep -rl needle --include='*.txt' .", "./sub/deep.txt\n"),
        (P::Wide, "grep -c apple fruits.txt", "2\n"),
        (P::Wide, "grep -c '' notes.txt", "3\n"),
        (P::Wide, "grep -i APPLE fruits.txt", "apple\napple\n"),
        (P::Wide, "grep -n cherry fruits.txt", "3:cherry\n"),
        (P::Wide, "grep -E 'apple|kiwi' fruits.txt", "apple\napple\nkiwi\n"),
        (P::Wide, "grep -v a fruits.txt", "cherry\nkiwi\n"),
        (P::Wide, "grep -e kiwi -e cherry fruits.txt", "cherry\nkiwi\n"),
        (P::Wide, "sort fruits.txt", "apple\napple\nbanana\ncherry\nkiwi\n"),
        (P::Wide, "sort -r -u fruits.txt", "kiwi\ncherry\nbanana\napple\n"),
        (P::Wide, "sort -t, -k2 -n data.csv", "bob,1,rome\ncarol,2,oslo\nalice,3,paris\n"),
        (P::Wide, "uniq -c dups.txt", "      2 a\n      1 b\n      3 c\n"),
        (P::Wide, "uniq -d dups.txt", "a\nc\n"),
        (P::Wide, "cut -d, -f1 data.csv", "alice\nbob\ncarol\n"),
        (P::Wide, "cut -c1-5 notes.txt", "first\nsecon\nthird\n"),
        // stdin is empty, so tr has nothing to translate.
        (P::Wide, "tr a-z A-Z", ""),
        (P::Wide, "ls sub", "deep.txt\nother.md\n"),
        (P::Wide, "ls -a sub", ".\n..\ndeep.txt\nother.md\n"),
        (P::Wide, "find sub -name '*.txt'", "sub/deep.txt\n"),
        (P::Wide, "find sub -type f -name deep.txt -print", "sub/deep.txt\n"),
        (P::Wide, "sed -n 2p notes.txt", "second line\n"),
        (P::Wide, "sed 's/apple/APPLE/g' fruits.txt", "banana\nAPPLE\ncherry\nAPPLE\nkiwi\n"),
        (P::Wide, "sed -n '/cherry/p' fruits.txt", "cherry\n"),
        (P::Wide, "sed '1i header' notes.txt", "header\nfirst line\nsecond line\nthird line\n"),
        (P::Wide, "awk -F, '{print $2}' data.csv", "3\n1\n2\n"),
        (P::Wide, "awk -F, '$2 > 1 {print $1}' data.csv", "alice\ncarol\n"),
        (P::Wide, "awk 'NR==2' notes.txt", "second line\n"),
        (P::Wide, "awk -F, '{s += $2} END {print s}' data.csv", "6\n"),
        (P::Preset(Profile::Family), "sort -u fruits.txt", "apple\nbanana\ncherry\nkiwi\n"),
        (P::Preset(Profile::HighSecurity), "grep -c apple fruits.txt", "2\n"),
        (P::Block, "tac notes.txt", "third line\nsecond line\nfirst line\n"),
        (P::Full, "echo hello world", "hello world\n"),
    ];
    assert!(table.len() >= 30, "{} rows", table.len());
    let mut failures = Vec::new();
    for (p, line, want) in table {
        match execute(&policy(*p), &f.ws, line, &ExecLimits::default()).await {
            Ok(out)
                if out.exit_code == Some(0)
                    && out.stdout == *want
                    && out.stderr.is_empty()
                    && !out.truncated
                    && !out.timed_out => {}
            other => failures.push(format!("{p:?} {line:?}: {other:?}, wanted {want:?}")),
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), table.len(), failures.join("\n"));
}

#[test]
fn programs_come_from_the_trusted_directories_only() {
    let f = fixture();
    // The `cat` script planted in files/ is never what `cat` means.
    let approved = check(&policy(P::Wide), &f.ws, "cat notes.txt").unwrap();
    assert_eq!(approved.program, Path::new("/usr/bin/cat"));
    assert_eq!(approved.args, ["notes.txt"]);
    // GNU sed also gets its own sandbox, as a second line behind the script check.
    assert_eq!(
        check(&policy(P::Wide), &f.ws, "sed -n 2p notes.txt").unwrap().args,
        ["--sandbox", "-n", "2p", "notes.txt"]
    );
}

#[tokio::test]
async fn exit_codes_and_errors_come_through() {
    let f = fixture();
    let run = |line: &'static str| {
        let ws = f.ws.clone();
        async move { execute(&policy(P::Wide), &ws, line, &ExecLimits::default()).await.unwrap() }
    };
    let out = run("grep nomatch notes.txt").await;
    assert_eq!((out.exit_code, out.stdout.as_str()), (Some(1), ""));
    let out = run("ls nosuch").await;
    assert_eq!(out.exit_code, Some(2));
    assert!(out.stderr.contains("nosuch"), "{out:?}");
    let err = execute(&policy(P::Wide), &f.ws, "cat /etc/passwd", &ExecLimits::default()).await.unwrap_err();
    assert_eq!(err.to_string(), "command denied: `/etc/passwd` is outside files/, the only folder commands can use");
}

#[tokio::test]
async fn writes_stay_in_the_workspace_when_it_is_writable() {
    let f = fixture();
    let out = execute(&policy(P::Wide), &f.ws, "sort -o sorted.txt fruits.txt", &ExecLimits::default()).await.unwrap();
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert_eq!(std::fs::read_to_string(f.files().join("sorted.txt")).unwrap(), "apple\napple\nbanana\ncherry\nkiwi\n");
    let out = execute(&policy(P::Wide), &f.ws, "uniq dups.txt uniq.txt", &ExecLimits::default()).await.unwrap();
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert_eq!(std::fs::read_to_string(f.files().join("uniq.txt")).unwrap(), "a\nb\nc\n");
    let out = execute(&policy(P::Wide), &f.ws, "sed -i s/kiwi/KIWI/ fruits.txt", &ExecLimits::default()).await.unwrap();
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert_eq!(std::fs::read_to_string(f.files().join("fruits.txt")).unwrap(), "banana\napple\ncherry\napple\nKIWI\n");
}

fn process_is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting for init to reap it is dead too.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group_promptly() {
    let f = fixture();
    let limits = ExecLimits { timeout: Duration::from_millis(500), ..ExecLimits::default() };
    // The background sleep keeps the output pipe open: only killing the group ends the run.
    let started = Instant::now();
    let out = execute(&policy(P::Full), &f.ws, "sh -c 'sleep 30 & echo $!; sleep 30'", &limits).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, None);
    let pid: u32 = out.stdout.trim().parse().unwrap_or_else(|_| panic!("no pid in {out:?}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process_is_gone(pid) {
        assert!(Instant::now() < deadline, "background child {pid} survived the timeout");
        std::thread::yield_now();
    }
}

#[tokio::test]
async fn output_is_capped_with_a_marker() {
    let f = fixture();
    std::fs::write(f.files().join("big.txt"), "x".repeat(200_000)).unwrap();
    let limits = ExecLimits { max_output_bytes: 1000, ..ExecLimits::default() };
    let out = execute(&policy(P::Wide), &f.ws, "cat big.txt", &limits).await.unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert!(out.truncated);
    assert_eq!(
        out.stdout,
        format!("{}\n[output truncated: 199000 more bytes not shown (limit 1000 bytes)]\n", "x".repeat(1000))
    );

    // Endless output is drained (never buffered) until the timeout.
    let limits = ExecLimits { max_output_bytes: 100, timeout: Duration::from_millis(300), ..ExecLimits::default() };
    let out = execute(&policy(P::Full), &f.ws, "yes", &limits).await.unwrap();
    assert!(out.truncated && out.timed_out, "{out:?}");
    assert!(out.stdout.starts_with("y\ny\n") && out.stdout.len() < 200, "{out:?}");
}

/// A command that grows without bound fails its own allocation at the memory limit; it
/// neither runs on to the timeout nor takes the agent's memory with it.
#[tokio::test]
async fn a_command_cannot_grow_past_its_memory_limit() {
    let f = fixture();
    let limits =
        ExecLimits { max_memory_bytes: 64 * 1024 * 1024, timeout: Duration::from_secs(20), ..ExecLimits::default() };
    // Doubles a string up to 1 GiB (a few GiB at the peak without the limit), then says so.
    let grow = "awk 'BEGIN { s = \"x\"; while (length(s) < 1073741824) s = s s; print \"grew to\", length(s) }'";
    let started = Instant::now();
    let out = execute(&policy(P::Full), &f.ws, grow, &limits).await.unwrap();
    assert!(!out.stdout.contains("grew to"), "{out:?}");
    assert!(out.exit_code.is_none_or(|code| code != 0) && !out.timed_out, "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    // An ordinary command is not bothered by it.
    let out = execute(&policy(P::Wide), &f.ws, "sort fruits.txt", &limits).await.unwrap();
    assert_eq!(out.exit_code, Some(0), "{out:?}");
}

#[tokio::test]
async fn stdin_is_empty_and_the_environment_is_fixed() {
    let f = fixture();
    let started = Instant::now();
    let out = execute(&policy(P::Wide), &f.ws, "cat", &ExecLimits::default()).await.unwrap();
    assert_eq!((out.exit_code, out.stdout.as_str(), out.timed_out), (Some(0), "", false));
    assert!(started.elapsed() < Duration::from_secs(5));

    let out = execute(&policy(P::Full), &f.ws, "env", &ExecLimits::default()).await.unwrap();
    let mut vars: Vec<&str> = out.stdout.lines().collect();
    vars.sort();
    let home = format!("HOME={}", f.files().canonicalize().unwrap().display());
    assert_eq!(vars, [home.as_str(), "LC_ALL=C.UTF-8", "PATH=/usr/bin:/bin"]);

    let out = execute(&policy(P::Full), &f.ws, "pwd", &ExecLimits::default()).await.unwrap();
    assert_eq!(out.stdout.trim(), f.files().canonicalize().unwrap().display().to_string());
}

#[tokio::test]
async fn the_working_directory_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let out = execute(&policy(P::Wide), tmp.path(), "ls", &ExecLimits::default()).await.unwrap();
    assert_eq!((out.exit_code, out.stdout.as_str()), (Some(0), ""));
    assert!(tmp.path().join("files").is_dir());
    let err = execute(&policy(P::Wide), Path::new("/nonexistent/ws"), "ls", &ExecLimits::default()).await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

/// Runs the built binary; returns (exit code, stdout, stderr).
fn moltmate(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_moltmate")).args(args).current_dir(cwd).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn cli_check_prints_allow_or_deny_and_exits_0_or_1() {
    let f = fixture();
    let ws = f.ws.to_str().unwrap();
    let table: &[(&[&str], i32, &str)] = &[
        (
            &["exec-policy", "check", "--security", "allowlist", "--safe-bins", "cat,grep,wc", "--", "grep -r foo ."],
            0,
            "ALLOW\n",
        ),
        (
            &["exec-policy", "check", "--safe-bins", "cat", "--", "python3 x"],
            1,
            "DENY: `python3` is not in safeBins (allowed: cat)\n",
        ),
        (
            &["exec-policy", "check", "--profile", "high-security", "--", "sort fruits.txt"],
            1,
            "DENY: `sort` is not in safeBins (allowed: cat, head, tail, grep, wc, ls)\n",
        ),
        (&["exec-policy", "check", "--profile", "family", "--", "sort fruits.txt"], 0, "ALLOW\n"),
        (
            &["exec-policy", "check", "--", "cat /etc/passwd"],
            1,
            "DENY: `/etc/passwd` is outside files/, the only folder commands can use\n",
        ),
        (&["exec-policy", "check", "--workspace", ws, "--", "cat notes.txt | sh"], 1, "DENY: `|` is a shell pipe"),
        (
            &[
                "exec-policy",
                "check",
                "--workspace",
                ws,
                "--security",
                "full",
                "--workspace-access",
                "ro",
                "--",
                "touch x",
            ],
            1,
            "DENY: `touch` writes files, but the workspace is read-only\n",
        ),
    ];
    for (args, code, want) in table {
        let (got_code, stdout, stderr) = moltmate(&f.files(), args);
        assert_eq!(got_code, *code, "{args:?}: {stdout}{stderr}");
        assert!(stdout.starts_with(want), "{args:?}: {stdout:?}");
    }
}

#[test]
fn cli_run_prints_the_output_and_exits_with_the_command() {
    let f = fixture();
    let ws = f.ws.to_str().unwrap();
    let (code, stdout, stderr) =
        moltmate(&f.files(), &["exec-policy", "run", "--workspace", ws, "--", "cat notes.txt"]);
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (0, "first line\nsecond line\nthird line\n", ""));

    // The workspace defaults to the current directory.
    let (code, stdout, _) = moltmate(&f.ws, &["exec-policy", "run", "--", "wc -l notes.txt"]);
    assert_eq!((code, stdout.as_str()), (0, "3 notes.txt\n"));

    let (code, stdout, _) = moltmate(&f.ws, &["exec-policy", "run", "--", "grep nomatch notes.txt"]);
    assert_eq!((code, stdout.as_str()), (1, ""));

    let (code, _, stderr) = moltmate(&f.ws, &["exec-policy", "run", "--", "ls nosuch"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("nosuch"), "{stderr}");

    let (code, stdout, stderr) = moltmate(&f.ws, &["exec-policy", "run", "--", "cat /etc/passwd"]);
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (1, "", "DENY: `/etc/passwd` is outside files/, the only folder commands can use\n")
    );

    let started = Instant::now();
    let (code, _, stderr) =
        moltmate(&f.ws, &["exec-policy", "run", "--security", "full", "--timeout", "300ms", "--", "sleep 30"]);
    assert_eq!(code, 124, "{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
