//! The guide and the reference hold together: every relative link in
//! README.md, CONTRIBUTING.md and docs/*.md leads to a file that exists
//! and, with a `#fragment`, to a heading of that file; and the README's
//! development section gives the test commands that CI runs. No process is
//! started: these run in the fast tier.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::common::root;

/// The markdown files checked: the README, CONTRIBUTING.md and docs/.
fn pages() -> Vec<PathBuf> {
    let root = root();
    let mut pages = vec![root.join("README.md"), root.join("CONTRIBUTING.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// `text` without fenced code blocks and code spans (blanked, so that line
/// numbers stay right): a link shown as code is no link.
fn prose(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut fenced = false;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            out.push('\n');
        } else if fenced {
            out.push('\n');
        } else {
            out.push_str(line);
        }
    }
    // Code spans may run over a line break.
    let mut blanked = String::with_capacity(out.len());
    let mut in_code = false;
    for c in out.chars() {
        if c == '`' {
            in_code = !in_code;
            blanked.push(' ');
        } else if in_code && c != '\n' {
            blanked.push(' ');
        } else {
            blanked.push(c);
        }
    }
    blanked
}

/// Every link target in `text`, with its line: inline `[text](target)` and
/// reference definitions `[name]: target`.
fn links(text: &str) -> Vec<(usize, String)> {
    let text = prose(text);
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = rest[..end].split_whitespace().next().unwrap_or("").to_string();
            out.push((n + 1, target));
            rest = &rest[end..];
        }
        let t = line.trim_start();
        if let Some(close) = t.strip_prefix('[').and_then(|r| r.find("]:")) {
            if let Some(target) = t[close + 3..].split_whitespace().next() {
                out.push((n + 1, target.to_string()));
            }
        }
    }
    out
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped
/// (letters, digits, `-` and `_` kept), spaces made `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a markdown file's headings (repeated headings get `-1`,
/// `-2`, ... as on GitHub).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let Some(title) = line.strip_prefix('#').filter(|_| !fenced) else { continue };
        let title = title.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let base = slug(title);
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// What is wrong with `target`, linked from `page`, if anything.
fn broken(page: &Path, target: &str) -> Option<String> {
    if target.is_empty() {
        return Some("an empty link".into());
    }
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, fragment) = match target.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (target, None),
    };
    let file = if path.is_empty() { page.to_path_buf() } else { page.parent().unwrap().join(path) };
    if !file.exists() {
        return Some(format!("{} does not exist", file.display()));
    }
    let fragment = fragment?;
    if file.extension().is_none_or(|e| e != "md") {
        return None; // a line anchor in source code, say: GitHub's business
    }
    let text = std::fs::read_to_string(&file).expect("a markdown file");
    if anchors(&text).contains(fragment) {
        None
    } else {
        Some(format!("{} has no heading whose anchor is #{fragment}", file.display()))
    }
}

#[test]
fn every_relative_link_in_the_guide_and_the_docs_leads_somewhere() {
    let root = root();
    let mut problems = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        for (line, target) in links(&text) {
            checked += 1;
            if let Some(why) = broken(&page, &target) {
                let rel = page.strip_prefix(&root).unwrap_or(&page);
                problems.push(format!("{}:{line}: ({target}): {why}", rel.display()));
            }
        }
    }
    // The checker itself must see links, or it checks nothing.
    assert!(checked > 50, "only {checked} links found: is the parser broken?");
    assert!(problems.is_empty(), "{} broken links:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn the_link_checker_sees_what_it_must() {
    let text = "# Top\n\n## After \"ready\": health check, canary\n\nSee [a](x.md#top) and\n\
                `[not](a link)` then\n```\n[nor](this)\n```\n[ref]: y.md\n";
    let found: Vec<String> = links(text).into_iter().map(|(_, t)| t).collect();
    assert_eq!(found, ["x.md#top", "y.md"]);
    let a = anchors(text);
    assert!(a.contains("top") && a.contains("after-ready-health-check-canary"), "{a:?}");
    assert_eq!(
        slug("Draining correctly (read this if you write a worker)"),
        "draining-correctly-read-this-if-you-write-a-worker"
    );
    assert_eq!(anchors("# A\n# A\n"), BTreeSet::from(["a".to_string(), "a-1".to_string()]));
}

/// `.ci/run` runs "the test command that README.md gives": the README's
/// development section gives the fast tier first, then the whole suite, and
/// CI runs the whole suite.
#[test]
fn the_readme_gives_the_test_commands_ci_runs() {
    let root = root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let dev = readme.split("\n## Development\n").nth(1).expect("README.md has a \"## Development\" section");
    let dev = dev.split("\n## ").next().unwrap();
    let commands: Vec<&str> =
        dev.lines().filter(|l| l.starts_with("cargo ")).map(|l| l.split('#').next().unwrap().trim()).collect();
    assert_eq!(commands, ["cargo test --lib && cargo test-fast", "cargo test"], "README.md, Development:\n{dev}");
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(ci.lines().any(|l| l.trim() == "cargo test"), ".ci/run does not run `cargo test`");
    let aliases = std::fs::read_to_string(root.join(".cargo/config.toml")).unwrap();
    assert!(aliases.contains("test-fast = "), ".cargo/config.toml has no test-fast alias");
}
