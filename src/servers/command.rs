//! Finding the server program in a worker command, through the wrappers
//! that commonly stand in front of it: a path (`/usr/sbin/nginx`), `sh -c
//! 'exec ...'` (a config file's command string), `exec`, `env VAR=x ...`,
//! `nice`, `nohup`, `setsid`, `bundle exec`, an interpreter running the
//! server's script or module (`ruby bin/puma`, `python3 -m gunicorn`) and
//! `java -jar start.jar`. Pure: nothing on disk is read.

use std::path::Path;

/// The program a command runs, with its arguments, once the wrappers are
/// peeled off; `None` for an empty command or one hidden in a shell
/// script more complex than one command.
pub fn server_argv(command: &[String]) -> Option<Vec<String>> {
    let mut argv: Vec<String> = match command {
        [sh, c, script, ..] if base(sh).ends_with("sh") && c == "-c" => shell_words(script)?,
        _ => command.to_vec(),
    };
    // Each pass takes one wrapper off; a command has only a few.
    for _ in 0..8 {
        let first = argv.first()?;
        let skip = match base(first) {
            "exec" | "nohup" | "setsid" => 1,
            "env" => {
                let mut i = 1;
                while let Some(a) = argv.get(i) {
                    match a.as_str() {
                        "-u" | "-C" | "--unset" | "--chdir" => i += 2,
                        a if a.starts_with('-') || a.contains('=') => i += 1,
                        _ => break,
                    }
                }
                i
            }
            "nice" => match argv.get(1).map(String::as_str) {
                Some("-n") => 3,
                Some(a) if a.starts_with('-') => 2,
                _ => 1,
            },
            "bundle" | "bundler" if argv.get(1).is_some_and(|a| a == "exec") => 2,
            b if is_interpreter(b) => {
                // `python3 -m gunicorn ...`, `ruby -S puma`, `ruby bin/puma`.
                let mut i = 1;
                while let Some(a) = argv.get(i) {
                    match a.as_str() {
                        "-m" => {
                            i += 1;
                            break;
                        }
                        "-S" => i += 1,
                        a if a.starts_with('-') => i += 1,
                        _ => break,
                    }
                }
                i
            }
            _ => 0,
        };
        if skip == 0 || skip >= argv.len() {
            break;
        }
        argv.drain(..skip);
    }
    Some(argv)
}

/// The file name of a program path: `/usr/sbin/nginx` -> `nginx`.
pub fn base(program: &str) -> &str {
    Path::new(program).file_name().and_then(|n| n.to_str()).unwrap_or(program)
}

/// Interpreters that run a server's script or module.
fn is_interpreter(name: &str) -> bool {
    let version = |rest: &str| rest.chars().all(|c| c.is_ascii_digit() || c == '.');
    ["python", "ruby", "pypy", "jruby"].iter().any(|i| name.strip_prefix(i).is_some_and(version))
}

/// The words of a one-command shell script (`exec nginx -g "daemon off;"`),
/// with single and double quotes and backslashes as the shell takes them;
/// `None` for a script that is more than one plain command (`;`, `&&`,
/// `|`, a substitution), which is not looked into.
fn shell_words(script: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = script.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        '$' | '`' => return None,
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            ';' | '&' | '|' | '$' | '`' | '(' | ')' | '<' | '>' | '\n' => return None,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Option<Vec<String>> {
        server_argv(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn first(v: &[&str]) -> Option<String> {
        argv(v).and_then(|a| a.first().cloned())
    }

    #[test]
    fn wrappers_are_seen_through() {
        assert_eq!(first(&["/usr/sbin/nginx", "-c", "x"]).as_deref(), Some("/usr/sbin/nginx"));
        assert_eq!(first(&["env", "A=1", "-u", "B", "nginx"]).as_deref(), Some("nginx"));
        assert_eq!(first(&["/usr/bin/env", "RACK_ENV=production", "unicorn"]).as_deref(), Some("unicorn"));
        assert_eq!(first(&["exec", "nginx"]).as_deref(), Some("nginx"));
        assert_eq!(first(&["nice", "-n", "5", "nohup", "setsid", "lighttpd"]).as_deref(), Some("lighttpd"));
        assert_eq!(first(&["bundle", "exec", "puma", "-b", "x"]).as_deref(), Some("puma"));
        assert_eq!(first(&["python3", "-m", "gunicorn", "app:app"]).as_deref(), Some("gunicorn"));
        assert_eq!(first(&["/usr/bin/python3.11", "-u", "-m", "uvicorn"]).as_deref(), Some("uvicorn"));
        assert_eq!(first(&["ruby", "-S", "unicorn"]).as_deref(), Some("unicorn"));
        assert_eq!(first(&["ruby", "bin/puma"]).as_deref(), Some("bin/puma"));
        assert_eq!(first(&["python3", "app.py"]).as_deref(), Some("app.py"));
    }

    #[test]
    fn a_shell_command_string_is_read_as_the_shell_reads_it() {
        assert_eq!(
            argv(&["/bin/sh", "-c", "exec nginx -g 'daemon off;' -c \"/etc/my nginx.conf\""]),
            Some(vec!["nginx".into(), "-g".into(), "daemon off;".into(), "-c".into(), "/etc/my nginx.conf".into()])
        );
        assert_eq!(first(&["sh", "-c", "exec env X=1 unicorn -c u.rb"]).as_deref(), Some("unicorn"));
        assert_eq!(first(&["bash", "-c", "php-fpm8.2 -F"]).as_deref(), Some("php-fpm8.2"));
        // More than one command: not looked into.
        assert_eq!(argv(&["sh", "-c", "cd /app && exec nginx"]), None);
        assert_eq!(argv(&["sh", "-c", "exec $SERVER"]), None);
    }

    #[test]
    fn nothing_is_nothing() {
        assert_eq!(argv(&[]), None);
        assert_eq!(first(&["env"]).as_deref(), Some("env"));
        assert_eq!(first(&["python3"]).as_deref(), Some("python3"));
    }
}
