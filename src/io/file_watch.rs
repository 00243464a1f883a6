//! Development mode: watch files and ask for a reload when they change.
//!
//! A watcher task turns the notify crate's raw events into one
//! [`Event::FilesChanged`] per burst: changes are collected until none has come for
//! `--watch-debounce`, so an editor's write-rename-chmod or a `git checkout`
//! of 500 files gives one reload. Paths that never trigger:
//! - `.git/`, `target/`, `node_modules/` and editor swap and backup files;
//! - whatever `.gitignore` or `.ignore` files in the watched tree ignore;
//! - `--watch-ignore` globs;
//! - the files hotswap's own stdout and stderr go to
//!   (`hotswap run --watch . ... >hotswap.log 2>&1`): every line logged would
//!   be a change, and every reload logs lines, a loop. Workers' and builds'
//!   output reaches those files through the primary, so this covers theirs;
//! - what the `--build` command writes: a path that changes only while a
//!   build runs (never while hotswap is idle) is learned as a build output and
//!   ignored during builds, so a build that writes into the watched tree does
//!   not trigger itself in a loop. (A file saved for the very first time
//!   while a build runs is taken for an output once; its next save counts.)
//!
//! A `--watch` path that is a symlink is followed to its target, and the
//! directory holding the symlink is watched too: when the link comes to point
//! elsewhere (a Kubernetes ConfigMap or Secret volume swaps its `..data`
//! link on every update, a deploy swaps `current`), the new target is
//! watched and the swap is one change.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use globset::{Glob, GlobSet, GlobSetBuilder};
use ignore::gitignore::Gitignore;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::types::Event;

/// Directories whose contents never trigger a reload.
const SKIP_DIRS: [&str; 3] = [".git", "target", "node_modules"];

/// Whether the build runs, as the supervisor tells the watcher.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildClock {
    pub running: bool,
    pub ended: Option<Instant>,
}

/// Changes arriving this long after a build ended still count as its own
/// (the watcher and the exit of the build reach hotswap on different paths).
const BUILD_GRACE: Duration = Duration::from_millis(100);

/// Decides which paths matter.
pub struct Filter {
    roots: Vec<PathBuf>,
    globs: GlobSet,
    /// `.gitignore`/`.ignore` matchers by file path, loaded on first use.
    ignore_files: HashMap<PathBuf, Option<Gitignore>>,
    /// `.git/info/exclude` and the global excludes file, consulted when no
    /// ignore file in the tree decides.
    fallbacks: Vec<Gitignore>,
    /// Paths seen changing while no build ran: sources.
    sources: HashSet<PathBuf>,
    /// Paths learned as build outputs.
    outputs: HashSet<PathBuf>,
    /// Regular files the primary's own stdout and stderr write to.
    own_output: HashSet<PathBuf>,
}

impl Filter {
    pub fn new(roots: Vec<PathBuf>, ignore_globs: &[String]) -> Result<Filter> {
        let mut b = GlobSetBuilder::new();
        for g in ignore_globs {
            b.add(Glob::new(g).with_context(|| format!("--watch-ignore {g:?}"))?);
            // `dist` also means everything under it.
            if !g.contains('*') {
                b.add(
                    Glob::new(&format!("{}/**", g.trim_end_matches('/')))
                        .with_context(|| format!("--watch-ignore {g:?}"))?,
                );
            }
        }
        let globs = b.build().context("--watch-ignore")?;
        // Below the tree's own ignore files, git also reads the repository's
        // `.git/info/exclude` and the user's `core.excludesFile`.
        // (Both rooted where their patterns are relative to.)
        let rooted = |root: &Path, file: PathBuf| {
            let mut b = ignore::gitignore::GitignoreBuilder::new(root);
            b.add(file);
            b.build().ok()
        };
        let mut fallbacks = Vec::new();
        for root in &roots {
            if let Some(repo) = root.ancestors().find(|d| d.join(".git").is_dir()) {
                let exclude = repo.join(".git/info/exclude");
                if exclude.is_file() {
                    fallbacks.extend(rooted(repo, exclude));
                }
            }
            if let Some(global) = ignore::gitignore::gitconfig_excludes_path().filter(|p| p.is_file()) {
                fallbacks.extend(rooted(root, global));
            }
        }
        fallbacks.retain(|g| !g.is_empty());
        Ok(Filter {
            roots,
            globs,
            ignore_files: HashMap::new(),
            fallbacks,
            sources: HashSet::new(),
            outputs: HashSet::new(),
            own_output: HashSet::new(),
        })
    }

    /// Never reload for changes of `path`: hotswap itself writes to it.
    pub fn ignore_own_output(&mut self, path: PathBuf) {
        self.own_output.insert(path);
    }

    /// A watched root that a swapped symlink now resolves elsewhere.
    fn retarget(&mut self, old: &Path, new: &Path) {
        for r in self.roots.iter_mut().filter(|r| *r == old) {
            *r = new.to_path_buf();
        }
    }

    /// True when a change of `path` should lead to a reload.
    pub fn relevant(&mut self, path: &Path, clock: BuildClock) -> bool {
        if self.ignored(path) {
            return false;
        }
        let during_build = clock.running || clock.ended.is_some_and(|t| t.elapsed() < BUILD_GRACE);
        if self.outputs.contains(path) {
            if during_build {
                return false;
            }
            // Changed with no build running: it was a source after all (one
            // first saved while a build ran).
            self.outputs.remove(path);
        }
        if during_build && !self.sources.contains(path) {
            tracing::debug!("watch: {} changed during the build; treating it as a build output", path.display());
            self.outputs.insert(path.to_path_buf());
            return false;
        }
        self.sources.insert(path.to_path_buf());
        true
    }

    /// The fixed rules, the globs and the ignore files.
    pub fn ignored(&mut self, path: &Path) -> bool {
        if self.own_output.contains(path) {
            return true;
        }
        let Some(root) = self.roots.iter().find(|r| path.starts_with(r)).cloned() else { return false };
        let rel = path.strip_prefix(&root).unwrap_or(path);
        if rel.components().any(|c| SKIP_DIRS.iter().any(|d| c.as_os_str() == *d)) {
            return true;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if is_editor_file(&name) {
            return true;
        }
        if self.globs.is_match(rel) || self.globs.is_match(&name) {
            return true;
        }
        if name == ".gitignore" || name == ".ignore" {
            // Takes effect from now on; the change itself does not reload.
            self.ignore_files.remove(path);
            return true;
        }
        if let Some(verdict) = self.ignored_by_files(path, &root) {
            return verdict;
        }
        let is_dir = path.is_dir();
        self.fallbacks
            .iter()
            .any(|g| path.starts_with(g.path()) && g.matched_path_or_any_parents(path, is_dir).is_ignore())
    }

    /// Walks up from the path to the watched root; the nearest ignore file
    /// with a verdict wins, as in git. `None`: no file decides.
    fn ignored_by_files(&mut self, path: &Path, root: &Path) -> Option<bool> {
        let is_dir = path.is_dir();
        let mut dir = path.parent();
        while let Some(d) = dir {
            for file in [".ignore", ".gitignore"] {
                let f = d.join(file);
                let m = self
                    .ignore_files
                    .entry(f.clone())
                    .or_insert_with(|| f.is_file().then(|| Gitignore::new(&f).0).filter(|g| !g.is_empty()));
                if let Some(m) = m {
                    let verdict = m.matched_path_or_any_parents(path, is_dir);
                    if verdict.is_ignore() {
                        return Some(true);
                    }
                    if verdict.is_whitelist() {
                        return Some(false);
                    }
                }
            }
            if d == root {
                break;
            }
            dir = d.parent();
        }
        None
    }
}

/// Vim's `.x.swp` and `4913`, Emacs's `#x#` and `.#x`, `x~` backups.
fn is_editor_file(name: &str) -> bool {
    name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".swo")
        || name.ends_with('~')
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
        || name == "4913"
        || name == ".DS_Store"
}

/// A `--watch` path that is a symlink: what it resolves to may change
/// without any event on the target itself (a symlink swapped in its
/// directory), so that directory is watched for it too.
struct Link {
    /// The symlink, in its directory's canonical path (as events name it).
    given: PathBuf,
    /// Its directory, canonical.
    dir: PathBuf,
    /// What it resolved to last: the root being watched.
    target: PathBuf,
}

impl Link {
    fn new(given: &Path, target: &Path) -> Option<Link> {
        if !given.symlink_metadata().ok()?.file_type().is_symlink() {
            return None;
        }
        let parent = match given.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = parent.canonicalize().ok()?;
        Some(Link { given: dir.join(given.file_name()?), dir, target: target.to_path_buf() })
    }

    /// The new target, when the symlink now resolves to another existing path.
    fn moved(&self) -> Option<PathBuf> {
        self.given.canonicalize().ok().filter(|t| *t != self.target)
    }
}

/// Starts watching; errors when a path does not exist.
pub fn start(
    paths: &[PathBuf],
    ignore_globs: &[String],
    debounce: Duration,
    events: mpsc::Sender<Event>,
    clock: watch::Receiver<BuildClock>,
) -> Result<()> {
    let mut roots = Vec::new();
    let mut links = Vec::new();
    for p in paths {
        let c = p.canonicalize().map_err(|e| anyhow::anyhow!("--watch {}: {e}", p.display()))?;
        links.extend(Link::new(p, &c));
        roots.push(c);
    }
    let mut filter = Filter::new(roots.clone(), ignore_globs)?;
    for file in own_output_files() {
        if roots.iter().any(|r| file.starts_with(r)) {
            tracing::info!("watch: ignoring {}: hotswap's own output goes there", file.display());
            filter.ignore_own_output(file);
        }
    }
    let (raw_tx, raw_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let _ = raw_tx.send(res);
    })
    .context("starting the file watcher")?;
    for r in &roots {
        watcher.watch(r, RecursiveMode::Recursive).with_context(|| format!("watching {}", r.display()))?;
        tracing::info!("watching {} for changes", r.display());
    }
    for l in &links {
        // A directory already watched as a root reports the swap anyway.
        if !roots.iter().any(|r| l.dir.starts_with(r)) {
            watcher.watch(&l.dir, RecursiveMode::NonRecursive).with_context(|| {
                format!("watching {} (it holds the symlink {})", l.dir.display(), l.given.display())
            })?;
        }
    }
    if roots.is_empty() {
        bail!("nothing to watch");
    }
    tokio::spawn(run(watcher, roots, links, filter, debounce, raw_rx, events, clock));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run(
    mut watcher: notify::RecommendedWatcher,
    mut roots: Vec<PathBuf>,
    mut links: Vec<Link>,
    mut filter: Filter,
    debounce: Duration,
    mut raw: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    events: mpsc::Sender<Event>,
    clock: watch::Receiver<BuildClock>,
) {
    let mut pending: BTreeSet<PathBuf> = BTreeSet::new();
    let mut deadline = tokio::time::Instant::now();
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            res = raw.recv() => {
                let Some(res) = res else { return };
                let ev = match res {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::warn!("watch: {e}");
                        continue;
                    }
                };
                if matches!(ev.kind, EventKind::Access(_)) {
                    continue;
                }
                for path in ev.paths {
                    for l in links.iter_mut().filter(|l| path.parent() == Some(l.dir.as_path())) {
                        let Some(new) = l.moved() else { continue };
                        if let Err(e) = watcher.watch(&new, RecursiveMode::Recursive) {
                            tracing::warn!("watching {} (the new target of {}): {e}", new.display(), l.given.display());
                            continue;
                        }
                        // Already gone when the swap removed the old target.
                        let _ = watcher.unwatch(&l.target);
                        tracing::info!("watch: {} now points to {}", l.given.display(), new.display());
                        for r in roots.iter_mut().filter(|r| **r == l.target) {
                            *r = new.clone();
                        }
                        filter.retarget(&l.target, &new);
                        l.target = new;
                        pending.insert(l.given.clone());
                        deadline = tokio::time::Instant::now() + debounce;
                    }
                    // Outside every root: a neighbour of a watched symlink,
                    // or the target it no longer points to.
                    if !roots.iter().any(|r| path.starts_with(r)) {
                        continue;
                    }
                    if roots.contains(&path) && !path.exists() && !missing.contains(&path) {
                        tracing::warn!("watched {} was removed; watching for it to come back", path.display());
                        missing.push(path.clone());
                    }
                    if filter.relevant(&path, *clock.borrow()) {
                        pending.insert(path);
                        deadline = tokio::time::Instant::now() + debounce;
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline), if !pending.is_empty() => {
                let paths: Vec<PathBuf> = std::mem::take(&mut pending).into_iter().collect();
                if events.send(Event::FilesChanged { paths }).await.is_err() {
                    return;
                }
            }
            _ = tick.tick(), if !missing.is_empty() => {
                missing.retain(|p| {
                    if !p.exists() {
                        return true;
                    }
                    match watcher.watch(p, RecursiveMode::Recursive) {
                        Ok(()) => {
                            tracing::info!("{} is back; watching it again", p.display());
                            pending.insert(p.clone());
                            deadline = tokio::time::Instant::now() + debounce;
                            false
                        }
                        Err(e) => {
                            tracing::warn!("watching {} again: {e}", p.display());
                            true
                        }
                    }
                });
            }
        }
    }
}

/// The regular files the primary's stdout and stderr are redirected to.
fn own_output_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for fd in [1, 2] {
        // /proc/self/fd/N names the file (Linux); elsewhere nothing is found.
        let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{fd}")) else { continue };
        let Ok(path) = path.canonicalize() else { continue };
        if path.is_file() && !files.contains(&path) {
            files.push(path);
        }
    }
    files
}

/// `src/a.js`, or `src/a.js and 4 more`.
pub fn describe(paths: &[PathBuf]) -> String {
    let first = paths.first().map(|p| p.display().to_string()).unwrap_or_default();
    match paths.len() {
        0 | 1 => first,
        n => format!("{first} and {} more", n - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rules_globs_and_gitignore() {
        let dir = std::env::temp_dir().join(format!("hotswap-watch-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("src/gen")).unwrap();
        std::fs::write(dir.join(".gitignore"), "*.log\n/dist\n").unwrap();
        std::fs::write(dir.join("src/.gitignore"), "gen/\n!keep.log\n").unwrap();
        let mut f = Filter::new(vec![dir.clone()], &["*.bak".into(), "tmp".into()]).unwrap();
        let idle = BuildClock::default();
        assert!(f.relevant(&dir.join("src/app.js"), idle));
        for p in [
            ".git/index",
            "target/debug/x",
            "node_modules/a/b.js",
            "src/.app.js.swp",
            "src/app.js~",
            "src/4913",
            "x.bak",
            "tmp/y",
        ] {
            assert!(!f.relevant(&dir.join(p), idle), "{p} should be ignored");
        }
        assert!(!f.relevant(&dir.join("server.log"), idle));
        assert!(!f.relevant(&dir.join("dist/bundle.js"), idle));
        assert!(!f.relevant(&dir.join("src/gen/out.js"), idle));
        assert!(f.relevant(&dir.join("src/keep.log"), idle), "a nearer !rule whitelists");
        // A build output is learned; a known source still counts during a build.
        let building = BuildClock { running: true, ended: None };
        assert!(!f.relevant(&dir.join("out/app.min.js"), building));
        assert!(!f.relevant(&dir.join("out/app.min.js"), building));
        assert!(f.relevant(&dir.join("src/app.js"), building));
        // An "output" that changes with no build running is a source.
        assert!(f.relevant(&dir.join("out/app.min.js"), idle));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_repositorys_info_exclude_is_honoured() {
        let repo = std::env::temp_dir().join(format!("hotswap-watch-repo-{}", std::process::id()));
        std::fs::create_dir_all(repo.join(".git/info")).unwrap();
        std::fs::create_dir_all(repo.join("app")).unwrap();
        std::fs::write(repo.join(".git/info/exclude"), "*.secret\n").unwrap();
        std::fs::write(repo.join("app/.gitignore"), "!keep.secret\n").unwrap();
        let mut f = Filter::new(vec![repo.join("app")], &[]).unwrap();
        assert!(f.ignored(&repo.join("app/db.secret")));
        assert!(!f.ignored(&repo.join("app/keep.secret")), "the tree's own files decide first");
        assert!(!f.ignored(&repo.join("app/main.rs")));
        let _ = std::fs::remove_dir_all(&repo);
    }

    #[test]
    fn describes_bursts() {
        assert_eq!(describe(&[PathBuf::from("a")]), "a");
        assert_eq!(describe(&[PathBuf::from("a"), PathBuf::from("b"), PathBuf::from("c")]), "a and 2 more");
    }
}
