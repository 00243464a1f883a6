//! What ships beside the binary: the `.deb` assets named in Cargo.toml, the
//! committed shell completions, and the container example, whose Kubernetes
//! timeouts must follow from hotswap's own (no cluster, no cargo-deb needed).

use std::process::Command;
use std::time::Duration;

use hotswap::options::Options;

use crate::common::*;

/// Every asset of `[package.metadata.deb]` exists (the binary excepted,
/// which `cargo deb` builds) and goes where Debian expects it.
#[test]
fn the_deb_assets_exist() {
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml")).unwrap().parse().unwrap();
    let assets = manifest["package"]["metadata"]["deb"]["assets"].as_array().expect("deb assets");
    let mut targets = Vec::new();
    for a in assets {
        let a = a.as_array().unwrap();
        let (from, to) = (a[0].as_str().unwrap(), a[1].as_str().unwrap());
        targets.push(to.to_string());
        if from.starts_with("target/") {
            continue;
        }
        let (dir, pattern) = from.rsplit_once('/').unwrap_or((".", from));
        let found = std::fs::read_dir(root().join(dir))
            .unwrap()
            .flatten()
            .filter(|e| match pattern.split_once('*') {
                Some((pre, post)) => {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with(pre) && n.ends_with(post)
                }
                None => e.file_name() == pattern,
            })
            .count();
        assert!(found > 0, "deb asset {from} matches no file");
    }
    for place in [
        "usr/bin/",
        "usr/share/man/man1/",
        "usr/share/bash-completion/completions/hotswap",
        "usr/share/zsh/vendor-completions/",
        "usr/share/fish/vendor_completions.d/",
        "lib/systemd/system/",
    ] {
        assert!(targets.iter().any(|t| t == place), "nothing goes to {place}: {targets:?}");
    }
}

/// The package's changelog is at the crate's version (lintian reads it,
/// and `apt changelog` shows it), and the postinst is a shell script that
/// `sh -n` accepts.
#[test]
fn the_deb_changelog_follows_the_version() {
    let version = env!("CARGO_PKG_VERSION");
    let changelog = std::fs::read_to_string(root().join("contrib/debian/changelog")).unwrap();
    let first = changelog.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("hotswap ({version}-")),
        "contrib/debian/changelog starts with {first:?}, the crate is {version}"
    );
    let sig = changelog.lines().find(|l| l.starts_with(" -- ")).expect("a signature line");
    assert!(sig.contains("  ") && sig.ends_with("+0000"), "{sig}");
    let out = Command::new("sh").arg("-n").arg(root().join("contrib/debian/postinst")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The completion scripts the package ships are those the binary prints.
#[test]
fn committed_completions_are_up_to_date() {
    for (shell, file) in [("bash", "hotswap.bash"), ("zsh", "_hotswap"), ("fish", "hotswap.fish")] {
        let out = Command::new(HOTSWAP).args(["completions", shell]).output().unwrap();
        assert!(out.status.success());
        let committed = std::fs::read(root().join("contrib/completions").join(file)).unwrap_or_default();
        assert!(
            out.stdout == committed,
            "contrib/completions/{file} is out of date: run `hotswap completions {shell} > contrib/completions/{file}`"
        );
    }
}

/// The block under `KEY: |` in a YAML file (a ConfigMap's file), unindented.
fn yaml_block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let head = lines.next().expect(key);
    let indent = head.len() - head.trim_start().len() + 2;
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The number after `key:` (the first one after `after`, when given).
fn yaml_number(yaml: &str, after: &str, key: &str) -> u64 {
    let from = yaml.find(after).unwrap_or_else(|| panic!("{after} not in the manifest"));
    yaml[from..]
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("{key} after {after}"))
}

/// kubernetes.yaml's pod settings follow from hotswap's timeouts as its
/// comments say, and its ConfigMap is the container's hotswap.toml.
#[test]
fn the_kubernetes_timeouts_match_hotswaps() {
    let dir = root().join("contrib/container");
    let yaml = std::fs::read_to_string(dir.join("kubernetes.yaml")).unwrap();
    let in_map = Options::from_toml(&yaml_block(&yaml, "hotswap.toml")).expect("the ConfigMap's hotswap.toml");
    let in_image = Options::from_toml(&std::fs::read_to_string(dir.join("hotswap.toml")).unwrap()).unwrap();
    assert_eq!(format!("{in_map:?}"), format!("{in_image:?}"), "the ConfigMap and the image's hotswap.toml differ");
    let shutdown = in_map.shutdown_timeout.expect("shutdown-timeout");
    let ready = in_map.ready_timeout.expect("ready-timeout");
    assert!(in_map.watch.iter().any(|w| w.as_path() == std::path::Path::new("/etc/app")));

    let grace = yaml_number(&yaml, "terminationGracePeriodSeconds", "terminationGracePeriodSeconds");
    let pre_stop: u64 = {
        let at = yaml.find("preStop:").unwrap();
        let line = yaml[at..].lines().find(|l| l.contains("\"sleep\"")).unwrap();
        line.rsplit('"').nth(1).unwrap().parse().unwrap()
    };
    assert!(
        Duration::from_secs(grace) >= Duration::from_secs(pre_stop) + shutdown + Duration::from_secs(5),
        "terminationGracePeriodSeconds {grace} < preStop {pre_stop} s + shutdown-timeout {shutdown:?} + 5 s"
    );
    let startup =
        yaml_number(&yaml, "startupProbe:", "periodSeconds") * yaml_number(&yaml, "startupProbe:", "failureThreshold");
    assert!(Duration::from_secs(startup) > ready, "the startup probe gives up ({startup} s) before ready-timeout");

    // A YAML parser's word too, where one is at hand (not needed by CI).
    let parsed = Command::new("python3")
        .args(["-c", "import sys, yaml; print(len(list(yaml.safe_load_all(open(sys.argv[1])))))"])
        .arg(dir.join("kubernetes.yaml"))
        .output();
    match parsed {
        Ok(o) if o.status.success() => assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "4"),
        _ => eprintln!("no python3 yaml module: kubernetes.yaml checked by the lines above only"),
    }
}
