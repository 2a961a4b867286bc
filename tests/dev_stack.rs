//! The README's "run the local stack" command works as documented.

use std::process::Command;
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

struct Down(std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(format!("{REPO}/scripts/dev-stack")).arg("down").arg(&self.0).status();
    }
}

#[test]
fn dev_stack_up_serves_the_example_users() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dev-stack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let up = Command::new(format!("{REPO}/scripts/dev-stack"))
        .arg("up")
        .arg(&dir)
        .env("MOLTMATE_BIN", env!("CARGO_BIN_EXE_moltmate"))
        .output()
        .unwrap();
    let _down = Down(dir.clone());
    assert!(up.status.success(), "dev-stack up failed:\n{}", String::from_utf8_lossy(&up.stderr));
    let said = String::from_utf8_lossy(&up.stderr);
    assert!(said.contains("kubectl apply -f manifests/examples/user-public.yaml"), "{said}");

    let env = std::fs::read_to_string(dir.join("env")).unwrap();
    let kubectl = env.lines().find_map(|l| l.strip_prefix("KUBECTL=")).unwrap().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(&kubectl).arg("--kubeconfig").arg(dir.join("kubeconfig")).args(args).current_dir(REPO).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (ok, _, err) = run(&["apply", "-f", "manifests/examples/"]);
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, phases, _) = run(&["get", "mmu", "-o", "jsonpath={.items[*].status.phase}"]);
        if phases.split_whitespace().filter(|p| *p == "Ready").count() == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "not all example users Ready: {phases:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, table, _) = run(&["get", "mmu"]);
    assert!(table.contains("grandma") && table.contains("family"), "{table}");
}
