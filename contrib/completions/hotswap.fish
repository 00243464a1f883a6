# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_hotswap_global_optspecs
    string join \n h/help V/version
end

function __fish_hotswap_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_hotswap_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_hotswap_using_subcommand
    set -l cmd (__fish_hotswap_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c hotswap -n "__fish_hotswap_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hotswap -n "__fish_hotswap_needs_command" -s V -l version -d 'Print version'
complete -c hotswap -n "__fish_hotswap_needs_command" -f -a "run" -d 'Run the primary in the foreground, supervising COMMAND as N workers'
complete -c hotswap -n "__fish_hotswap_needs_command" -f -a "reload" -d 'Start a rolling reload and wait until the new generation serves'
complete -c hotswap -n "__fish_hotswap_needs_command" -f -a "status" -d 'Show listeners, generation and workers of a running primary, with each worker\'s resident memory and CPU use (its whole process group, read from /proc when asked)'
complete -c hotswap -n "__fish_hotswap_needs_command" -f -a "stop" -d 'Stop a running primary gracefully; returns once it has exited'
complete -c hotswap -n "__fish_hotswap_needs_command" -f -a "upgrade" -d 'Re-execute the running primary from its binary on disk (after a deploy of a new hotswap), keeping its pid, sockets and workers'
complete -c hotswap -n "__fish_hotswap_needs_command" -f -a "upgrade-check" -d 'Internal: run by the primary on a new binary before a self-upgrade; reads the state on stdin and says whether it can take it over'
complete -c hotswap -n "__fish_hotswap_needs_command" -f -a "events" -d 'Stream the primary\'s lifecycle events (fork, online, listening, disconnect, exit, reload-started/finished/failed, max-memory, max-memory-replaced/failed) as they happen'
complete -c hotswap -n "__fish_hotswap_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c hotswap -n "__fish_hotswap_needs_command" -f -a "manpages" -d 'Write the man pages (hotswap.1, hotswap-run.1, ...) into DIR'
complete -c hotswap -n "__fish_hotswap_needs_command" -f -a "guardian" -d 'Internal: the helper that kills worker process trees if the primary dies (see the guardian module)'
complete -c hotswap -n "__fish_hotswap_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -s l -l listen -d 'Address to listen on: `127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:8080`, `unix:/run/app.sock`, optionally named: `web=127.0.0.1:8080` (the name becomes the fd\'s `LISTEN_FDNAMES` entry). Repeatable; port 0 picks a free port. Under socket activation (`LISTEN_FDS`), entries are matched to the inherited sockets by name or address; with none, all are used' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -s w -l workers -d 'Number of workers, or `max` for one per CPU [default: max]' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -s c -l config -d 'A `hotswap.toml` with any of these options (flags override it). It is read again on every reload' -r -F
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -l control -d 'Control socket of the primary [default: $HOTSWAP_CONTROL, else $XDG_RUNTIME_DIR/hotswap.sock, /run/hotswap.sock for root, /tmp/hotswap-UID/hotswap.sock otherwise]' -r -F
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -l ready-timeout -d 'How long a new worker may take to report ready (`500ms`, `10s`, `2m`) [default: 30s]' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -l shutdown-timeout -d 'How long a worker may take to drain after `shutdown` before SIGKILL [default: 30s]' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -l surge -d 'How many new-generation workers a reload may start beyond the N serving, as a count or a percentage of N (rounded up): `1` replaces one worker at a time, `100%` starts every replacement at once. Each extra worker costs memory until the old worker it replaces has exited; at most N+SURGE workers run during a reload [default: 1]' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -l ready -d 'How a worker says it is ready: `accepting` (a process of the worker is seen taking connections on every listening socket, in /proc: a thread blocked in accept, a connection it accepted, or the primary\'s probe connection taken; any server, no code), `ipc` (the worker\'s own `listening` message or `\'ready\'`), `notify` (`READY=1` on its `NOTIFY_SOCKET`), `ipc-or-notify`, `delay:DUR` (ready after DUR), `none` (ready at once), `auto` (its own IPC `listening`/`\'ready\'`, or Node\'s `listening` unless the app says `\'ready\'`; `READY=1` once it also takes connections; taking connections for a worker that says nothing; see docs/protocol.md) [default: auto]' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -l stop-signal -d 'Signal that stops a worker that did not become ready over IPC (and so may not read it) [default: SIGTERM]' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -l watch -d 'Watch this file or directory (recursively; repeatable) and reload when something in it changes. `.gitignore`/`.ignore` files are honoured; `.git/`, `target/`, `node_modules/` and editor swap files never count' -r -F
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -l watch-debounce -d 'Wait until changes stop for this long before reloading [default: 200ms]' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -l watch-ignore -d 'Changes to paths matching this glob never reload (repeatable), e.g. `*.log`, `dist`' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -l build -d 'A shell command run before the first workers start and before every reload (`hotswap reload`, SIGHUP or a watched change); if it fails, no worker is touched (a failed first build exits 1; a reload asked during the first build runs it again when it ends)' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -l node -d 'Run Node.js workers as cluster workers (`NODE_UNIQUE_ID`), so that unchanged cluster, Express and PM2 apps get their sockets from hotswap, are ready when they listen and are stopped as Node\'s own cluster stops them: `auto` (when the command runs node), `on`, `off` [default: auto]' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -l max-memory -d 'Replace a worker whose process group stays above this much resident memory (checked every 2 s; above on 2 checks in a row): a new worker starts in its slot and is ready before the old one is told to drain. `512M`, `1G`, or bytes [default: no limit]' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -l metrics -d 'Serve Prometheus metrics at `http://ADDR/metrics` (`127.0.0.1:9100`, `:9100` for every address). Bound once, at start' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -l python -d 'Give Python workers hotswap\'s preload (a `sitecustomize` module put first on `PYTHONPATH`) that makes uvicorn drain keep-alive connections without losing requests: `auto` (when the command runs python, uvicorn, gunicorn or hypercorn), `on`, `off` [default: auto]' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -l backlog -d 'Listen backlog of each TCP and Unix listener [default: 1024]' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -l socket-mode -d 'File mode of the Unix sockets hotswap binds for `--listen unix:PATH` (octal, as systemd\'s `SocketMode=`), whatever the umask; who may connect is then up to this and the directory\'s permissions. In the config file a string: `socket-mode = "0660"` [default: 0666]' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -l balance -d 'How new TCP connections reach the workers: `shared` (one socket every worker accepts on), `slots` (one `SO_REUSEPORT` socket per worker slot, the kernel\'s hash of the connection picks one), `sticky` (one socket per slot, and each client IP address always reaches the same slot, across reloads: for session and Socket.IO apps). Linux only for `slots` and `sticky`; Unix sockets stay shared. Fixed at start [default: shared]' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -s h -l help -d 'Print help'
complete -c hotswap -n "__fish_hotswap_using_subcommand run" -s V -l version -d 'Print version'
complete -c hotswap -n "__fish_hotswap_using_subcommand reload" -l control -d 'Control socket of the primary [default: $HOTSWAP_CONTROL, else $XDG_RUNTIME_DIR/hotswap.sock, /run/hotswap.sock for root, /tmp/hotswap-UID/hotswap.sock otherwise]' -r -F
complete -c hotswap -n "__fish_hotswap_using_subcommand reload" -l surge -d 'New workers this reload may start at once, instead of the primary\'s `--surge`: a count, or a percentage of the pool (`100%`: all at once)' -r
complete -c hotswap -n "__fish_hotswap_using_subcommand reload" -l no-build -d 'Skip the `--build` command for this reload'
complete -c hotswap -n "__fish_hotswap_using_subcommand reload" -s h -l help -d 'Print help'
complete -c hotswap -n "__fish_hotswap_using_subcommand reload" -s V -l version -d 'Print version'
complete -c hotswap -n "__fish_hotswap_using_subcommand status" -l control -d 'Control socket of the primary [default: $HOTSWAP_CONTROL, else $XDG_RUNTIME_DIR/hotswap.sock, /run/hotswap.sock for root, /tmp/hotswap-UID/hotswap.sock otherwise]' -r -F
complete -c hotswap -n "__fish_hotswap_using_subcommand status" -l json -d 'Print JSON (`status`: one object; `events`: one object per line)'
complete -c hotswap -n "__fish_hotswap_using_subcommand status" -s h -l help -d 'Print help'
complete -c hotswap -n "__fish_hotswap_using_subcommand status" -s V -l version -d 'Print version'
complete -c hotswap -n "__fish_hotswap_using_subcommand stop" -l control -d 'Control socket of the primary [default: $HOTSWAP_CONTROL, else $XDG_RUNTIME_DIR/hotswap.sock, /run/hotswap.sock for root, /tmp/hotswap-UID/hotswap.sock otherwise]' -r -F
complete -c hotswap -n "__fish_hotswap_using_subcommand stop" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hotswap -n "__fish_hotswap_using_subcommand stop" -s V -l version -d 'Print version'
complete -c hotswap -n "__fish_hotswap_using_subcommand upgrade" -l control -d 'Control socket of the primary [default: $HOTSWAP_CONTROL, else $XDG_RUNTIME_DIR/hotswap.sock, /run/hotswap.sock for root, /tmp/hotswap-UID/hotswap.sock otherwise]' -r -F
complete -c hotswap -n "__fish_hotswap_using_subcommand upgrade" -s h -l help -d 'Print help'
complete -c hotswap -n "__fish_hotswap_using_subcommand upgrade" -s V -l version -d 'Print version'
complete -c hotswap -n "__fish_hotswap_using_subcommand upgrade-check" -s h -l help -d 'Print help'
complete -c hotswap -n "__fish_hotswap_using_subcommand upgrade-check" -s V -l version -d 'Print version'
complete -c hotswap -n "__fish_hotswap_using_subcommand events" -l control -d 'Control socket of the primary [default: $HOTSWAP_CONTROL, else $XDG_RUNTIME_DIR/hotswap.sock, /run/hotswap.sock for root, /tmp/hotswap-UID/hotswap.sock otherwise]' -r -F
complete -c hotswap -n "__fish_hotswap_using_subcommand events" -l json -d 'Print JSON (`status`: one object; `events`: one object per line)'
complete -c hotswap -n "__fish_hotswap_using_subcommand events" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hotswap -n "__fish_hotswap_using_subcommand events" -s V -l version -d 'Print version'
complete -c hotswap -n "__fish_hotswap_using_subcommand completions" -s h -l help -d 'Print help'
complete -c hotswap -n "__fish_hotswap_using_subcommand completions" -s V -l version -d 'Print version'
complete -c hotswap -n "__fish_hotswap_using_subcommand manpages" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c hotswap -n "__fish_hotswap_using_subcommand manpages" -s V -l version -d 'Print version'
complete -c hotswap -n "__fish_hotswap_using_subcommand guardian" -s h -l help -d 'Print help'
complete -c hotswap -n "__fish_hotswap_using_subcommand guardian" -s V -l version -d 'Print version'
complete -c hotswap -n "__fish_hotswap_using_subcommand help; and not __fish_seen_subcommand_from run reload status stop upgrade upgrade-check events completions manpages guardian help" -f -a "run" -d 'Run the primary in the foreground, supervising COMMAND as N workers'
complete -c hotswap -n "__fish_hotswap_using_subcommand help; and not __fish_seen_subcommand_from run reload status stop upgrade upgrade-check events completions manpages guardian help" -f -a "reload" -d 'Start a rolling reload and wait until the new generation serves'
complete -c hotswap -n "__fish_hotswap_using_subcommand help; and not __fish_seen_subcommand_from run reload status stop upgrade upgrade-check events completions manpages guardian help" -f -a "status" -d 'Show listeners, generation and workers of a running primary, with each worker\'s resident memory and CPU use (its whole process group, read from /proc when asked)'
complete -c hotswap -n "__fish_hotswap_using_subcommand help; and not __fish_seen_subcommand_from run reload status stop upgrade upgrade-check events completions manpages guardian help" -f -a "stop" -d 'Stop a running primary gracefully; returns once it has exited'
complete -c hotswap -n "__fish_hotswap_using_subcommand help; and not __fish_seen_subcommand_from run reload status stop upgrade upgrade-check events completions manpages guardian help" -f -a "upgrade" -d 'Re-execute the running primary from its binary on disk (after a deploy of a new hotswap), keeping its pid, sockets and workers'
complete -c hotswap -n "__fish_hotswap_using_subcommand help; and not __fish_seen_subcommand_from run reload status stop upgrade upgrade-check events completions manpages guardian help" -f -a "upgrade-check" -d 'Internal: run by the primary on a new binary before a self-upgrade; reads the state on stdin and says whether it can take it over'
complete -c hotswap -n "__fish_hotswap_using_subcommand help; and not __fish_seen_subcommand_from run reload status stop upgrade upgrade-check events completions manpages guardian help" -f -a "events" -d 'Stream the primary\'s lifecycle events (fork, online, listening, disconnect, exit, reload-started/finished/failed, max-memory, max-memory-replaced/failed) as they happen'
complete -c hotswap -n "__fish_hotswap_using_subcommand help; and not __fish_seen_subcommand_from run reload status stop upgrade upgrade-check events completions manpages guardian help" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c hotswap -n "__fish_hotswap_using_subcommand help; and not __fish_seen_subcommand_from run reload status stop upgrade upgrade-check events completions manpages guardian help" -f -a "manpages" -d 'Write the man pages (hotswap.1, hotswap-run.1, ...) into DIR'
complete -c hotswap -n "__fish_hotswap_using_subcommand help; and not __fish_seen_subcommand_from run reload status stop upgrade upgrade-check events completions manpages guardian help" -f -a "guardian" -d 'Internal: the helper that kills worker process trees if the primary dies (see the guardian module)'
complete -c hotswap -n "__fish_hotswap_using_subcommand help; and not __fish_seen_subcommand_from run reload status stop upgrade upgrade-check events completions manpages guardian help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
