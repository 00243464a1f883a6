//! The worker command as a user means it: `NODE_ENV=production node
//! server.js` and `env NODE_ENV=production node server.js` run `node
//! server.js` with `NODE_ENV` set, as a shell would, and hotswap sees that
//! the program is `node` (for `--node auto`, PM2's way of running apps).
//!
//! A command string in the config file runs through `/bin/sh -c` unless it
//! is plain words (no quotes, `$`, globs, redirections, pipes...): then it
//! is split on spaces and run directly, its leading `NAME=value` words going
//! into the workers' environment. A string the shell must read keeps its
//! leading assignments before the shell's `exec` (`A=1 exec prog`: `exec
//! A=1 prog` is "A=1: not found", exit 127). A command given as arguments
//! (`-- env A=1 node app.js`, or an array in the file) loses a leading `env`
//! with only assignments after it, and its leading assignments, the same
//! way.

/// Characters that make a command string the shell's to read.
const SHELL_SYNTAX: &[char] =
    &['$', '`', '"', '\'', '\\', '|', '&', ';', '<', '>', '(', ')', '*', '?', '[', ']', '{', '}', '~', '#', '\n'];

/// `NAME=value`, as the shell reads an assignment.
fn assignment(word: &str) -> Option<(String, String)> {
    let (name, value) = word.split_once('=')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    ((first.is_ascii_alphabetic() || first == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| (name.to_string(), value.to_string()))
}

/// The config file's command string as the worker command.
pub fn from_string(line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    if !line.contains(SHELL_SYNTAX) {
        // `exec` is the shell's: what it runs is the program.
        let assigned = words.iter().take_while(|w| assignment(w).is_some()).count();
        return words
            .iter()
            .enumerate()
            .filter(|(i, w)| !(*i == assigned && **w == "exec" && words.len() > assigned + 1))
            .map(|(_, w)| w.to_string())
            .collect();
    }
    let assigned = words.iter().take_while(|w| assignment(w).is_some()).count();
    let rest = line.trim_start();
    let mut prefix = String::new();
    let mut after = rest;
    for w in &words[..assigned] {
        prefix.push_str(w);
        prefix.push(' ');
        after = after.trim_start().strip_prefix(w).unwrap_or(after);
    }
    vec!["/bin/sh".into(), "-c".into(), format!("{prefix}exec {}", after.trim_start())]
}

/// Splits the leading assignments (and a plain `env`) off a command: the
/// program and its arguments, and the variables to set. A command that
/// would be left empty, or an `env` with options, is left as it is.
pub fn split_env(command: Vec<String>) -> (Vec<String>, Vec<(String, String)>) {
    let mut vars = Vec::new();
    let mut i = 0;
    let take = |i: &mut usize, vars: &mut Vec<(String, String)>| {
        while let Some(a) = command.get(*i).and_then(|w| assignment(w)) {
            vars.push(a);
            *i += 1;
        }
    };
    take(&mut i, &mut vars);
    let is_env = command.get(i).is_some_and(|w| w == "env" || w == "/usr/bin/env" || w == "/bin/env");
    if is_env {
        let mut j = i + 1;
        let mut more = Vec::new();
        take(&mut j, &mut more);
        if command.get(j).is_some_and(|w| !w.starts_with('-')) {
            vars.extend(more);
            i = j;
        }
    }
    if i >= command.len() {
        return (command, Vec::new());
    }
    (command[i..].to_vec(), vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn assignments_become_the_environment() {
        let (cmd, env) = split_env(from_string("NODE_ENV=production node server.js"));
        assert_eq!(cmd, v(&["node", "server.js"]));
        assert_eq!(env, vec![("NODE_ENV".into(), "production".into())]);
        let (cmd, env) = split_env(from_string("env NODE_ENV=production PORT=3000 node server.js"));
        assert_eq!(cmd, v(&["node", "server.js"]));
        assert_eq!(env.len(), 2);
        let (cmd, env) = split_env(v(&["/usr/bin/env", "A=1", "node", "app.js"]));
        assert_eq!((cmd, env.len()), (v(&["node", "app.js"]), 1));
        // env with options, and shell syntax, stay as they are.
        assert_eq!(split_env(v(&["env", "-i", "A=1", "node"])).0, v(&["env", "-i", "A=1", "node"]));
        assert_eq!(split_env(v(&["A=1"])).0, v(&["A=1"]));
        assert_eq!(
            from_string("NODE_ENV=production node server.js > /tmp/x"),
            v(&["/bin/sh", "-c", "NODE_ENV=production exec node server.js > /tmp/x"])
        );
        assert_eq!(from_string("exec ./api --x"), v(&["./api", "--x"]));
        assert_eq!(from_string("node $APP"), v(&["/bin/sh", "-c", "exec node $APP"]));
    }
}
