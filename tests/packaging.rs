//! Packaging, as far as it can be checked without a Docker engine, Flux or Argo CD: the two
//! Dockerfiles (parsed here) and their build context, and the GitOps example folder
//! (rendered by kubectl's kustomize and dry-run applied to a real API server).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{MOLTMATE, REPO, TestEnv};
use serde_json::Value;

use dockerfile::Dockerfile;

const DOCKERFILES: [&str; 2] = ["Dockerfile", "Dockerfile.sandbox"];
const GITOPS: &str = "manifests/examples/gitops";
/// The platforms the README's buildx command builds.
const PLATFORMS: &str = "linux/amd64,linux/arm64";

// ------------------------------------------------------------------------------------------
// The Dockerfiles
// ------------------------------------------------------------------------------------------

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(relative)).unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

fn load(name: &str) -> Dockerfile {
    dockerfile::parse(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `[[bin]]` names and one `[package]` field, read from Cargo.toml's plain `key = "value"` lines.
fn cargo_bins() -> Vec<String> {
    let mut bins = Vec::new();
    let mut section = String::new();
    for line in read("Cargo.toml").lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[[bin]]" {
            bins.extend(toml_string(line, "name"));
        }
    }
    bins
}

fn cargo_package(key: &str) -> String {
    let manifest = read("Cargo.toml");
    let package = manifest.split("[package]").nth(1).expect("a [package] section");
    let package = package.split("\n[").next().unwrap();
    package.lines().find_map(|l| toml_string(l.trim(), key)).unwrap_or_else(|| panic!("Cargo.toml: no package.{key}"))
}

fn toml_string(line: &str, key: &str) -> Option<String> {
    let (k, v) = line.split_once('=')?;
    (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
}

#[test]
fn both_dockerfiles_parse_into_a_build_stage_and_a_final_stage() {
    for name in DOCKERFILES {
        let file = load(name);
        let stages: Vec<_> = file.stages.iter().map(|s| (s.from.image.as_str(), s.from.name.as_deref())).collect();
        assert!(file.stage("build").is_some(), "{name}: a stage named build; stages {stages:?}");
        assert!(file.stages.len() >= 2, "{name}: a final stage after the build; stages {stages:?}");
        assert_eq!(
            file.syntax.as_deref(),
            Some("docker/dockerfile:1"),
            "{name}: BuildKit syntax (cache mounts, heredocs)"
        );
    }
}

#[test]
fn no_image_names_a_registry_host_or_the_latest_tag() {
    for name in DOCKERFILES {
        let file = load(name);
        let mut images: Vec<String> = file.syntax.iter().cloned().collect();
        let mut earlier_stages = Vec::new();
        for stage in &file.stages {
            let image = &stage.from.image;
            // `scratch` and earlier stages are no pulls.
            if image != "scratch" && !earlier_stages.contains(image) {
                images.push(image.clone());
            }
            earlier_stages.extend(stage.from.name.clone());
        }
        for image in images {
            assert!(!image.contains('$'), "{name}: FROM {image} is chosen by a build argument; write the image out");
            assert_eq!(dockerfile::registry_host(&image), None, "{name}: {image} names a registry host");
            let pinned = image.contains('@') || dockerfile::tag(&image).is_some_and(|t| t != "latest");
            assert!(pinned, "{name}: {image} has no tag (that is `latest`) or is `latest`");
        }
    }
}

/// The binary the final stage's ENTRYPOINT runs, traced back through the COPY that put it
/// there to the `cargo build` that made it: it is the crate's `[[bin]]`, built static.
#[test]
fn each_image_runs_the_crates_binary_built_static_for_musl() {
    let bins = cargo_bins();
    for name in DOCKERFILES {
        let file = load(name);
        let last = file.stages.last().unwrap();
        let entrypoint = last.exec_form("ENTRYPOINT").unwrap_or_else(|e| panic!("{name}: {e}"));
        let program = entrypoint.first().unwrap_or_else(|| panic!("{name}: empty ENTRYPOINT"));
        let copy = last
            .copies()
            .into_iter()
            .find(|c| c.target_of_single_source().as_deref() == Some(program))
            .unwrap_or_else(|| panic!("{name}: no COPY in the final stage puts {program} there"));
        let from = copy
            .from
            .clone()
            .unwrap_or_else(|| panic!("{name}: {program} is copied from the build context, not built"));
        let build =
            file.stage(&from).unwrap_or_else(|| panic!("{name}: {program} comes from {from}, which is no stage here"));
        let built = build.cargo_build_copied_to(&copy.sources[0]).unwrap_or_else(|| {
            panic!(
                "{name}: no RUN in stage {from} runs `cargo build --bin NAME` and copies target/.../release/NAME to {}",
                copy.sources[0]
            )
        });
        assert!(
            bins.contains(&built.bin),
            "{name}: builds `{}`, which is no [[bin]] of Cargo.toml ({bins:?})",
            built.bin
        );
        // Without default features: no development stand-ins in an image.
        for flag in ["--release", "--locked", "--no-default-features"] {
            assert!(built.command.contains(flag), "{name}: cargo build without {flag}: {}", built.command);
        }
        assert!(
            built.command.contains("-unknown-linux-musl"),
            "{name}: not built for a musl target (static): {}",
            built.command
        );
    }
}

/// The sandbox image holds the lean agent binary alone, as its entrypoint, and the operator's
/// pods give it `agent` (leaving the entrypoint to the image): none of the operator or gateway
/// in every user's pod.
#[test]
fn the_sandbox_image_ships_only_the_agent_binary_the_pods_run() {
    let file = load("Dockerfile.sandbox");
    let last = file.stages.last().unwrap();
    let built: Vec<String> =
        last.copies().into_iter().filter(|c| c.from.as_deref() == Some("build")).flat_map(|c| c.sources).collect();
    assert_eq!(built, ["/moltmate-agent"], "Dockerfile.sandbox: copies {built:?} from the build");
    assert_eq!(last.exec_form("ENTRYPOINT").unwrap(), ["/usr/local/bin/moltmate-agent"]);
    assert_eq!(last.exec_form("CMD").unwrap(), ["agent"]);

    use moltmates::builders::{BuildInput, ClusterConfig, build};
    let mut user = moltmates::MoltmateUser::new(
        "alice",
        moltmates::crd::MoltmateUserSpec::new(1, moltmates::crd::Profile::Public),
    );
    user.metadata.uid = Some("uid-alice".into());
    let profile = moltmates::profile::resolve(&user.spec).unwrap();
    let config = ClusterConfig::default();
    let input = BuildInput {
        profile: &profile,
        config: &config,
        agent_token: "t0ken",
        broker_ip: None,
        node_addresses: &[],
        pull_secrets: &[],
    };
    let pod = build(&user, &input).unwrap().pod;
    let container = &pod.spec.unwrap().containers[0];
    assert_eq!(container.command, None, "the image's entrypoint runs the agent");
    assert_eq!(container.args.as_deref(), Some(&["agent".to_string()][..]));
}

#[test]
fn each_image_runs_as_a_numeric_non_root_user() {
    for name in DOCKERFILES {
        let file = load(name);
        let last = file.stages.last().unwrap();
        let user = last
            .last_args("USER")
            .unwrap_or_else(|| panic!("{name}: the final stage sets no USER (it would run as root)"));
        let (uid, gid) = user.split_once(':').unwrap_or_else(|| panic!("{name}: USER {user}: give uid:gid"));
        let (uid, gid): (u32, u32) = match (uid.parse(), gid.parse()) {
            (Ok(u), Ok(g)) => (u, g),
            _ => panic!("{name}: USER {user} is not numeric (runAsNonRoot can only verify numbers)"),
        };
        assert!(uid != 0 && gid != 0, "{name}: USER {user} is root");
        // An image that brings its own /etc/passwd names that user in it.
        for copy in last.copies().into_iter().filter(|c| c.dest == "/etc/passwd") {
            let passwd = match (&copy.heredoc, copy.from.as_deref(), copy.sources.as_slice()) {
                (Some(text), _, _) => text.clone(),
                (None, None, [file]) => std::fs::read_to_string(Path::new(REPO).join(file)).unwrap(),
                _ => panic!("{name}: /etc/passwd comes from {:?}", copy.sources),
            };
            let ids: Vec<(u32, u32)> = passwd
                .lines()
                .filter_map(|l| {
                    let fields: Vec<&str> = l.split(':').collect();
                    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
                })
                .collect();
            assert!(ids.contains(&(uid, gid)), "{name}: /etc/passwd has no entry for {uid}:{gid}: {passwd}");
        }
    }
}

/// Both images compile the binary the same way, so a fix to one reaches the other.
#[test]
fn both_images_share_one_cross_compiling_build_stage() {
    let [main, sandbox] = DOCKERFILES.map(load);
    let (a, b) = (main.stage("build").unwrap(), sandbox.stage("build").unwrap());
    assert_eq!(a.from, b.from, "the build stages start from different images");
    assert_eq!(a.instructions, b.instructions, "Dockerfile and Dockerfile.sandbox build differently");
    // On the build machine's platform, targeting buildx's TARGETARCH: no emulated compile.
    assert_eq!(a.from.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert!(
        a.instructions.iter().any(|i| i.keyword == "ARG" && i.args == "TARGETARCH"),
        "ARG TARGETARCH in the build stage"
    );
    for arch in ["amd64) arch=x86_64", "arm64) arch=aarch64"] {
        assert!(a.instructions.iter().any(|i| i.args.contains(arch)), "the build stage maps {arch}");
    }
}

/// The names in the build commands are the ones the operator and the chart use, at the
/// crate's version, and they build both platforms.
#[test]
fn the_image_names_agree_with_the_operator_and_the_crate_version() {
    let version = cargo_package("version");
    let help =
        Command::new(MOLTMATE).args(["operator", "--help"]).env_remove("MOLTMATE_SANDBOX_IMAGE").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let sandbox_default = help
        .lines()
        .skip_while(|l| !l.contains("--sandbox-image"))
        .find_map(|l| l.split("[default: ").nth(1))
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("`moltmate operator --help` shows no default for --sandbox-image:\n{help}"))
        .to_string();
    assert_eq!(sandbox_default, format!("localhost/moltmates/sandbox:{version}"));

    for (name, default_image, repository) in [
        ("Dockerfile", format!("localhost/moltmates/moltmate:{version}"), "moltmate"),
        ("Dockerfile.sandbox", sandbox_default.clone(), "sandbox"),
    ] {
        let file = load(name);
        let comments = file.comments.join("\n");
        assert!(comments.contains(&default_image), "{name}: its comments name {default_image}");
        let buildx = file
            .comments
            .iter()
            .find(|c| c.contains("docker buildx build"))
            .unwrap_or_else(|| panic!("{name}: no buildx command in its comments"));
        assert!(buildx.contains(&format!("--platform {PLATFORMS}")), "{name}: {buildx}");
        assert!(buildx.contains(&format!("-t <your-registry>/{repository}:{version} --push")), "{name}: {buildx}");
        if name != "Dockerfile" {
            assert!(buildx.contains(&format!("-f {name}")), "{name}: {buildx}");
        }
    }
    let labels = load("Dockerfile").stages.last().unwrap().last_args("LABEL").unwrap_or_default();
    assert!(
        labels.contains(&format!("org.opencontainers.image.licenses=\"{}\"", cargo_package("license"))),
        "{labels}"
    );
}

// ------------------------------------------------------------------------------------------
// The build context
// ------------------------------------------------------------------------------------------

fn ignore() -> dockerignore::Ignore {
    dockerignore::Ignore::parse(&read(".dockerignore")).unwrap_or_else(|e| panic!(".dockerignore: {e}"))
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    if root.is_file() {
        return vec![root.to_path_buf()];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        out.extend(files_under(&entry.path()));
    }
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(REPO).unwrap().to_string_lossy().into_owned()
}

#[test]
fn every_local_copy_source_is_in_the_build_context() {
    let ignore = ignore();
    for name in DOCKERFILES {
        for stage in &load(name).stages {
            for copy in stage.copies().into_iter().filter(|c| c.from.is_none() && c.heredoc.is_none()) {
                for source in &copy.sources {
                    assert!(
                        !source.contains(['*', '?', '[']) && !source.contains(".."),
                        "{name}: COPY {source}: a plain path inside the repo"
                    );
                    let path = Path::new(REPO).join(source);
                    assert!(path.exists(), "{name}: COPY {source}: no such file in the repo");
                    for file in files_under(&path) {
                        let file = relative(&file);
                        assert!(!ignore.excludes(&file), "{name}: COPY {source}: .dockerignore leaves out {file}");
                    }
                }
            }
        }
    }
    // Nothing large or private goes to the builder.
    for left_out in [
        "target/release/moltmate",
        ".git/config",
        ".testenv/kubeconfig",
        "tests/agent.rs",
        "charts/moltmates/values.yaml",
    ] {
        assert!(ignore.excludes(left_out), ".dockerignore sends {left_out}");
    }
}

/// The files the build stage copies are a whole crate on their own: the same lib, bin and
/// build-script targets as the repo, every target's source present, the lock file current,
/// and no `include_str!`/`include_bytes!` that reaches outside them.
#[test]
fn the_files_the_build_stage_copies_are_a_complete_crate() {
    let build = load("Dockerfile").stage("build").unwrap().clone();
    let workdir = build.last_args("WORKDIR").expect("the build stage sets a WORKDIR");
    let dir = tempfile::tempdir().unwrap();
    for copy in build.copies().into_iter().filter(|c| c.from.is_none()) {
        let dest = Path::new(&copy.dest);
        let dest = if dest.is_absolute() { dest.to_path_buf() } else { Path::new(&workdir).join(dest) };
        let dest = dir.path().join(
            dest.strip_prefix(&workdir).unwrap_or_else(|_| panic!("COPY to {} outside WORKDIR {workdir}", copy.dest)),
        );
        let into_dir = copy.dest.ends_with('/') || copy.sources.len() > 1;
        for source in &copy.sources {
            let from = Path::new(REPO).join(source);
            for file in files_under(&from) {
                let rel = file.strip_prefix(&from).unwrap();
                let to = match (into_dir, from.is_dir()) {
                    (_, true) => dest.join(rel),
                    (true, false) => dest.join(from.file_name().unwrap()),
                    (false, false) => dest.clone(),
                };
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(&file, &to).unwrap();
            }
        }
    }

    let targets = |root: &Path| -> BTreeSet<(String, String)> {
        let out = Command::new(env!("CARGO"))
            .args(["metadata", "--no-deps", "--offline", "--format-version", "1"])
            .current_dir(root)
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo metadata in {}: {}", root.display(), String::from_utf8_lossy(&out.stderr));
        let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut set = BTreeSet::new();
        for target in meta["packages"][0]["targets"].as_array().unwrap() {
            let kind = target["kind"][0].as_str().unwrap().to_string();
            if ["lib", "bin", "custom-build"].contains(&kind.as_str()) {
                let src = PathBuf::from(target["src_path"].as_str().unwrap());
                assert!(src.exists(), "{kind} {} has no source at {}", target["name"], src.display());
                set.insert((kind, target["name"].as_str().unwrap().to_string()));
            }
        }
        set
    };
    assert_eq!(targets(dir.path()), targets(Path::new(REPO)), "the build stage sees other targets than the repo has");

    let locked = Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--offline", "--target", "x86_64-unknown-linux-musl", "--depth", "0"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(locked.status.success(), "`cargo build --locked` would fail: {}", String::from_utf8_lossy(&locked.stderr));

    for file in files_under(dir.path()).into_iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for macro_call in ["include_str!(\"", "include_bytes!(\""] {
            for rest in text.split(macro_call).skip(1) {
                let target = file.parent().unwrap().join(rest.split('"').next().unwrap());
                assert!(
                    target.exists(),
                    "{} includes {}, which the build stage does not copy",
                    file.display(),
                    target.display()
                );
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// GitOps
// ------------------------------------------------------------------------------------------

fn kubectl() -> PathBuf {
    let out =
        Command::new(format!("{REPO}/scripts/testenv")).arg("bindir").output().expect("run scripts/testenv bindir");
    let kubectl = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("kubectl");
    assert!(kubectl.exists(), "{} missing: run `scripts/testenv install`", kubectl.display());
    kubectl
}

fn yaml_documents(text: &str, what: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{what}: not YAML: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> =
        files_under(dir).into_iter().filter(|f| f.extension().is_some_and(|e| e == "yaml" || e == "yml")).collect();
    files.sort();
    files
}

/// Every MoltmateUser under manifests/examples/, with the file it is in.
fn example_users() -> Vec<(String, Value)> {
    let mut users = Vec::new();
    for file in yaml_files(&Path::new(REPO).join("manifests/examples")) {
        let name = relative(&file);
        for doc in yaml_documents(&std::fs::read_to_string(&file).unwrap(), &name) {
            if doc["kind"] == "MoltmateUser" {
                users.push((name.clone(), doc));
            }
        }
    }
    users
}

fn by_name(users: impl IntoIterator<Item = Value>) -> BTreeMap<String, Value> {
    users.into_iter().map(|u| (u["metadata"]["name"].as_str().expect("metadata.name").to_string(), u)).collect()
}

#[test]
fn kustomize_renders_exactly_the_users_folder() {
    let users_dir = Path::new(REPO).join(GITOPS).join("users");
    let files = yaml_files(&users_dir);
    assert!(files.len() >= 2, "example users in {}", users_dir.display());

    let kustomization = &yaml_documents(&read(&format!("{GITOPS}/kustomization.yaml")), "kustomization.yaml")[0];
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .expect("resources:")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let present: BTreeSet<String> =
        files.iter().map(|f| format!("users/{}", f.file_name().unwrap().to_string_lossy())).collect();
    assert_eq!(listed, present, "kustomization.yaml must list every file under users/ (kustomize has no wildcards)");

    let out = Command::new(kubectl()).args(["kustomize", &format!("{REPO}/{GITOPS}")]).output().unwrap();
    assert!(out.status.success(), "kubectl kustomize: {}", String::from_utf8_lossy(&out.stderr));
    let rendered = by_name(yaml_documents(&String::from_utf8(out.stdout).unwrap(), "kubectl kustomize output"));
    let expected =
        by_name(files.iter().flat_map(|f| yaml_documents(&std::fs::read_to_string(f).unwrap(), &relative(f))));
    assert_eq!(rendered, expected);
    assert!(rendered.values().all(|u| u["kind"] == "MoltmateUser"), "only MoltmateUsers in users/");
}

/// All examples can live in one cluster: no two share a name or a Telegram id (a second
/// holder of an id would get Ready=False, DuplicateTelegramId).
#[test]
fn example_users_have_distinct_names_and_telegram_ids() {
    let users = example_users();
    assert!(users.len() >= 6, "the profile examples and the GitOps users: {users:?}");
    let mut names = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for (file, user) in &users {
        let name = user["metadata"]["name"].as_str().unwrap().to_string();
        let id = user["spec"]["telegram"]["userId"].as_i64().unwrap_or_else(|| panic!("{file}: spec.telegram.userId"));
        if let Some(other) = names.insert(name.clone(), file) {
            panic!("{file} and {other} both define {name}");
        }
        if let Some(other) = ids.insert(id, file) {
            panic!("{file} and {other} both use Telegram id {id}");
        }
    }
}

/// The Flux and Argo CD objects cannot be applied here (no CRDs for them): check their shape
/// and that they sync this folder, with pruning.
#[test]
fn flux_and_argo_cd_sync_the_gitops_folder_with_prune() {
    let gitops = std::fs::canonicalize(Path::new(REPO).join(GITOPS)).unwrap();
    let points_here = |path: &str, what: &str| {
        let dir = Path::new(REPO).join(path.trim_start_matches("./"));
        assert!(dir.is_dir(), "{what}: path {path} is no folder of the repo");
        assert_eq!(std::fs::canonicalize(&dir).unwrap(), gitops, "{what}: path {path}");
        // With a kustomization.yaml only the users are synced, not the Flux/Argo files beside it.
        assert!(dir.join("kustomization.yaml").is_file(), "{what}: {path} has no kustomization.yaml");
    };

    let flux = yaml_documents(&read(&format!("{GITOPS}/flux-kustomization.yaml")), "flux-kustomization.yaml");
    let find = |api_version: &str, kind: &str| {
        flux.iter()
            .find(|d| d["apiVersion"] == api_version && d["kind"] == kind)
            .unwrap_or_else(|| panic!("flux-kustomization.yaml: no {api_version} {kind}"))
    };
    let source = find("source.toolkit.fluxcd.io/v1", "GitRepository");
    let kustomization = find("kustomize.toolkit.fluxcd.io/v1", "Kustomization");
    assert_eq!(source["metadata"]["name"], "moltmates-users");
    assert_eq!(
        kustomization["spec"]["sourceRef"],
        serde_json::json!({ "kind": "GitRepository", "name": "moltmates-users" })
    );
    assert_eq!(
        kustomization["metadata"]["namespace"], source["metadata"]["namespace"],
        "a sourceRef without namespace is in its own"
    );
    assert_eq!(kustomization["spec"]["prune"], true);
    assert!(kustomization["spec"]["interval"].is_string(), "Flux requires spec.interval");
    points_here(kustomization["spec"]["path"].as_str().expect("spec.path"), "Flux Kustomization");

    let argo = yaml_documents(&read(&format!("{GITOPS}/argocd-application.yaml")), "argocd-application.yaml");
    let [app] = argo.as_slice() else { panic!("argocd-application.yaml: one document") };
    assert_eq!((&app["apiVersion"], &app["kind"]), (&Value::from("argoproj.io/v1alpha1"), &Value::from("Application")));
    assert_eq!(app["spec"]["syncPolicy"]["automated"]["prune"], true);
    assert!(app["spec"]["destination"]["server"].is_string(), "Argo CD requires a destination");
    points_here(app["spec"]["source"]["path"].as_str().expect("spec.source.path"), "Argo CD Application");
    assert_eq!(app["spec"]["source"]["repoURL"], source["spec"]["url"], "both examples name the same repository");
}

/// The real API server (CRD installed) accepts the GitOps folder and every example user, and
/// rejects a bad one the same way — so this check can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_accepts_the_gitops_folder_and_every_example_user() {
    let env = TestEnv::up("packaging");
    env.install().await;
    let dry_run = |args: &[&str]| {
        let mut all = vec!["apply", "--server-side", "--dry-run=server"];
        all.extend_from_slice(args);
        env.kubectl(&all)
    };

    let folder = format!("{REPO}/{GITOPS}");
    let out = dry_run(&["-k", &folder]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "kubectl apply -k {GITOPS}: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    let gitops_users = by_name(example_users().into_iter().filter(|(f, _)| f.starts_with(GITOPS)).map(|(_, u)| u));
    for name in gitops_users.keys() {
        assert!(
            stdout.contains(&format!("moltmateuser.moltmate.io/{name} serverside-applied (server dry run)")),
            "{name}: {stdout}"
        );
    }

    let users = example_users();
    for (file, user) in &users {
        let path = format!("{REPO}/{file}");
        let out = dry_run(&["-f", &path]);
        assert!(
            out.status.success(),
            "{file} ({}): {}",
            user["metadata"]["name"],
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let bad = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(bad.path(), read(&users[0].0).replace("profile: ", "profile: nonsense-")).unwrap();
    let out = dry_run(&["-f", bad.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("spec.profile"), "a bad profile is refused: {stderr}");

    // Dry runs leave nothing behind.
    let out = env.kubectl(&["get", "moltmateusers", "-o", "name"]);
    assert!(out.status.success() && out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
}

// ------------------------------------------------------------------------------------------
// A Dockerfile reader: just enough of the format for the checks above.
// ------------------------------------------------------------------------------------------

mod dockerfile {
    /// One instruction: keyword upper-cased, arguments with continuation lines joined (as
    /// Docker joins them), and the body of a here-document (`COPY <<EOF /etc/passwd`).
    #[derive(Debug, Clone, PartialEq)]
    pub struct Instruction {
        pub keyword: String,
        pub args: String,
        pub heredoc: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq)]
    pub struct From {
        pub platform: Option<String>,
        pub image: String,
        pub name: Option<String>,
    }

    #[derive(Debug, Clone)]
    pub struct Stage {
        pub from: From,
        pub instructions: Vec<Instruction>,
    }

    #[derive(Debug)]
    pub struct Dockerfile {
        /// The `# syntax=` parser directive.
        pub syntax: Option<String>,
        /// Comment lines, without the `#`.
        pub comments: Vec<String>,
        pub stages: Vec<Stage>,
    }

    #[derive(Debug, Clone)]
    pub struct Copy {
        pub from: Option<String>,
        pub sources: Vec<String>,
        pub dest: String,
        pub heredoc: Option<String>,
    }

    /// A `cargo build --bin BIN` and the whole RUN it is in.
    pub struct CargoBuild {
        pub bin: String,
        pub command: String,
    }

    impl Dockerfile {
        pub fn stage(&self, name: &str) -> Option<&Stage> {
            self.stages.iter().find(|s| s.from.name.as_deref() == Some(name))
        }
    }

    impl Stage {
        pub fn last_args(&self, keyword: &str) -> Option<String> {
            self.instructions.iter().rev().find(|i| i.keyword == keyword).map(|i| i.args.clone())
        }

        /// ENTRYPOINT or CMD in exec (JSON) form.
        pub fn exec_form(&self, keyword: &str) -> Result<Vec<String>, String> {
            let args = self.last_args(keyword).ok_or(format!("no {keyword}"))?;
            serde_json::from_str(&args).map_err(|_| format!("{keyword} {args}: not in exec form [\"...\"]"))
        }

        pub fn copies(&self) -> Vec<Copy> {
            self.instructions
                .iter()
                .filter(|i| i.keyword == "COPY")
                .map(|i| parse_copy(i).unwrap_or_else(|e| panic!("{e}")))
                .collect()
        }

        /// The RUN that builds a binary with cargo and copies it to `path`.
        pub fn cargo_build_copied_to(&self, path: &str) -> Option<CargoBuild> {
            self.instructions.iter().filter(|i| i.keyword == "RUN").find_map(|run| {
                let words: Vec<&str> = run.args.split_whitespace().map(|w| w.trim_matches('"')).collect();
                let build = words.windows(2).position(|w| w == ["cargo", "build"])?;
                // One run may build several binaries (`--bin a --bin b`): the one copied to `path`.
                let mut bins = words[build..].windows(2).filter(|w| w[0] == "--bin").map(|w| w[1]);
                let bin = bins.find(|bin| {
                    words.windows(3).any(|w| w[0] == "cp" && w[1].ends_with(&format!("/release/{bin}")) && w[2] == path)
                })?;
                Some(CargoBuild { bin: bin.to_string(), command: run.args.clone() })
            })
        }
    }

    impl Copy {
        /// Where a COPY of one file puts it.
        pub fn target_of_single_source(&self) -> Option<String> {
            let [source] = self.sources.as_slice() else { return None };
            Some(match self.dest.strip_suffix('/') {
                Some(dir) => format!("{dir}/{}", source.rsplit('/').next().unwrap()),
                None => self.dest.clone(),
            })
        }
    }

    pub fn parse(text: &str) -> Result<Dockerfile, String> {
        let mut syntax = None;
        let mut comments = Vec::new();
        let mut instructions = Vec::new();
        let mut lines = text.lines().enumerate();
        let mut directives_allowed = true;
        while let Some((n, line)) = lines.next() {
            let trimmed = line.trim();
            if let Some(comment) = trimmed.strip_prefix('#') {
                match comment.trim().strip_prefix("syntax=") {
                    Some(value) if directives_allowed => syntax = Some(value.trim().to_string()),
                    _ => comments.push(comment.trim().to_string()),
                }
                directives_allowed = false;
                continue;
            }
            directives_allowed = false;
            if trimmed.is_empty() {
                continue;
            }
            // Docker drops a trailing backslash and the line break; comment and blank lines
            // inside a continued instruction are skipped.
            let mut logical = String::new();
            let mut current = trimmed.to_string();
            while let Some(part) = current.strip_suffix('\\') {
                logical.push_str(part);
                current = loop {
                    let (_, next) =
                        lines.next().ok_or(format!("line {}: continued past the end of the file", n + 1))?;
                    let next = next.trim();
                    if !next.is_empty() && !next.starts_with('#') {
                        break next.to_string();
                    }
                };
            }
            logical.push_str(&current);
            let (keyword, args) = logical
                .split_once(char::is_whitespace)
                .ok_or(format!("line {}: `{logical}` has no arguments", n + 1))?;
            let heredoc = match heredoc_word(args) {
                Some(word) => {
                    let mut body = String::new();
                    loop {
                        let (_, next) =
                            lines.next().ok_or(format!("line {}: here-document {word} never ends", n + 1))?;
                        if next.trim() == word {
                            break;
                        }
                        body.push_str(next);
                        body.push('\n');
                    }
                    Some(body)
                }
                None => None,
            };
            instructions.push(Instruction { keyword: keyword.to_uppercase(), args: args.trim().to_string(), heredoc });
        }

        let mut stages: Vec<Stage> = Vec::new();
        for instruction in instructions {
            if instruction.keyword == "FROM" {
                stages.push(Stage { from: parse_from(&instruction.args)?, instructions: Vec::new() });
            } else if let Some(stage) = stages.last_mut() {
                stage.instructions.push(instruction);
            } else if instruction.keyword != "ARG" {
                return Err(format!("{} before the first FROM", instruction.keyword));
            }
        }
        if stages.is_empty() {
            return Err("no FROM".into());
        }
        Ok(Dockerfile { syntax, comments, stages })
    }

    /// `<<EOF`, `<<-EOF` or `<<"EOF"` in an instruction's arguments (one per instruction here).
    fn heredoc_word(args: &str) -> Option<String> {
        let word = args.split_whitespace().find_map(|w| w.strip_prefix("<<"))?;
        Some(word.trim_start_matches('-').trim_matches(|c| c == '"' || c == '\'').to_string())
    }

    /// `FROM [--platform=P] IMAGE [AS NAME]`
    fn parse_from(args: &str) -> Result<From, String> {
        let mut words = args.split_whitespace();
        let mut platform = None;
        let image = loop {
            match words.next() {
                Some(flag) if flag.starts_with("--") => match flag.strip_prefix("--platform=") {
                    Some(p) => platform = Some(p.to_string()),
                    None => return Err(format!("FROM {args}: unknown flag {flag}")),
                },
                Some(image) => break image.to_string(),
                None => return Err(format!("FROM {args}: no image")),
            }
        };
        let name = match (words.next(), words.next(), words.next()) {
            (None, _, _) => None,
            (Some(as_), Some(name), None) if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
            _ => return Err(format!("FROM {args}: expected FROM [--platform=P] IMAGE [AS NAME]")),
        };
        Ok(From { platform, image, name })
    }

    /// `COPY [--from=S] [--chown=..] [--chmod=..] [--link] SRC... DEST`, shell or JSON form.
    fn parse_copy(instruction: &Instruction) -> Result<Copy, String> {
        let mut rest = instruction.args.as_str();
        let mut from = None;
        while let Some(flagged) = rest.strip_prefix("--") {
            let (flag, after) =
                flagged.split_once(char::is_whitespace).ok_or(format!("COPY {}: no source", instruction.args))?;
            match flag.split_once('=') {
                Some(("from", stage)) => from = Some(stage.to_string()),
                Some(("chown" | "chmod" | "exclude", _)) => {}
                None if flag == "link" || flag == "parents" => {}
                _ => return Err(format!("COPY {}: unknown flag --{flag}", instruction.args)),
            }
            rest = after.trim_start();
        }
        let mut words: Vec<String> = if rest.starts_with('[') {
            serde_json::from_str(rest).map_err(|e| format!("COPY {rest}: {e}"))?
        } else {
            rest.split_whitespace().map(str::to_string).collect()
        };
        if words.len() < 2 {
            return Err(format!("COPY {}: needs a source and a destination", instruction.args));
        }
        let dest = words.pop().unwrap();
        Ok(Copy { from, sources: words, dest, heredoc: instruction.heredoc.clone() })
    }

    /// The registry host an image reference names, if any: Docker reads the first path
    /// component as a host when it has a '.' or ':' or is `localhost`.
    pub fn registry_host(image: &str) -> Option<&str> {
        let (first, _) = image.split_once('/')?;
        (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
    }

    /// The tag of an image reference; None when it has none (which means `latest`).
    pub fn tag(image: &str) -> Option<&str> {
        let name = image.split('@').next().unwrap();
        name.rsplit('/').next().unwrap().split_once(':').map(|(_, tag)| tag)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn image_references() {
            for (image, host, tag_) in [
                ("rust:1.95-bookworm", None, Some("1.95-bookworm")),
                ("debian", None, None),
                ("moltmates/sandbox:0.1.0", None, Some("0.1.0")),
                ("registry.example:5000/x/y:1", Some("registry.example:5000"), Some("1")),
                ("localhost/x", Some("localhost"), None),
                ("example.org/x@sha256:00", Some("example.org"), None),
            ] {
                assert_eq!((registry_host(image), tag(image)), (host, tag_), "{image}");
            }
        }

        #[test]
        fn continuations_heredocs_and_stages() {
            let text = r#"# syntax=docker/dockerfile:1
# a comment
ARG X=1
FROM --platform=$BUILDPLATFORM a:1 AS b
RUN one \
 # inside
  two
FROM scratch
COPY <<EOF /etc/passwd
x:x:1:1::/:/none
EOF
COPY --from=b --chmod=0755 ["/m", "/n"]
USER 1:1
"#;
            let file = parse(text).unwrap();
            assert_eq!(file.syntax.as_deref(), Some("docker/dockerfile:1"));
            assert_eq!(file.comments, ["a comment"], "a comment inside an instruction is dropped, as Docker does");
            assert_eq!(
                file.stages[0].from,
                From { platform: Some("$BUILDPLATFORM".into()), image: "a:1".into(), name: Some("b".into()) }
            );
            assert_eq!(file.stages[0].instructions[0].args, "one two");
            let copies = file.stages[1].copies();
            assert_eq!(copies[0].heredoc.as_deref(), Some("x:x:1:1::/:/none\n"));
            assert_eq!(copies[0].dest, "/etc/passwd");
            assert_eq!(
                (copies[1].from.as_deref(), copies[1].target_of_single_source().as_deref()),
                (Some("b"), Some("/n"))
            );
            assert!(parse("RUN x\n").unwrap_err().contains("before the first FROM"));
            assert!(parse("FROM a\nRUN x \\\n").unwrap_err().contains("past the end"));
        }
    }
}

// ------------------------------------------------------------------------------------------
// A .dockerignore reader: Docker's rules for `*`, `?`, `**` and `!` (later lines win, and a
// pattern that matches a folder matches everything in it).
// ------------------------------------------------------------------------------------------

mod dockerignore {
    pub struct Ignore {
        /// (re-include?, pattern split at '/')
        patterns: Vec<(bool, Vec<String>)>,
    }

    impl Ignore {
        pub fn parse(text: &str) -> Result<Ignore, String> {
            let mut patterns = Vec::new();
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                let (negated, pattern) = match line.strip_prefix('!') {
                    Some(p) => (true, p.trim()),
                    None => (false, line),
                };
                if pattern.contains(['[', '\\']) {
                    return Err(format!("{line}: character classes and escapes are not handled by this reader"));
                }
                let segments = pattern
                    .trim_matches('/')
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_string)
                    .collect();
                patterns.push((negated, segments));
            }
            Ok(Ignore { patterns })
        }

        /// Whether `path` (relative to the context, '/'-separated) stays out of the context.
        pub fn excludes(&self, path: &str) -> bool {
            let segments: Vec<&str> = path.split('/').collect();
            let mut excluded = false;
            for (negated, pattern) in &self.patterns {
                if (1..=segments.len()).any(|n| matches(pattern, &segments[..n])) {
                    excluded = !negated;
                }
            }
            excluded
        }
    }

    fn matches(pattern: &[String], path: &[&str]) -> bool {
        match pattern.split_first() {
            None => path.is_empty(),
            Some((p, rest)) if p == "**" => (0..=path.len()).any(|i| matches(rest, &path[i..])),
            Some((p, rest)) => {
                !path.is_empty() && segment_matches(p.as_bytes(), path[0].as_bytes()) && matches(rest, &path[1..])
            }
        }
    }

    fn segment_matches(pattern: &[u8], name: &[u8]) -> bool {
        match pattern.split_first() {
            None => name.is_empty(),
            Some((b'*', rest)) => (0..=name.len()).any(|i| segment_matches(rest, &name[i..])),
            Some((b'?', rest)) => !name.is_empty() && segment_matches(rest, &name[1..]),
            Some((c, rest)) => name.first() == Some(c) && segment_matches(rest, &name[1..]),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn later_lines_win_and_folders_cover_their_files() {
            let ignore = Ignore::parse("*\n!src\n!Cargo.*\nsrc/**/*.bak\n").unwrap();
            for (path, excluded) in [
                ("target/release/x", true),
                ("src/main.rs", false),
                ("src/a/b.rs", false),
                ("src/a/b.bak", true),
                ("src/x.bak", true),
                ("Cargo.lock", false),
                ("README.md", true),
            ] {
                assert_eq!(ignore.excludes(path), excluded, "{path}");
            }
            assert!(Ignore::parse("[ab]").is_err());
        }
    }
}

/// Shell completions for every subcommand and flag, from the binary itself.
#[test]
fn the_binary_prints_shell_completions() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(MOLTMATE).args(["completions", shell]).output().unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        for word in ["users", "audit", "reset", "kubeconfig", "context"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
}

// ------------------------------------------------------------------------------------------
// The release workflow (.github/workflows/release.yml)
// ------------------------------------------------------------------------------------------

const RELEASE_WORKFLOW: &str = ".github/workflows/release.yml";

/// `$MOLTMATES_CACHE`, or the scripts' default beside it.
fn tool_cache() -> PathBuf {
    std::env::var("MOLTMATES_CACHE").map(PathBuf::from).unwrap_or_else(|_| {
        let cache = std::env::var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache"));
        cache.join("moltmates")
    })
}

/// The actionlint scripts/test builds, at the version it pins.
fn actionlint() -> PathBuf {
    let script = read("scripts/test");
    let version = script
        .lines()
        .find_map(|l| l.strip_prefix("ACTIONLINT_VERSION="))
        .expect("scripts/test pins ACTIONLINT_VERSION");
    let binary = tool_cache().join(format!("actionlint-{version}")).join("actionlint");
    assert!(binary.exists(), "{} missing: scripts/test builds it", binary.display());
    binary
}

fn run_actionlint(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(actionlint()).arg("-no-color").args(files).current_dir(REPO).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn every_workflow_passes_actionlint() {
    let workflows = yaml_files(&Path::new(REPO).join(".github/workflows"));
    assert!(workflows.iter().any(|f| relative(f) == RELEASE_WORKFLOW), "{workflows:?}");
    let (ok, report) = run_actionlint(&workflows);
    assert!(ok, "actionlint:\n{report}");

    // The linter reads expressions and the `run:` scripts: a misspelt context is an error.
    let broken = tempfile::Builder::new().suffix(".yml").tempfile().unwrap();
    std::fs::write(broken.path(), read(RELEASE_WORKFLOW).replace("matrix.target }}", "matrix.targets }}")).unwrap();
    let (ok, report) = run_actionlint(&[broken.path().to_path_buf()]);
    assert!(!ok && report.contains("targets"), "a broken workflow passes actionlint:\n{report}");
}

/// The workflow as JSON, and the expression resolver for one job's `env`, `matrix` entries
/// and the workflow's `env`.
struct Workflow(Value);

impl Workflow {
    fn load() -> Workflow {
        let docs = yaml_documents(&read(RELEASE_WORKFLOW), RELEASE_WORKFLOW);
        Workflow(docs.into_iter().next().expect("one document"))
    }

    fn job(&self, name: &str) -> &Value {
        let job = &self.0["jobs"][name];
        assert!(job.is_object(), "{RELEASE_WORKFLOW}: no job {name}");
        job
    }

    fn jobs(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0["jobs"].as_object().expect("jobs").iter()
    }

    /// Each matrix combination of a job (`include` entries, or one axis), as name -> value.
    fn matrix(job: &Value) -> Vec<BTreeMap<String, String>> {
        let matrix = &job["strategy"]["matrix"];
        if let Some(include) = matrix["include"].as_array() {
            return include
                .iter()
                .map(|e| e.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().into())).collect())
                .collect();
        }
        let Some(axes) = matrix.as_object() else { return vec![BTreeMap::new()] };
        assert!(axes.len() <= 1, "one axis: {matrix}");
        axes.iter()
            .flat_map(|(k, values)| {
                values.as_array().unwrap().iter().map(|v| BTreeMap::from([(k.clone(), v.as_str().unwrap().into())]))
            })
            .collect()
    }

    /// `${{ matrix.X }}`, `${{ env.X }}` and `${{ github.ref_name }}` replaced; `vars` and
    /// `secrets` left as written (they are the repository's settings).
    fn resolve(&self, job: &Value, matrix: &BTreeMap<String, String>, text: &str, tag: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${{") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("}}").expect("an expression ends") + start;
            let expr = rest[start + 3..end].trim();
            let value = if let Some(name) = expr.strip_prefix("matrix.") {
                matrix.get(name).unwrap_or_else(|| panic!("no matrix.{name}")).clone()
            } else if let Some(name) = expr.strip_prefix("env.") {
                let raw = job["env"][name]
                    .as_str()
                    .or_else(|| self.0["env"][name].as_str())
                    .unwrap_or_else(|| panic!("no env.{name}"));
                self.resolve(job, matrix, raw, tag)
            } else if expr == "github.ref_name" {
                tag.to_string()
            } else {
                format!("${{{{ {expr} }}}}")
            };
            out.push_str(&value);
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        out
    }

    /// The steps of a job that use an action (`owner/name@ref`, by owner/name).
    fn uses<'a>(job: &'a Value, action: &str) -> Vec<&'a Value> {
        Self::steps(job)
            .iter()
            .filter(|s| s["uses"].as_str().is_some_and(|u| u.split('@').next() == Some(action)))
            .collect()
    }

    fn steps(job: &Value) -> &Vec<Value> {
        job["steps"].as_array().expect("steps")
    }

    /// Every `run:` script of a job, joined.
    fn scripts(job: &Value) -> String {
        Self::steps(job).iter().filter_map(|s| s["run"].as_str()).collect::<Vec<_>>().join("\n")
    }
}

/// Host names a text spells out where an image or chart reference could take them: a first
/// path segment with a dot or a port, as `registry_host` reads one, after any `scheme://`.
/// `${{ ... }}` expressions are left out (they are where the hosts come from).
fn hosts_named(text: &str) -> BTreeSet<String> {
    let mut plain = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        plain.push_str(&rest[..start]);
        plain.push(' ');
        rest = rest[start..].find("}}").map_or("", |end| &rest[start + end + 2..]);
    }
    plain.push_str(rest);
    let mut hosts = BTreeSet::new();
    for word in plain.split(|c: char| c.is_whitespace() || "\"'`()<>[],=|;".contains(c)) {
        let word = word.split_once("://").map_or(word, |(_, after)| after);
        let Some((first, path)) = word.split_once('/') else { continue };
        let name = first.split(':').next().unwrap();
        let labels: Vec<&str> = name.split('.').collect();
        let domain = labels.len() >= 2
            && labels.iter().all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            && labels.last().unwrap().chars().all(|c| c.is_ascii_alphabetic());
        let port = first.split_once(':').is_some_and(|(_, p)| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if !path.is_empty() && (domain || port || name == "localhost") {
            hosts.insert(first.to_string());
        }
    }
    hosts
}

#[test]
fn hosts_named_finds_registry_hosts_and_not_paths() {
    let text = "uses: actions/checkout@v4\nrun: tar -C target/$T/release x\nfile: Dockerfile.sandbox\n\
                tags: ${{ vars.REGISTRY }}/ns/x:1 # .github/scripts/x\n\
                image: registry.example/ns/x:1 and oci://host.example:5000/charts, localhost:5000/a";
    let hosts: Vec<_> = hosts_named(text).into_iter().collect();
    assert_eq!(hosts, ["host.example:5000", "localhost:5000", "registry.example"]);
}

#[test]
fn the_release_workflow_publishes_signed_multi_arch_images_chart_and_binaries_from_a_tag() {
    let workflow = Workflow::load();
    let w = &workflow.0;
    let tag = format!("v{}", cargo_package("version"));

    // Only a pushed tag v* starts it.
    assert_eq!(w["on"], serde_json::json!({ "push": { "tags": ["v*"] } }), "{RELEASE_WORKFLOW}: on:");

    // Least privilege: nothing by default; writes only where a job needs them.
    assert_eq!(w["permissions"], serde_json::json!({}), "top-level permissions: {{}}");
    for (name, job) in workflow.jobs() {
        let permissions = job["permissions"].as_object().unwrap_or_else(|| panic!("job {name}: no permissions"));
        let scripts = Workflow::scripts(job);
        for (scope, level) in permissions {
            if level != "write" {
                continue;
            }
            let needed = match scope.as_str() {
                "id-token" => scripts.contains("cosign "),
                "contents" => scripts.contains("gh release "),
                _ => false,
            };
            assert!(needed, "job {name}: {scope}: write without a use for it");
        }
        if scripts.contains("cosign ") {
            assert_eq!(permissions.get("id-token"), Some(&Value::from("write")), "job {name}: cosign keyless");
            assert!(!Workflow::uses(job, "sigstore/cosign-installer").is_empty(), "job {name}: installs cosign");
        }
        // Everything waits for the version check.
        if name != "version" {
            let needs = match &job["needs"] {
                Value::String(one) => vec![one.clone()],
                Value::Array(many) => many.iter().map(|n| n.as_str().unwrap().to_string()).collect(),
                other => panic!("job {name}: needs {other}"),
            };
            assert!(
                needs.iter().any(|n| n == "version" || workflow.job(n)["needs"] == "version"),
                "job {name} runs before the version check"
            );
        }
    }
    assert!(
        Workflow::scripts(workflow.job("version")).contains(".github/scripts/release-version \"$GITHUB_REF_NAME\"")
    );

    // Every action pinned: a major version at least, or a commit.
    for (name, job) in workflow.jobs() {
        for step in Workflow::steps(job) {
            let Some(uses) = step["uses"].as_str() else { continue };
            let (_, pin) = uses.split_once('@').unwrap_or_else(|| panic!("job {name}: {uses} unpinned"));
            let major = pin.strip_prefix('v').is_some_and(|v| v.split('.').next().unwrap().parse::<u32>().is_ok());
            let commit = pin.len() == 40 && pin.chars().all(|c| c.is_ascii_hexdigit());
            assert!(major || commit, "job {name}: {uses}: pin a version (vN) or a commit");
        }
    }

    // Both Dockerfiles, both platforms, pushed with provenance and SBOM attestations, signed.
    let images = workflow.job("images");
    let build = Workflow::uses(images, "docker/build-push-action");
    let [build] = build.as_slice() else { panic!("images: one build-push-action step") };
    for action in ["docker/setup-qemu-action", "docker/setup-buildx-action", "docker/login-action"] {
        assert!(!Workflow::uses(images, action).is_empty(), "images: uses {action}");
    }
    let mut built = BTreeSet::new();
    for matrix in Workflow::matrix(images) {
        let with = |key: &str| workflow.resolve(images, &matrix, build["with"][key].as_str().unwrap_or(""), &tag);
        built.insert(with("file"));
        assert_eq!(with("platforms"), PLATFORMS, "{matrix:?}");
        assert_eq!(build["with"]["push"], true);
        assert_eq!(build["with"]["sbom"], true);
        assert!(with("provenance").starts_with("mode="), "provenance attestation: {}", with("provenance"));
        let image = format!("${{{{ vars.REGISTRY }}}}/${{{{ vars.IMAGE_NAMESPACE }}}}/{}", matrix["image"]);
        assert_eq!(with("tags"), format!("{image}:${{{{ needs.version.outputs.version }}}}"));
    }
    assert_eq!(built, BTreeSet::from(DOCKERFILES.map(String::from)), "images built");
    let login = &Workflow::uses(images, "docker/login-action")[0]["with"];
    assert_eq!(login["registry"], "${{ vars.REGISTRY }}");
    assert!(login["password"].as_str().unwrap().starts_with("${{ secrets."), "the registry password is a secret");
    let scripts = Workflow::scripts(images);
    assert!(scripts.contains("cosign sign --yes \"$IMAGE@$DIGEST\""), "images signed by digest: {scripts}");
    assert!(!Workflow::uses(images, "anchore/sbom-action").is_empty(), "an SPDX SBOM of each image");

    // The chart: packaged at the tag's version, pushed to an OCI registry, signed.
    let chart = workflow.job("chart");
    let scripts = Workflow::scripts(chart);
    assert!(scripts.contains("helm package charts/moltmates --version \"$VERSION\" --app-version \"$VERSION\""));
    assert!(scripts.contains("helm push ") && scripts.contains("\"oci://$CHARTS\""), "{scripts}");
    assert!(scripts.contains("cosign sign --yes \"$CHARTS/moltmates@$DIGEST\""), "{scripts}");
    assert!(chart["env"]["CHARTS"].as_str().unwrap().starts_with("${{ vars.REGISTRY }}/"));

    // Binaries: the Dockerfiles' toolchain, both musl targets; the release carries them,
    // an SBOM, checksums and their signature.
    let rust = load("Dockerfile").stage("build").unwrap().from.image.clone();
    assert_eq!(format!("rust:{}-bookworm", w["env"]["RUST_VERSION"].as_str().unwrap()), rust);
    let targets: BTreeSet<String> =
        Workflow::matrix(workflow.job("binaries")).into_iter().map(|m| m["target"].clone()).collect();
    assert_eq!(targets, BTreeSet::from(["x86_64-unknown-linux-musl".into(), "aarch64-unknown-linux-musl".into()]));
    let release = workflow.job("release");
    assert!(!Workflow::uses(release, "anchore/sbom-action").is_empty());
    let scripts = Workflow::scripts(release);
    for expected in ["sha256sum", "cosign sign-blob", "gh release create"] {
        assert!(scripts.contains(expected), "release: {expected}: {scripts}");
    }
    let helm = read("scripts/testenv").lines().find_map(|l| l.strip_prefix("HELM_VERSION=").map(String::from));
    assert_eq!(w["env"]["HELM_VERSION"].as_str(), helm.as_deref(), "the Helm the tests use");

    // No registry host: only the repository's variables say where anything goes.
    let hosts = hosts_named(&read(RELEASE_WORKFLOW));
    assert!(hosts.is_empty(), "{RELEASE_WORKFLOW} names hosts {hosts:?}: use ${{{{ vars.REGISTRY }}}}");
    for (name, job) in workflow.jobs() {
        for (key, value) in job["env"].as_object().into_iter().flatten() {
            let value = value.as_str().unwrap_or_default();
            if key.contains("IMAGE") || key == "CHARTS" || key == "REGISTRY" {
                assert!(value.starts_with("${{ vars.REGISTRY }}"), "job {name}: {key}={value}");
            }
        }
    }
}

/// The tag, the crate and the chart must agree, or nothing is published.
#[test]
fn the_release_version_check_names_what_disagrees() {
    let script = format!("{REPO}/.github/scripts/release-version");
    let version = cargo_package("version");
    let run = |tag: &str, root: &Path| {
        let out = Command::new(&script).arg(tag).arg(root).output().unwrap();
        (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (ok, stdout, stderr) = run(&format!("v{version}"), Path::new(REPO));
    assert!(ok, "the repo's own versions disagree: {stderr}");
    assert_eq!(stdout, format!("version={version}\n"));

    let (ok, _, stderr) = run("v99.0.0", Path::new(REPO));
    assert!(!ok && stderr.contains("::error::") && stderr.contains("Cargo.toml"), "{stderr}");
    let (ok, _, stderr) = run(&version, Path::new(REPO));
    assert!(!ok && stderr.contains("is not v<semver>"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("charts/moltmates")).unwrap();
    std::fs::write(dir.path().join("Cargo.toml"), "[package]\nname = \"x\"\nversion = \"1.2.3\"\n").unwrap();
    let chart = |version: &str, app: &str| {
        let text = format!("apiVersion: v2\nname: moltmates\nversion: {version}\nappVersion: \"{app}\"\n");
        std::fs::write(dir.path().join("charts/moltmates/Chart.yaml"), text).unwrap();
    };
    chart("1.2.3", "1.2.3");
    assert_eq!(run("v1.2.3", dir.path()).1, "version=1.2.3\n");
    chart("1.2.4", "1.2.3");
    let (ok, _, stderr) = run("v1.2.3", dir.path());
    assert!(!ok && stderr.contains("Chart.yaml's version is 1.2.4"), "{stderr}");
    chart("1.2.3", "1.2.0");
    let (ok, _, stderr) = run("v1.2.3", dir.path());
    assert!(!ok && stderr.contains("appVersion is 1.2.0"), "{stderr}");
}

/// docs/release.md tells a maintainer every repository setting the workflow reads, and names
/// no registry (only where the signatures come from).
#[test]
fn the_release_docs_list_every_setting_and_name_no_registry() {
    let docs = read("docs/release.md");
    let workflow = read(RELEASE_WORKFLOW);
    let mut settings = BTreeSet::new();
    for context in ["vars.", "secrets."] {
        for rest in workflow.split(context).skip(1) {
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            settings.insert(name);
        }
    }
    assert!(settings.len() >= 4, "{settings:?}");
    for name in &settings {
        assert!(docs.contains(&format!("`{name}`")), "docs/release.md does not explain {name}");
    }
    let hosts = hosts_named(&docs);
    assert!(hosts.iter().all(|h| h == "github.com" || h == "localhost"), "docs/release.md names {hosts:?}");
}

// ------------------------------------------------------------------------------------------
// scripts/images: the multi-arch plan (a real arm64 build takes ~10 minutes more than CI has
// to spare; `--dry-run` prints the buildah commands instead)
// ------------------------------------------------------------------------------------------

/// The commands `scripts/images --dry-run ARGS` prints, with the cache in a fresh folder,
/// which it leaves empty.
fn images_plan(args: &[&str], env: &[(&str, &str)]) -> (Vec<String>, PathBuf) {
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(format!("{REPO}/scripts/images"))
        .arg("--dry-run")
        .args(args)
        .env("MOLTMATES_CACHE", cache.path())
        .env_remove("PLATFORMS")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/images --dry-run {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let left: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
    assert!(left.is_empty(), "a dry run wrote to the cache: {left:?}");
    let root = cache.path().to_path_buf();
    (String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect(), root)
}

fn plan_line<'a>(plan: &'a [String], what: &str, words: &[String]) -> (usize, &'a String) {
    plan.iter()
        .enumerate()
        .find(|(_, l)| words.iter().all(|w| l.split(' ').any(|word| word == w)))
        .unwrap_or_else(|| panic!("no {what} with {words:?} in the plan:\n{}", plan.join("\n")))
}

#[test]
fn scripts_images_plans_each_dockerfile_for_both_platforms_as_a_multi_arch_archive() {
    let version = cargo_package("version");
    let (plan, cache) = images_plan(&["--platform", PLATFORMS], &[]);
    let cache = cache.display().to_string();
    let (same, _) = images_plan(&[], &[("PLATFORMS", PLATFORMS)]);
    assert_eq!(plan.len(), same.len(), "PLATFORMS=... plans as --platform does");

    for (file, name) in [("Dockerfile", "moltmate"), ("Dockerfile.sandbox", "sandbox")] {
        let image = format!("localhost/moltmates/{name}:{version}");
        let words = |list: &[&str]| list.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let (built, build) = plan_line(
            &plan,
            "buildah build",
            &words(&["build", "--platform", PLATFORMS, "-f", &format!("{REPO}/{file}"), "--manifest", &image]),
        );
        // Its own storage: the default build's images and bases stay as they are.
        assert!(build.contains(&format!("--root {cache}/buildah-multiarch/storage ")), "{build}");
        // buildah 1.28 would apply the build stage's --platform=$BUILDPLATFORM to the final
        // stage too (an amd64 Debian in the arm64 image): scripts/images leaves it unset.
        assert!(!build.contains("BUILDPLATFORM"), "{build}");
        let archive = format!("oci-archive:{cache}/images/{name}-amd64-arm64.tar:{image}");
        let (pushed, push) =
            plan_line(&plan, "buildah manifest push", &words(&["manifest", "push", "--all", &image, &archive]));
        assert!(push.contains("--format oci"), "an OCI index, as `ctr images import` takes it: {push}");
        assert!(built < pushed, "{name}: pushed before it is built");
        // A list left from an earlier build is dropped first, or it would keep its images.
        let (dropped, _) = plan_line(&plan, "buildah manifest rm", &words(&["manifest", "rm", &image]));
        assert!(dropped < built);
    }
}

/// Without a platform the plan is the one other tests depend on: this machine's platform,
/// localhost/moltmates/NAME:VERSION, archives NAME.tar.
#[test]
fn scripts_images_default_plan_is_unchanged() {
    let version = cargo_package("version");
    let (plan, cache) = images_plan(&[], &[]);
    let cache = cache.display().to_string();
    assert_eq!(plan.len(), 4, "{plan:#?}");
    for (file, name) in [("Dockerfile", "moltmate"), ("Dockerfile.sandbox", "sandbox")] {
        let image = format!("localhost/moltmates/{name}:{version}");
        let store =
            format!("buildah --root {cache}/buildah/storage --runroot {cache}/buildah/run --storage-driver overlay");
        assert!(
            plan.contains(&format!(
                "{store} bud --quiet --layers --network host --build-arg TARGETARCH=amd64 \
                 -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
                 -f {REPO}/{file} -t {image} {REPO}"
            )),
            "{plan:#?}"
        );
        assert!(plan.contains(&format!("{store} push -q {image} oci-archive:{cache}/images/{name}.tar:{image}")));
    }
    let out = Command::new(format!("{REPO}/scripts/images"))
        .args(["--dry-run", "--platform", "linux/s390x"])
        .env("MOLTMATES_CACHE", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("unsupported architecture 's390x'"), "{stderr}");
}

// ------------------------------------------------------------------------------------------
// The krew manifest (plugins/krew/moltmate.yaml)
// ------------------------------------------------------------------------------------------

const KREW_MANIFEST: &str = "plugins/krew/moltmate.yaml";

/// krew's (os, arch) for a Rust target triple.
fn krew_platform(target: &str) -> (String, String) {
    let arch = match target.split('-').next().unwrap() {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("{target}: no krew arch for {other}"),
    };
    let os = if target.contains("-linux-") { "linux" } else { panic!("{target}: not linux") };
    (os.to_string(), arch.to_string())
}

/// The release's archives, as the workflow's binaries job names them, per krew platform.
fn release_archives(tag: &str) -> BTreeMap<(String, String), String> {
    let workflow = Workflow::load();
    let job = workflow.job("binaries");
    Workflow::matrix(job)
        .into_iter()
        .map(|m| (krew_platform(&m["target"]), workflow.resolve(job, &m, job["env"]["ARCHIVE"].as_str().unwrap(), tag)))
        .collect()
}

#[test]
fn the_krew_manifest_is_a_plugin_named_moltmate_for_the_releases_platforms() {
    let docs = yaml_documents(&read(KREW_MANIFEST), KREW_MANIFEST);
    let [plugin] = docs.as_slice() else { panic!("{KREW_MANIFEST}: one document") };
    assert_eq!(plugin["apiVersion"], "krew.googlecontainertools.github.com/v1alpha2");
    assert_eq!(plugin["kind"], "Plugin");
    assert_eq!(plugin["metadata"]["name"], "moltmate", "kubectl moltmate");
    let spec = &plugin["spec"];
    assert_eq!(spec["version"], "{{ .TagName }}");
    assert!(spec["homepage"].as_str().is_some_and(|h| h.starts_with("https://")), "homepage");
    // krew-index asks for a short one.
    let short = spec["shortDescription"].as_str().expect("shortDescription");
    assert!(!short.is_empty() && short.len() <= 50, "shortDescription: {short:?}");
    for field in ["description", "caveats"] {
        let text = spec[field].as_str().unwrap_or_else(|| panic!("spec.{field}"));
        for usage in ["kubectl moltmate audit", "kubectl moltmate users"] {
            assert!(text.contains(usage), "spec.{field} does not say {usage}");
        }
    }

    let platforms = spec["platforms"].as_array().expect("platforms");
    let mut seen = BTreeSet::new();
    for platform in platforms {
        let labels = &platform["selector"]["matchLabels"];
        let key = (labels["os"].as_str().unwrap().to_string(), labels["arch"].as_str().unwrap().to_string());
        assert!(seen.insert(key.clone()), "{key:?} twice");
        assert_eq!(platform["sha256"], "{{ .Sha256 }}", "{key:?}: the workflow fills in sha256");
        assert!(platform["uri"].as_str().is_some_and(|u| u.starts_with("https://")), "{key:?}: uri");
        // krew links `bin` into its PATH as kubectl-moltmate.
        assert_eq!(platform["bin"], "moltmate", "{key:?}");
        let files: Vec<(&str, &str)> = platform["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| (f["from"].as_str().unwrap(), f["to"].as_str().unwrap()))
            .collect();
        assert!(files.contains(&("moltmate", ".")), "{key:?}: files {files:?}");
        // Every file krew takes is one the workflow puts in the archive.
        let archive = Workflow::scripts(Workflow::load().job("binaries"));
        for (from, _) in &files {
            assert!(archive.split_whitespace().any(|w| w == *from), "{key:?}: the archive has no {from}: {archive}");
        }
    }
    let released: BTreeSet<_> = release_archives("v0.0.0").into_keys().collect();
    assert_eq!(seen, released, "krew's platforms are the release's binaries");
}

/// Rendered for a tag, the manifest points at exactly the archives the workflow uploads, with
/// their sha256; the release job renders it before the checksums are made.
#[test]
fn the_rendered_krew_manifest_names_the_release_archives_and_their_sha256() {
    let tag = format!("v{}", cargo_package("version"));
    let archives = release_archives(&tag);
    let dist = tempfile::tempdir().unwrap();
    for name in archives.values() {
        std::fs::write(dist.path().join(name), format!("the archive {name}")).unwrap();
    }
    let render = |dir: &Path| {
        Command::new(format!("{REPO}/plugins/krew/render")).args([&tag, "owner/moltmates"]).arg(dir).output().unwrap()
    };
    let out = render(dist.path());
    assert!(out.status.success(), "render: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("{{"), "{text}");
    let plugin = &yaml_documents(&text, "the rendered manifest")[0];
    assert_eq!(plugin["spec"]["version"], Value::from(tag.clone()));
    for platform in plugin["spec"]["platforms"].as_array().unwrap() {
        let labels = &platform["selector"]["matchLabels"];
        let key = (labels["os"].as_str().unwrap().to_string(), labels["arch"].as_str().unwrap().to_string());
        let name = &archives[&key];
        assert_eq!(
            platform["uri"],
            Value::from(format!("https://github.com/owner/moltmates/releases/download/{tag}/{name}")),
            "{key:?}"
        );
        let sum = Command::new("sha256sum").arg(dist.path().join(name)).output().unwrap();
        let sum = String::from_utf8(sum.stdout).unwrap();
        assert_eq!(platform["sha256"], Value::from(sum.split(' ').next().unwrap()), "{key:?}");
    }

    // An archive missing from the release is an error, not a manifest without a checksum.
    let empty = tempfile::tempdir().unwrap();
    let out = render(empty.path());
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no such file"));

    let workflow = Workflow::load();
    let steps = Workflow::steps(workflow.job("release"));
    let position = |needle: &str| {
        steps
            .iter()
            .position(|s| s["run"].as_str().is_some_and(|r| r.contains(needle)))
            .unwrap_or_else(|| panic!("release: no step runs {needle}"))
    };
    assert!(
        position("plugins/krew/render \"$GITHUB_REF_NAME\" \"$GITHUB_REPOSITORY\" dist >dist/moltmate.yaml")
            < position("sha256sum"),
        "the manifest is rendered, then checksummed with the rest"
    );
}

/// krew runs the binary as kubectl-moltmate: called by that name it is the plugin.
#[test]
fn the_binary_called_kubectl_moltmate_is_the_kubectl_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("kubectl-moltmate");
    std::os::unix::fs::symlink(MOLTMATE, &link).unwrap();
    let out = Command::new(&link).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && help.contains("Usage: kubectl moltmate"), "{help}");
    for command in ["audit", "users"] {
        assert!(help.contains(command), "kubectl moltmate --help lists no {command}: {help}");
    }
}

/// The release's binaries are compiled as the images compile theirs: the same cargo flags.
#[test]
fn the_release_binaries_are_built_as_the_images_build_theirs() {
    let flags = |command: &str| -> BTreeSet<String> {
        command.split_whitespace().filter(|w| w.starts_with("--") && *w != "--target").map(String::from).collect()
    };
    let workflow = Workflow::load();
    let scripts = Workflow::scripts(workflow.job("binaries"));
    let release = scripts.lines().find(|l| l.trim_start().starts_with("cargo build")).expect("binaries: cargo build");
    let image = load("Dockerfile").stage("build").unwrap().cargo_build_copied_to("/moltmate").unwrap().command;
    let image = image.split("&&").find(|c| c.contains("cargo build")).unwrap();
    assert_eq!(flags(release), flags(image), "release: {release}\nimage: {image}");
}
