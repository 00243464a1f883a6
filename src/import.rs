//! `hotswap import ecosystem.config.js`: a PM2 ecosystem file as a
//! `hotswap.toml`. The file is JavaScript, so node evaluates it (`node -e
//! 'console.log(JSON.stringify(require(path)))'`); each key hotswap has is
//! carried over, and every other one is named in what `import` prints, with
//! why. A file of several apps gives one config per app (one primary each).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The TOML of one app, and the notes on what was not carried over.
pub fn convert(app: &Value) -> (toml::Table, Vec<String>) {
    let mut t = toml::Table::new();
    let mut notes = Vec::new();
    let Some(obj) = app.as_object() else { return (t, vec!["the app is not an object".into()]) };
    let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    let ms = |v: &Value| v.as_u64().map(|n| format!("{n}ms"));
    let mut command: Vec<String> = Vec::new();
    for (k, v) in obj {
        match k.as_str() {
            "name" => {
                if let Ok(n) = text(v).parse::<crate::options::AppName>() {
                    t.insert("name".into(), n.to_string().into());
                } else {
                    notes.push(format!("name {v}: not a valid hotswap name"));
                }
            }
            "script" | "args" | "interpreter" | "interpreter_args" | "node_args" => {}
            "instances" => match v {
                Value::Number(n) if n.as_i64().is_some_and(|n| n > 0) => {
                    t.insert("workers".into(), toml::Value::Integer(n.as_i64().unwrap_or(1)));
                }
                _ => {
                    t.insert("workers".into(), "max".into());
                }
            },
            "exec_mode" if text(v).contains("cluster") => {}
            "exec_mode" => notes.push(format!(
                "exec_mode {}: hotswap runs every app as N workers on shared sockets (cluster mode)",
                text(v)
            )),
            "env" => {
                if let Some(env) = v.as_object() {
                    let mut e = toml::Table::new();
                    for (name, val) in env {
                        e.insert(name.clone(), text(val).into());
                    }
                    if let Some(port) = env.get("PORT") {
                        t.insert("listen".into(), toml::Value::Array(vec![format!("0.0.0.0:{}", text(port)).into()]));
                    }
                    t.insert("env".into(), toml::Value::Table(e));
                }
            }
            "cwd" => {
                t.insert("cwd".into(), text(v).into());
            }
            "max_memory_restart" => {
                t.insert("max-memory".into(), text(v).into());
            }
            "watch" => match v {
                Value::Bool(true) => {
                    t.insert("watch".into(), toml::Value::Array(vec![".".into()]));
                }
                Value::Array(paths) => {
                    t.insert("watch".into(), toml::Value::Array(paths.iter().map(|p| text(p).into()).collect()));
                }
                Value::String(p) => {
                    t.insert("watch".into(), toml::Value::Array(vec![p.clone().into()]));
                }
                _ => {}
            },
            "ignore_watch" => {
                let globs: Vec<toml::Value> = match v {
                    Value::Array(a) => a.iter().map(|p| text(p).into()).collect(),
                    other => vec![text(other).into()],
                };
                t.insert("watch-ignore".into(), toml::Value::Array(globs));
            }
            "kill_timeout" => {
                if let Some(d) = ms(v) {
                    t.insert("shutdown-timeout".into(), d.into());
                }
            }
            "listen_timeout" => {
                if let Some(d) = ms(v) {
                    t.insert("ready-timeout".into(), d.into());
                }
            }
            "wait_ready" if v.as_bool() == Some(true) => {
                t.insert("ready".into(), "ipc".into());
            }
            "wait_ready" => {}
            "autorestart" | "max_restarts" | "min_uptime" | "restart_delay" | "exp_backoff_restart_delay" => notes.push(
                format!("{k}: hotswap always restarts a crashed worker, with its own backoff (docs/guarantees.md)"),
            ),
            "out_file" => {
                t.insert("out-file".into(), text(v).into());
            }
            "error_file" => {
                t.insert("error-file".into(), text(v).into());
            }
            "log_file" | "merge_logs" | "combine_logs" | "log_date_format" => notes.push(
                format!("{k}: hotswap start writes APP.log in the runtime directory (hotswap logs APP); --timestamps adds times"),
            ),
            other if other.starts_with("env_") => {
                notes.push(format!("{other}: per-environment blocks are not carried over; put them in `env` of a file per environment"))
            }
            other => notes.push(format!("{other}: no hotswap equivalent")),
        }
    }
    if let Some(script) = obj.get("script").map(text) {
        let interpreter = obj.get("interpreter").map(text).filter(|i| i != "none");
        let node =
            interpreter.is_none() && (script.ends_with(".js") || script.ends_with(".mjs") || script.ends_with(".cjs"));
        if let Some(i) = interpreter {
            command.push(i);
        } else if node {
            command.push("node".into());
        }
        for key in ["interpreter_args", "node_args"] {
            match obj.get(key) {
                Some(Value::Array(a)) => command.extend(a.iter().map(text)),
                Some(Value::String(s)) => command.extend(s.split_whitespace().map(str::to_string)),
                _ => {}
            }
        }
        command.push(script);
        match obj.get("args") {
            Some(Value::Array(a)) => command.extend(a.iter().map(text)),
            Some(Value::String(s)) => command.extend(s.split_whitespace().map(str::to_string)),
            _ => {}
        }
        t.insert("command".into(), toml::Value::Array(command.into_iter().map(Into::into).collect()));
    } else {
        notes.push("no script: give `command`".into());
    }
    if !t.contains_key("listen") {
        notes.push("no env.PORT: add `listen = [\"127.0.0.1:PORT\"]` (hotswap binds the sockets)".into());
    }
    (t, notes)
}

/// `hotswap import FILE [--output PATH]`.
pub fn run(file: &Path, output: &Path, force: bool) -> Result<ExitCode> {
    let abs = std::fs::canonicalize(file).with_context(|| format!("reading {}", file.display()))?;
    let out = std::process::Command::new("node")
        .arg("-e")
        .arg("const c = require(process.argv[1]); console.log(JSON.stringify(c))")
        .arg(&abs)
        .output()
        .context("running node to read the ecosystem file (is node installed?)")?;
    if !out.status.success() {
        bail!("node could not load {}: {}", file.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let value: Value = serde_json::from_slice(&out.stdout).context("reading what node printed")?;
    let apps = match value.get("apps") {
        Some(Value::Array(a)) => a.clone(),
        _ => vec![value.clone()],
    };
    if apps.is_empty() {
        bail!("{} has no apps", file.display());
    }
    let converted: Vec<(toml::Table, Vec<String>)> = apps.iter().map(convert).collect();
    let paths = outputs(output, &converted);
    // Nothing is written if anything would be replaced without --force.
    if let Some(taken) = paths.iter().find(|p| p.exists()).filter(|_| !force) {
        bail!("{} exists; give --force to replace it, or --output PATH", taken.display());
    }
    for ((table, notes), path) in converted.iter().zip(&paths) {
        let text = toml::to_string(table).context("writing TOML")?;
        std::fs::write(path, format!("# Imported from {} by hotswap import.\n{text}", file.display()))
            .with_context(|| format!("writing {}", path.display()))?;
        match table.get("name").and_then(|n| n.as_str()) {
            Some(name) if paths.len() > 1 => println!("wrote {} (app {name})", path.display()),
            _ => println!("wrote {}", path.display()),
        }
        for n in notes {
            println!("  not carried over: {n}");
        }
    }
    if paths.len() > 1 {
        println!("one hotswap primary per app: start each with `hotswap start -c FILE`");
    }
    Ok(ExitCode::SUCCESS)
}

/// Where each app goes: `output` for a file of one app; for several, one
/// file each beside it, named for the app (`hotswap.toml` ->
/// `hotswap-api.toml`, `hotswap-worker.toml`; `app2` for an app without a
/// usable name, or whose name an earlier app took).
fn outputs(output: &Path, apps: &[(toml::Table, Vec<String>)]) -> Vec<std::path::PathBuf> {
    if apps.len() == 1 {
        return vec![output.to_path_buf()];
    }
    let stem = output.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "hotswap".into());
    let ext = output.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_else(|| "toml".into());
    let mut taken: Vec<String> = Vec::new();
    apps.iter()
        .enumerate()
        .map(|(i, (table, _))| {
            let name = table
                .get("name")
                .and_then(|n| n.as_str())
                .filter(|n| !taken.iter().any(|t| t == n))
                .map_or_else(|| format!("app{}", i + 1), str::to_string);
            taken.push(name.clone());
            output.with_file_name(format!("{stem}-{name}.{ext}"))
        })
        .collect()
}
