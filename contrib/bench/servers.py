#!/usr/bin/env python3
"""The server table of docs/servers.md, measured: each stock server that is
installed here runs under the release build of hotswap, unchanged, with the
command line the table gives, and goes through 3 reloads under load (2
keep-alive clients and 2 clients opening a new connection per request,
Python http.client, no pause, no retry; the Ruby and PHP apps take 20 ms
per request, so a stop signal that does not drain shows). Prints, per server: how readiness
was seen (status' `ready_via` and the first worker's time to ready), the
stop signal hotswap chose, the requests made and failed, and the reloads'
time.

    cargo build --release && python3 contrib/bench/servers.py
    SERVERS_ONLY=nginx,unicorn python3 contrib/bench/servers.py
    BENCH_HOTSWAP_BIN=target/debug/hotswap ...   # another build
    BENCH_APACHE_EXTRA="AcceptFilter http none" SERVERS_ONLY=apache ...
    BENCH_JETTY_MODULES=http,deploy,stats SERVERS_ONLY=jetty ...   # the Jetty
                                  # base's modules (default http,deploy)
    SERVERS_FORCE_SIGTERM=1 ...   # the recognised pre-fork servers again
                                  # with --stop-signal SIGTERM (the old default)
    SERVERS_QUIESCE=off ...       # every server with --quiesce off (servers
                                  # without a graceful stop, as before it)
    SERVERS_PHP_MS=20 ...         # php -S's app takes 20 ms (default 0)

Servers not installed are skipped with a line saying so. Only 127.0.0.1.
Not a CI test: tests/it/known_servers.rs runs nginx, unicorn and puma in CI.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.path.abspath(os.environ.get("BENCH_HOTSWAP_BIN", os.path.join(ROOT, "target/release/hotswap")))
FIX = os.path.join(ROOT, "tests/fixtures")
PYAPP = os.path.join(ROOT, "tests/apps/python")
NODEAPP = os.path.join(ROOT, "tests/apps/node")
TMP = tempfile.mkdtemp(prefix="hotswap-servers-bench-")
RELOADS = 3


def log(msg):
    print("[servers.py %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def which(*names):
    for n in names:
        p = shutil.which(n) or (os.path.exists("/usr/sbin/" + n) and "/usr/sbin/" + n)
        if p:
            return p
    return None


def py_has(module):
    return subprocess.run([sys.executable, "-c", "import " + module], capture_output=True).returncode == 0


def node_has(module):
    return os.path.isdir(os.path.join(NODEAPP, "node_modules", module))


# Each setup returns (command, hotswap args, port the load goes to, cleanup)
# or a string saying why it cannot run here.

def nginx_conf(d, port, body, extra=""):
    return f"""worker_processes 1;
pid {d}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        {body}
    }}
    {extra}
}}
"""


def setup_nginx(d, port):
    nginx = which("nginx")
    if not nginx:
        return "nginx not installed"
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(nginx_conf(d, port, 'location / { return 200 "generation=1\\n"; }'))
    return [nginx, "-e", "stderr", "-c", f"{d}/nginx.conf"], ["-w", "1"], port, None


RACK_APP = """body = "generation=#{ENV['HOTSWAP_GENERATION']}\\n"
run lambda { |env| sleep 0.02; [200, {'content-type' => 'text/plain', 'content-length' => body.bytesize.to_s}, [body]] }
"""


def setup_unicorn(d, port):
    if not which("unicorn"):
        return "unicorn not installed (apt-get install unicorn)"
    with open(f"{d}/config.ru", "w") as f:
        f.write(RACK_APP)
    return ["unicorn", "-E", "none", f"{d}/config.ru"], ["-w", "1"], port, None


def setup_puma(d, port):
    if not which("puma"):
        return "puma not installed (apt-get install puma)"
    with open(f"{d}/config.ru", "w") as f:
        f.write(RACK_APP)
    return ["puma", "--bind-to-activated-sockets", "only", "-e", "production", f"{d}/config.ru"], ["-w", "1"], port, None


def setup_lighttpd(d, port):
    lighttpd = which("lighttpd")
    if not lighttpd:
        return "lighttpd not installed (apt-get install lighttpd)"
    os.makedirs(f"{d}/www", exist_ok=True)
    with open(f"{d}/www/index.txt", "w") as f:
        f.write("generation=1\n")
    with open(f"{d}/lighttpd.conf", "w") as f:
        f.write(f"""server.document-root = "{d}/www"
server.bind = "127.0.0.1"
server.port = {port}
server.systemd-socket-activation = "enable"
server.errorlog = "/dev/stderr"
index-file.names = ("index.txt")
mimetype.assign = (".txt" => "text/plain")
""")
    return [lighttpd, "-D", "-f", f"{d}/lighttpd.conf"], ["-w", "1"], port, None


def setup_php_fpm(d, port):
    fpm = which("php-fpm8.2", "php-fpm")
    nginx = which("nginx")
    if not fpm or not nginx:
        return "php-fpm or nginx not installed"
    with open(f"{d}/index.php", "w") as f:
        f.write('<?php usleep(20000); echo "generation=" . getenv("HOTSWAP_GENERATION") . "\\n";\n')
    with open(f"{d}/fpm.conf", "w") as f:
        f.write(f"""[global]
pid = {d}/fpm.pid
error_log = /proc/self/fd/2
daemonize = no
[www]
listen = 127.0.0.1:{port}
pm = static
pm.max_children = 4
clear_env = no
""")
    # The front: a plain nginx, not under hotswap, passing to php-fpm.
    front = free_port()
    fd = f"{d}/front"
    os.makedirs(fd, exist_ok=True)
    with open(f"{fd}/nginx.conf", "w") as f:
        f.write(nginx_conf(fd, front, f"""location / {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME {d}/index.php;
            fastcgi_pass 127.0.0.1:{port};
        }}""").replace("master_process", "master_process"))
    proc = subprocess.Popen([nginx, "-e", "stderr", "-g", "daemon off;", "-c", f"{fd}/nginx.conf"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [fpm, "-F", "-R", "-y", f"{d}/fpm.conf"], ["-w", "1"], front, proc


def setup_gunicorn_sync(d, port):
    if not py_has("gunicorn"):
        return "gunicorn not installed"
    return (["gunicorn", "--chdir", os.path.join(ROOT, "contrib/apps/gunicorn"), "-w", "2", "app:app"],
            ["-w", "1"], port, None)


def setup_gunicorn_uvicorn(d, port):
    if not (py_has("gunicorn") and py_has("uvicorn")):
        return "gunicorn or uvicorn not installed"
    return (["gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "2", "--keep-alive", "75", "--chdir", PYAPP,
             "asgi_app:app"], ["-w", "1"], port, None)


def setup_uvicorn(d, port):
    if not py_has("uvicorn"):
        return "uvicorn not installed"
    return (["uvicorn", "--fd", "3", "--app-dir", PYAPP, "--no-access-log", "asgi_app:app"], ["-w", "2"], port, None)


def setup_hypercorn(d, port):
    if not py_has("hypercorn"):
        return "hypercorn not installed"
    return ["sh", "-c", f"cd {PYAPP} && exec hypercorn --bind fd://3 asgi_app:app"], ["-w", "2"], port, None


def setup_aiohttp(d, port):
    if not py_has("aiohttp"):
        return "aiohttp not installed"
    return ["python3", os.path.join(FIX, "stock_aiohttp.py")], ["-w", "2"], port, None


def setup_granian(d, port):
    if not which("granian"):
        return "granian not installed (pip install granian)"
    # granian binds its own port: hotswap's bind interception gives it fd 3.
    return (["granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port), "--working-dir", PYAPP,
             "--no-ws", "asgi_app:app"], ["-w", "2"], port, None)


def setup_daphne(d, port):
    if not which("daphne"):
        return "daphne not installed (pip install daphne)"
    return ["sh", "-c", f"cd {PYAPP} && exec daphne --fd 3 asgi_app:app"], ["-w", "2"], port, None


DJANGO_SETTINGS = """import os
SECRET_KEY = "bench"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "site_urls"
INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {}
"""

DJANGO_URLS = """import os
from django.http import HttpResponse
from django.urls import path

BODY = "generation=%s\\n" % os.environ.get("HOTSWAP_GENERATION", "0")


def index(request):
    return HttpResponse(BODY, content_type="text/plain")


urlpatterns = [path("", index)]
"""

DJANGO_WSGI = """import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_settings")
from django.core.wsgi import get_wsgi_application
application = get_wsgi_application()
"""


def setup_django(d, port):
    if not (py_has("django") and py_has("gunicorn")):
        return "django or gunicorn not installed (pip install django gunicorn)"
    for name, text in (("site_settings.py", DJANGO_SETTINGS), ("site_urls.py", DJANGO_URLS),
                       ("site_wsgi.py", DJANGO_WSGI)):
        with open(f"{d}/{name}", "w") as f:
            f.write(text)
    return ["gunicorn", "--chdir", d, "-w", "2", "site_wsgi:application"], ["-w", "1"], port, None


def caddyfile(d, port, generation):
    return f"""{{
    admin off
}}
http://127.0.0.1:{port} {{
    respond "generation={generation}
" 200
}}
"""


def setup_caddy(d, port):
    caddy = which("caddy")
    if not caddy:
        return "caddy not installed (apt-get install caddy)"
    with open(f"{d}/Caddyfile", "w") as f:
        f.write(caddyfile(d, port, 1))
    return ([caddy, "run", "--config", f"{d}/Caddyfile", "--adapter", "caddyfile"], ["-w", "1"], port, None)


def apache_conf(d, port):
    mods = "/usr/lib/apache2/modules"
    return f"""ServerRoot {d}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule mime_module {mods}/mod_mime.so
LoadModule dir_module {mods}/mod_dir.so
User www-data
Group www-data
# One per worker: a new Apache exits at once ("already running") while
# the pid in the file lives, and the old one still runs during a reload.
PidFile {d}/apache-${{HOTSWAP_WORKER_ID}}.pid
ErrorLog /dev/stderr
LogLevel notice
DocumentRoot {d}/www
DirectoryIndex index.txt
TypesConfig /etc/mime.types
Mutex file:{d}
{os.environ.get("BENCH_APACHE_EXTRA", "")}
<Directory {d}/www>
    Require all granted
</Directory>
"""


def setup_apache(d, port):
    apache = which("apache2", "httpd")
    if not apache:
        return "apache2 not installed (apt-get install apache2)"
    os.makedirs(f"{d}/www", exist_ok=True)
    os.chmod(TMP, 0o755)  # its workers run as www-data
    os.chmod(d, 0o755)
    with open(f"{d}/www/index.txt", "w") as f:
        f.write("generation=1\n")
    with open(f"{d}/apache.conf", "w") as f:
        f.write(apache_conf(d, port))
    return [apache, "-DFOREGROUND", "-f", f"{d}/apache.conf"], ["-w", "1"], port, None


def setup_jetty(d, port):
    """Jetty 9.4 (Debian's jetty9), a base as `start.jar --add-to-start=http,deploy`
    makes it, one static webapp; it binds its port itself (bind interception)."""
    home = "/usr/share/jetty9"
    if not os.path.exists(f"{home}/start.jar"):
        return "jetty9 not installed (apt-get install jetty9)"
    base = f"{d}/jetty-base"
    os.makedirs(f"{base}/webapps/root", exist_ok=True)
    modules = os.environ.get("BENCH_JETTY_MODULES", "http,deploy").split(",")
    with open(f"{base}/start.ini", "w") as f:
        f.write("".join(f"--module={m}\n" for m in modules))
    with open(f"{base}/webapps/root/index.html", "w") as f:
        f.write("generation\n")
    return (["java", "-jar", f"{home}/start.jar", f"jetty.home={home}", f"jetty.base={base}",
             f"jetty.http.port={port}", "jetty.http.host=127.0.0.1"], ["-w", "2"], port, None)


def setup_go(d, port):
    if not which("go"):
        return "go not installed"
    out = os.path.join(d, "stock-go")
    subprocess.run(["go", "build", "-o", out, "main.go"], cwd=os.path.join(FIX, "stock_go"), check=True,
                   env=dict(os.environ, GO111MODULE="off"))
    return [out], ["-w", "2"], port, None


def setup_http_server(d, port):
    """Python's http.server, binding its port itself (only -l given)."""
    with open(f"{d}/index.html", "w") as f:
        f.write("generation\n")
    return ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", d], ["-w", "2"], port, None


def setup_php_builtin(d, port):
    """php -S, binding its port itself (only -l given)."""
    if not which("php"):
        return "php not installed"
    ms = int(os.environ.get("SERVERS_PHP_MS", "0"))
    with open(f"{d}/index.php", "w") as f:
        f.write('<?php usleep(%d); echo "generation=" . getenv("HOTSWAP_GENERATION") . "\\n";\n' % (ms * 1000))
    return ["php", "-q", "-S", f"127.0.0.1:{port}", "-t", d], ["-w", "2"], port, None


def setup_node(app, module=None):
    def setup(d, port):
        if not which("node") or (module and not node_has(module)):
            return f"node or {module} not installed"
        return ["node", os.path.join(NODEAPP, app)], ["-w", "2"], port, None
    return setup


def setup_next(d, port):
    """A Next.js app (tests/apps/node/next-app, one page rendered per request),
    built once here if it has no build, run by `next start` from its directory
    as its package.json says and `npm start`'s refusal names it (`next start`
    reads the port from PORT, which hotswap sets)."""
    app = os.path.join(NODEAPP, "next-app")
    nxt = os.path.join(NODEAPP, "node_modules/.bin/next")
    if not which("node") or not os.path.exists(nxt):
        return "node or next not installed"
    os.environ["NEXT_TELEMETRY_DISABLED"] = "1"
    if not os.path.exists(os.path.join(app, ".next/BUILD_ID")):
        t = time.time()
        subprocess.run([nxt, "build"], cwd=app, check=True, capture_output=True)
        log(f"next build took {time.time() - t:.1f} s")
    return ["../node_modules/.bin/next", "start"], ["-w", "2", "--cwd", app], port, None


# name, setup, what the deploy before each reload writes (or None), verified by
SERVERS = [
    ("Node.js http (cluster app)", setup_node("cluster-cjs.js"), None,
     "`node::the_cluster_guides_app_commonjs_reloads_under_load`"),
    ("Express", setup_node("express-app.js", "express"), None, "`node::an_express_app_reloads_under_load`"),
    ("Fastify", setup_node("fastify-app.js", "fastify"), None, "`node::a_fastify_app_reloads_under_load`"),
    ("NestJS", setup_node("nest-app.mjs", "@nestjs/core"), None,
     "`node_frameworks::a_nestjs_app_reloads_under_load`"),
    ("Next.js", setup_next, None, "`node_frameworks::a_nextjs_app_reloads_under_load`"),
    ("uvicorn", setup_uvicorn, None, "`python::uvicorn_with_httptools_reloads_without_a_failed_request`"),
    ("hypercorn", setup_hypercorn, None, "`python::hypercorn_reloads_without_a_failed_request`"),
    ("gunicorn, sync workers", setup_gunicorn_sync, None, "`systemd::gunicorn_reloads_under_load`"),
    ("gunicorn, uvicorn workers", setup_gunicorn_uvicorn, None,
     "`python::gunicorn_with_uvicorn_workers_reloads_without_a_failed_request`"),
    ("aiohttp", setup_aiohttp, None, "`rescue::aiohttp_loses_only_what_it_read_itself`"),
    ("Go net/http on fd 3", setup_go, None, "`rescue::go_net_http_loses_nothing_with_rescue`"),
    ("nginx", setup_nginx, "nginx", "`known_servers::nginx_with_its_own_config_reloads_without_a_failed_request`"),
    ("unicorn", setup_unicorn, None, "`known_servers::unicorn_reloads_without_a_failed_request`"),
    ("puma", setup_puma, None, "`known_servers::puma_with_its_own_defaults_reloads_without_a_failed_request`"),
    ("lighttpd", setup_lighttpd, "lighttpd", "measured by contrib/bench/servers.py, not in CI"),
    ("php-fpm behind nginx", setup_php_fpm, None, "measured by contrib/bench/servers.py, not in CI"),
    ("Python http.server (binds its port)", setup_http_server, None,
     "`own_bind::python_http_server_on_a_fixed_port_reloads_without_a_failed_request`"),
    ("php -S (binds its port)", setup_php_builtin, None,
     "`own_bind::php_builtin_server_on_a_fixed_port_reloads_without_a_failed_request`"),
    ("granian", setup_granian, None, "measured by contrib/bench/servers.py, not in CI"),
    ("daphne", setup_daphne, None, "measured by contrib/bench/servers.py, not in CI"),
    ("Django (gunicorn)", setup_django, None, "measured by contrib/bench/servers.py, not in CI"),
    ("caddy", setup_caddy, "caddy", "measured by contrib/bench/servers.py, not in CI"),
    ("Apache httpd", setup_apache, "apache", "measured by contrib/bench/servers.py, not in CI"),
    ("Jetty", setup_jetty, None, "`own_bind::jetty_on_its_own_port_reloads_without_a_failed_request`"),
]

PREFORK_SIGTERM = {"nginx", "unicorn", "lighttpd", "php-fpm behind nginx"}


def deploy(kind, d, port, generation):
    if kind == "nginx":
        with open(f"{d}/nginx.conf", "w") as f:
            f.write(nginx_conf(d, port, 'location / { return 200 "generation=%d\\n"; }' % generation))
    elif kind == "caddy":
        with open(f"{d}/Caddyfile", "w") as f:
            f.write(caddyfile(d, port, generation))
    elif kind in ("lighttpd", "apache"):
        with open(f"{d}/www/index.txt.new", "w") as f:
            f.write("generation=%d\n" % generation)
        os.rename(f"{d}/www/index.txt.new", f"{d}/www/index.txt")


class Load:
    """2 keep-alive and 2 new-connection clients, no pause, no retry."""

    def __init__(self, port):
        self.port, self.stop = port, False
        self.ok = self.failed = 0
        self.errors = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, args=(i < 2,), daemon=True) for i in range(4)]
        for t in self.threads:
            t.start()

    def client(self, keep_alive):
        conn = None
        while not self.stop:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
                conn.request("GET", "/", headers={} if keep_alive else {"Connection": "close"})
                r = conn.getresponse()
                r.read()
                good = r.status == 200
                if not keep_alive or r.will_close:
                    conn.close()
                    conn = None
                with self.lock:
                    if good:
                        self.ok += 1
                    else:
                        self.failed += 1
                        self.errors.append("%s: HTTP %d" % ("keep-alive" if keep_alive else "new", r.status))
            except Exception as e:  # noqa: BLE001 - every failure counts
                with self.lock:
                    self.failed += 1
                    self.errors.append("%s: %s" % ("keep-alive" if keep_alive else "new", repr(e)[:80]))
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)

    def count(self):
        with self.lock:
            return self.ok + self.failed

    def finish(self):
        self.stop = True
        for t in self.threads:
            t.join(30)


def hs(args, control):
    return subprocess.run([BIN, *args, "--control", control], capture_output=True, text=True, timeout=120)


def run_one(name, setup, kind, force_sigterm):
    d = os.path.join(TMP, name.replace(" ", "_").replace("/", "_").replace(",", "") + ("-term" if force_sigterm else ""))
    os.makedirs(d, exist_ok=True)
    port = free_port()
    got = setup(d, port)
    if isinstance(got, str):
        return {"name": name, "skipped": got}
    command, extra, load_port, front = got
    if force_sigterm:
        extra = extra + ["--stop-signal", "SIGTERM"]
    if os.environ.get("SERVERS_QUIESCE") == "off":
        extra = extra + ["--quiesce", "off"]
    control = os.path.join(d, "control.sock")
    logf = open(os.path.join(d, "primary.log"), "w")
    primary = subprocess.Popen([BIN, "run", "-l", f"127.0.0.1:{port}", "--control", control, "--ready-timeout", "60s",
                                *extra, "--", *command], stdout=logf, stderr=logf, cwd=d)
    result = {"name": name, "command": command, "args": extra}
    try:
        want = int(extra[extra.index("-w") + 1])
        deadline = time.time() + 60
        status = {}
        while time.time() < deadline:
            r = hs(["status", "--json"], control)
            if r.returncode == 0:
                status = json.loads(r.stdout)
                if sum(w["state"] == "ready" for w in status["workers"]) >= want:
                    break
            time.sleep(0.2)
        else:
            result["error"] = "never ready: " + open(os.path.join(d, "primary.log")).read()[-2000:]
            return result
        w = status["workers"][0]
        result.update(ready_via=w.get("ready_via"), ready_proof=w.get("ready_proof"), first_ready_ms=w.get("ready_ms"),
                      server=status.get("server"))
        load = Load(load_port)
        time.sleep(2)
        took = []
        for g in range(2, 2 + RELOADS):
            if kind:
                deploy(kind, d, port, g)
            t = time.time()
            r = hs(["reload"], control)
            took.append(round((time.time() - t) * 1000))
            if r.returncode != 0:
                result.setdefault("reload_errors", []).append(r.stdout + r.stderr)
            time.sleep(1.5)
        load.finish()
        text = open(os.path.join(d, "primary.log")).read()
        sig = [line.split("stopping (")[1].split(" sent")[0] for line in text.splitlines() if "stopping (" in line]
        result.update(requests=load.ok + load.failed, failed=load.failed, errors=load.errors[:12], reload_ms=took,
                      stop_signal=sig[0] if sig else None, killed=text.count("killed by SIGKILL"),
                      quiesced=text.count("answers nothing after"), quiesce_gave_up=text.count("stopping it anyway"))
        return result
    finally:
        primary.send_signal(signal.SIGTERM)
        try:
            primary.wait(40)
        except subprocess.TimeoutExpired:
            primary.kill()
        if front:
            front.terminate()
            front.wait()
        logf.close()


def main():
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: cargo build --release")
    only = [o for o in os.environ.get("SERVERS_ONLY", "").split(",") if o]
    force = os.environ.get("SERVERS_FORCE_SIGTERM") == "1"
    version = next(l.split('"')[1] for l in open(os.path.join(ROOT, "Cargo.toml")) if l.startswith("version"))
    print(f"hotswap {version}, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; {RELOADS} reloads under 2 keep-alive + 2 new-connection clients")
    print()
    print("| server | ready via (first start) | stop signal | requests | failed | reloads (ms) |")
    print("|---|---|---|---|---|---|")
    results = []
    for name, setup, kind, verified in SERVERS:
        if only and not any(o.lower() in name.lower() for o in only):
            continue
        if force and name not in PREFORK_SIGTERM:
            continue
        log(f"{name}{' (--stop-signal SIGTERM)' if force else ''}")
        r = run_one(name, setup, kind, force)
        r["verified_by"] = verified
        results.append(r)
        if "skipped" in r:
            print(f"| {name} | not measured: {r['skipped']} | | | | |")
        elif "error" in r:
            print(f"| {name} | ERROR | | | | |")
            log(r["error"])
        else:
            via = f"{r['ready_via']}{' (' + r['ready_proof'] + ')' if r.get('ready_proof') else ''} in {r['first_ready_ms']} ms"
            print(f"| {name} | {via} | {r['stop_signal']} | {r['requests']} | {r['failed']} | {r['reload_ms']} |",
                  flush=True)
            if r.get("quiesced") or r.get("quiesce_gave_up"):
                log(f"{name}: {r['quiesced']} old workers quiesced, {r['quiesce_gave_up']} given up on at the bound")
            if r["failed"] or r.get("reload_errors") or r.get("killed"):
                log(f"{name}: errors {r['errors']} reload errors {r.get('reload_errors')} killed {r.get('killed')}")
    with open(os.path.join(TMP, "servers.json"), "w") as f:
        json.dump(results, f, indent=1)
    log(f"details: {TMP}/servers.json and each server's primary.log under {TMP}")


if __name__ == "__main__":
    main()
