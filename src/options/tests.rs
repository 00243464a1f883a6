//! Options from flags and files, merged and resolved.

use super::*;

fn flags(argv: &[&str]) -> Options {
    use clap::Parser;
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        run: Options,
    }
    Wrap::parse_from(std::iter::once("hotswap").chain(argv.iter().copied())).run
}

#[test]
fn the_shipped_example_config_parses() {
    let cfg = Options::from_toml(include_str!("../../contrib/systemd/example.toml")).unwrap();
    assert_eq!(cfg.workers, Some(4));
    assert_eq!(cfg.ready, Some(ReadyMode::Ipc));
}

#[test]
fn flags_override_the_file_option_by_option() {
    let file = Options::from_toml(
        "workers = 4\nready-timeout = \"5s\"\ncommand = \"node app.js\"\nlisten = [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    let merged = flags(&["-w", "2", "--stop-signal", "INT", "-c", "x.toml"]).merge(file).unwrap();
    assert_eq!(merged.workers, Some(2), "the flag wins");
    assert_eq!(merged.ready_timeout, Some(Duration::from_secs(5)), "the file fills in");
    assert_eq!(merged.stop_signal, Some(Signal::SIGINT));
    assert_eq!(merged.command, vec!["node", "app.js"], "plain words run directly");
    assert_eq!(merged.listen.len(), 1);
    assert_eq!(merged.config, Some(PathBuf::from("x.toml")));
    let s = Settings::resolve(merged).unwrap();
    assert_eq!(s.shutdown_timeout, Duration::from_secs(30), "the default");
    let with_cmd = flags(&["--", "a", "b"]).merge(Options::from_toml("command = [\"c\"]").unwrap()).unwrap();
    assert_eq!(with_cmd.command, vec!["a", "b"]);
}

#[test]
fn settings_round_trip_through_json() {
    let toml = "listen = [\"web=127.0.0.1:0\", \"unix:/tmp/x.sock\"]\ncommand = [\"a\", \"b\"]\nready = \"delay:1500ms\"\nstop-signal = \"INT\"\n";
    let s = Settings::resolve(Options::from_toml(toml).unwrap()).unwrap();
    let back: Settings = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back.listen, s.listen);
    assert_eq!(back.ready, ReadyMode::Delay(Duration::from_millis(1500)));
    assert_eq!(back.stop_signal, Signal::SIGINT);
    assert_eq!(back.command, vec!["a", "b"]);
}

#[test]
fn unknown_keys_and_bad_values_name_the_key_and_line() {
    let err = Options::from_toml("workers = 2\nwrokers = 3\n").unwrap_err();
    assert!(err.contains("wrokers") && err.contains("line 2"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    let err = Options::from_toml("workers = \"two\"\n").unwrap_err();
    assert!(err.contains("workers") && err.contains("line 1"), "{err}");
    let err = Options::from_toml("workers = 1\nready-timeout = \"soon\"\n").unwrap_err();
    assert!(err.contains("ready-timeout") && err.contains("line 2") && err.contains("soon"), "{err}");
    let err = Options::from_toml("listen = [\"nowhere\"]\n").unwrap_err();
    assert!(err.contains("listen") && err.contains("nowhere"), "{err}");
    let err = Options::from_toml("workers = 0\n").unwrap_err();
    assert!(err.contains("at least 1"), "{err}");
    let err = Options::from_toml("command = \" \"\n").unwrap_err();
    assert!(err.contains("command") && err.contains("empty"), "{err}");
    let ok = Options::from_toml("command = \"node app.js\"\nready = \"delay:1s\"\nstop-signal = \"INT\"\n").unwrap();
    assert_eq!(ok.ready, Some(ReadyMode::Delay(Duration::from_secs(1))));
    assert_eq!(ok.stop_signal, Some(Signal::SIGINT));
}

#[test]
fn surge_as_a_flag_or_a_key_count_or_percentage() {
    assert_eq!(Options::from_toml("surge = 3\n").unwrap().surge, Some(Surge::Count(3)));
    assert_eq!(Options::from_toml("surge = \"50%\"\n").unwrap().surge, Some(Surge::Percent(50)));
    let err = Options::from_toml("workers = 2\nsurge = 0\n").unwrap_err();
    assert!(err.contains("surge") && err.contains("line 2") && err.contains("at least 1"), "{err}");
    let merged = flags(&["--surge", "100%"]).merge(Options::from_toml("surge = 2\n").unwrap()).unwrap();
    assert_eq!(merged.surge, Some(Surge::Percent(100)), "the flag wins");
    let s = Settings::resolve(flags(&["--", "app"])).unwrap();
    assert_eq!(s.surge, Surge::Count(1), "one at a time by default");
    let old_state = serde_json::to_value(&s).unwrap().as_object().unwrap().clone();
    let mut without = old_state.clone();
    without.remove("surge");
    let back: Settings = serde_json::from_value(serde_json::Value::Object(without)).unwrap();
    assert_eq!(back.surge, Surge::Count(1), "a state handed over by an older hotswap has no surge");
}

#[test]
fn balance_as_a_flag_or_a_key() {
    assert_eq!(Options::from_toml("balance = \"sticky\"\n").unwrap().balance, Some(Balance::Sticky));
    let err = Options::from_toml("workers = 2\nbalance = \"round-robin\"\n").unwrap_err();
    assert!(err.contains("balance") && err.contains("line 2") && err.contains("shared, slots or sticky"), "{err}");
    let merged = flags(&["--balance", "slots"]).merge(Options::from_toml("balance = \"sticky\"\n").unwrap()).unwrap();
    assert_eq!(merged.balance, Some(Balance::Slots), "the flag wins");
    let s = Settings::resolve(flags(&["--", "app"])).unwrap();
    assert_eq!(s.balance, Balance::Shared, "shared by default");
    let mut old_state = serde_json::to_value(&s).unwrap().as_object().unwrap().clone();
    old_state.remove("balance");
    let back: Settings = serde_json::from_value(serde_json::Value::Object(old_state)).unwrap();
    assert_eq!(back.balance, Balance::Shared, "a state handed over by an older hotswap has no balance");
    let err = Settings::resolve(flags(&["-w", "2000", "--balance", "sticky", "--", "app"])).unwrap_err();
    assert!(err.to_string().contains("at most 1024 workers"), "{err}");
    assert!(Settings::resolve(flags(&["-w", "2000", "--", "app"])).is_ok(), "shared has no such limit");
    let mut new = s.clone();
    new.balance = Balance::Sticky;
    assert_eq!(s.needs_restart(&new), vec!["balance"]);
}

#[test]
fn a_bare_number_in_the_file_is_seconds() {
    let ok = Options::from_toml("ready-timeout = 7\nshutdown-timeout = \"2\"\nwatch-debounce = 0.25\n").unwrap();
    assert_eq!(ok.ready_timeout, Some(Duration::from_secs(7)));
    assert_eq!(ok.shutdown_timeout, Some(Duration::from_secs(2)));
    assert_eq!(ok.watch_debounce, Some(Duration::from_millis(250)));
}

#[test]
fn values_that_cannot_work_are_refused_naming_the_option() {
    let resolve = |toml: &str| {
        Settings::resolve(Options::from_toml(&format!("command = [\"a\"]\n{toml}")).unwrap()).map_err(|e| e.to_string())
    };
    let err = resolve("ready-timeout = 0").unwrap_err();
    assert!(err.contains("--ready-timeout") && err.contains("more than 0"), "{err}");
    let err = resolve("watch-ignore = [\"src/[\"]").unwrap_err();
    assert!(err.contains("--watch-ignore") && err.contains("src/["), "{err}");
    assert_eq!(resolve("").unwrap().socket_mode, 0o666);
    assert_eq!(resolve("socket-mode = \"0660\"").unwrap().socket_mode, 0o660);
    let err = Options::from_toml("socket-mode = 660").unwrap_err();
    assert!(err.contains("socket-mode") && err.contains("\"0660\""), "{err}");
    let err = Options::from_toml("socket-mode = \"0999\"").unwrap_err();
    assert!(err.contains("socket-mode") && err.contains("octal"), "{err}");
}

#[test]
fn min_ready_health_check_and_warmup_nice_as_flags_or_keys() {
    let file = Options::from_toml(
        "min-ready = \"2s\"\nhealth-check = \"/healthz\"\nhealth-timeout = 3\nwarmup-nice = \"off\"\n",
    )
    .unwrap();
    assert_eq!(file.min_ready, Some(Duration::from_secs(2)));
    assert_eq!(file.health_check.as_ref().map(|h| h.as_str()), Some("/healthz"));
    assert_eq!(file.warmup_nice, Some(WarmupNice::Off));
    let merged = flags(&["--min-ready", "0", "--warmup-nice", "15", "--", "app"]).merge(file).unwrap();
    let s = Settings::resolve(merged).unwrap();
    assert_eq!(s.min_ready, Duration::ZERO, "the flag wins");
    assert_eq!(s.warmup_nice, WarmupNice::Nice(15));
    assert_eq!(s.health_timeout, Duration::from_secs(3));
    let d = Settings::resolve(flags(&["--", "app"])).unwrap();
    assert_eq!(
        (d.min_ready, d.health_check.clone(), d.health_timeout),
        (Duration::from_secs(1), None, Duration::from_secs(10))
    );
    assert_eq!(d.warmup_nice, WarmupNice::Off);
    let err = Options::from_toml("workers = 1\nhealth-check = \"healthz\"\n").unwrap_err();
    assert!(err.contains("health-check") && err.contains("line 2") && err.contains("starting with /"), "{err}");
    let err = Options::from_toml("warmup-nice = 20\n").unwrap_err();
    assert!(err.contains("warmup-nice") && err.contains("1 to 19"), "{err}");
    let err = Settings::resolve(flags(&["--health-timeout", "0", "--", "app"])).unwrap_err();
    assert!(err.to_string().contains("--health-timeout"), "{err}");
    // A state handed over by an older hotswap: this one's defaults, as a
    // fresh start with the same command line would have.
    let mut old = serde_json::to_value(&d).unwrap().as_object().unwrap().clone();
    for k in ["min_ready", "health_check", "health_timeout", "warmup_nice"] {
        old.remove(k);
    }
    let back: Settings = serde_json::from_value(serde_json::Value::Object(old)).unwrap();
    assert_eq!((back.min_ready, back.warmup_nice), (Duration::from_secs(1), WarmupNice::Off));
    assert_eq!(back.health_check, None);
}

#[test]
fn a_metrics_port_alone_is_loopback() {
    let addr = |s: &str| s.parse::<MetricsAddr>().map(|a| a.0.to_string());
    assert_eq!(addr(":9100").unwrap(), "127.0.0.1:9100");
    assert_eq!(addr("0.0.0.0:9100").unwrap(), "0.0.0.0:9100");
    assert_eq!(addr("[::1]:9100").unwrap(), "[::1]:9100");
    assert!(addr("nowhere").unwrap_err().contains("loopback"));
}

#[test]
fn out_and_error_files_are_keys_made_absolute_and_changed_only_by_a_restart() {
    let o = Options::from_toml("out-file = \"logs/out.log\"\nerror-file = \"/var/log/e.log\"\ncommand = [\"a\"]\n")
        .unwrap();
    let s = Settings::resolve(o).unwrap();
    let here = std::env::current_dir().unwrap();
    assert_eq!(s.out_file, Some(here.join("logs/out.log")));
    assert_eq!(s.error_file, Some(std::path::PathBuf::from("/var/log/e.log")));
    let mut new = s.clone();
    new.out_file = None;
    new.error_file = Some("/var/log/other.log".into());
    assert_eq!(s.needs_restart(&new), vec!["out-file", "error-file"]);
    let err = Options::from_toml("out-file = 3\n").unwrap_err();
    assert!(err.contains("line 1") && err.contains("out-file"), "{err}");
}
