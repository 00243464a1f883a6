use super::*;
use std::path::PathBuf;

fn cmd(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn server(v: &[&str]) -> Option<Server> {
    recognise(&cmd(v)).map(|r| r.server)
}

#[test]
fn the_common_servers_are_recognised_by_their_command() {
    let table: &[(&[&str], Server)] = &[
        (&["nginx", "-c", "/etc/nginx/nginx.conf"], Server::Nginx),
        (&["/usr/sbin/nginx", "-g", "daemon off;"], Server::Nginx),
        (&["unicorn", "-c", "unicorn.rb", "config.ru"], Server::Unicorn),
        (&["bundle", "exec", "unicorn_rails"], Server::Unicorn),
        (&["bundle", "exec", "puma", "-C", "config/puma.rb"], Server::Puma),
        (&["ruby", "bin/puma"], Server::Puma),
        (&["/usr/sbin/php-fpm8.2", "-F", "-y", "fpm.conf"], Server::PhpFpm),
        (&["php-fpm", "-F"], Server::PhpFpm),
        (&["php8.2-fpm", "-F"], Server::PhpFpm),
        (&["/usr/sbin/lighttpd", "-D", "-f", "l.conf"], Server::Lighttpd),
        (&["gunicorn", "-w", "2", "app:app"], Server::Gunicorn),
        (&["python3", "-m", "gunicorn", "app:app"], Server::Gunicorn),
        (&["/srv/app/.venv/bin/uvicorn", "--fd", "3", "app:app"], Server::Uvicorn),
        (&["hypercorn", "--bind", "fd://3", "app:app"], Server::Hypercorn),
        (&["apache2", "-DFOREGROUND"], Server::Apache),
        (&["java", "-Xmx1g", "-jar", "/opt/jetty/start.jar"], Server::Jetty),
        (&["java", "-jar", "jetty-runner-9.4.jar", "app.war"], Server::Jetty),
        (&["caddy", "run"], Server::Caddy),
        (&["php", "-q", "-S", "127.0.0.1:8000", "-t", "public"], Server::PhpBuiltin),
        (&["/usr/bin/php8.2", "-S", "0.0.0.0:80"], Server::PhpBuiltin),
        (&["python3", "-m", "http.server", "8000", "--bind", "127.0.0.1"], Server::PythonHttpServer),
        (&["/usr/bin/python3.11", "-u", "-m", "http.server"], Server::PythonHttpServer),
    ];
    for (c, s) in table {
        assert_eq!(server(c), Some(*s), "{c:?}");
    }
}

#[test]
fn only_the_servers_without_a_graceful_stop_are_quiesced() {
    assert!(!Server::PhpBuiltin.has_graceful_stop() && !Server::PythonHttpServer.has_graceful_stop());
    assert!(Server::Nginx.has_graceful_stop() && Server::Gunicorn.has_graceful_stop());
    assert_eq!(server(&["php", "script.php"]), None, "a PHP script is no server");
    assert_eq!(server(&["php-cgi", "-S", "x"]), None);
    assert_eq!(server(&["python3", "-m", "http.client"]), None);
    let r = recognise(&cmd(&["php", "-S", "127.0.0.1:8000"])).unwrap();
    let text = describe(&r, None, &[]);
    assert!(text.starts_with("php -S recognised: stop signal SIGTERM (it has no graceful stop"), "{text}");
}

#[test]
fn wrappers_absolute_paths_exec_and_sh_c_are_seen_through() {
    assert_eq!(server(&["/bin/sh", "-c", "exec nginx -c /srv/nginx.conf"]), Some(Server::Nginx));
    assert_eq!(server(&["sh", "-c", "nginx -g 'daemon off;'"]), Some(Server::Nginx));
    assert_eq!(server(&["env", "RACK_ENV=production", "unicorn", "-c", "u.rb"]), Some(Server::Unicorn));
    assert_eq!(server(&["exec", "/usr/sbin/php-fpm8.2", "-F"]), Some(Server::PhpFpm));
    assert_eq!(server(&["/usr/bin/env", "python3.11", "-m", "uvicorn", "--fd", "3", "a:b"]), Some(Server::Uvicorn));
    assert_eq!(server(&["nice", "-n", "5", "lighttpd", "-D"]), Some(Server::Lighttpd));
    let r = recognise(&cmd(&["sh", "-c", "exec env A=1 unicorn -c 'my conf.rb'"])).unwrap();
    assert_eq!(r, Recognised { server: Server::Unicorn, args: cmd(&["-c", "my conf.rb"]) });
}

#[test]
fn other_commands_are_not_servers() {
    for c in [
        &["node", "app.js"][..],
        &["python3", "app.py"],
        &["java", "-jar", "app.jar"],
        &["java", "Main"],
        &["./nginx-exporter"],
        &["sh", "-c", "cd /srv && exec nginx"],
        &[],
    ] {
        assert_eq!(server(c), None, "{c:?}");
    }
}

#[test]
fn each_server_gets_the_signal_that_drains_it() {
    assert_eq!(Server::Nginx.stop_signal(), Signal::SIGQUIT);
    assert_eq!(Server::Unicorn.stop_signal(), Signal::SIGQUIT);
    assert_eq!(Server::PhpFpm.stop_signal(), Signal::SIGQUIT);
    assert_eq!(Server::Lighttpd.stop_signal(), Signal::SIGINT);
    assert_eq!(Server::Apache.stop_signal(), Signal::SIGWINCH);
    for s in [Server::Puma, Server::Gunicorn, Server::Uvicorn, Server::Hypercorn, Server::Jetty, Server::Caddy] {
        assert_eq!(s.stop_signal(), Signal::SIGTERM, "{s:?}");
    }
}

fn addrs() -> Vec<ListenAddr> {
    vec![
        ListenAddr::Tcp("127.0.0.1:8080".parse().unwrap()),
        ListenAddr::Tcp("[::1]:9000".parse().unwrap()),
        ListenAddr::Unix(PathBuf::from("/run/app.sock")),
    ]
}

#[test]
fn the_socket_goes_in_the_variable_each_server_reads() {
    assert_eq!(Server::Nginx.env(&addrs()), vec![("NGINX", "3;4;5;".to_string())]);
    assert_eq!(Server::Nginx.env(&addrs()[..1]), vec![("NGINX", "3;".to_string())]);
    assert_eq!(
        Server::PhpFpm.env(&addrs()),
        vec![("FPM_SOCKETS", "127.0.0.1:8080=3,::1:9000=4,/run/app.sock=5".to_string())]
    );
    assert!(Server::Unicorn.env(&addrs()).is_empty(), "unicorn reads LISTEN_FDS");
    assert!(Server::Gunicorn.env(&addrs()).is_empty());
}

#[test]
fn the_choice_is_said_with_its_reason_and_an_explicit_signal_wins() {
    let l = &addrs()[..1];
    let nginx = recognise(&cmd(&["nginx", "-c", "n.conf"])).unwrap();
    let text = describe(&nginx, None, l);
    assert!(text.starts_with("nginx recognised: stop signal SIGQUIT (its graceful stop"), "{text}");
    assert!(text.contains("socket via NGINX=3;") && text.contains("`listen 127.0.0.1:8080;`"), "{text}");
    let text = describe(&nginx, Some(Signal::SIGTERM), l);
    assert!(text.contains("stop signal SIGTERM (--stop-signal; nginx drains on SIGQUIT"), "{text}");
    let uvicorn = recognise(&cmd(&["uvicorn", "app:app"])).unwrap();
    assert!(describe(&uvicorn, None, l).contains("NOTE: uvicorn serves hotswap's socket only with `--fd 3`"));
    let uvicorn = recognise(&cmd(&["uvicorn", "--fd", "3", "app:app"])).unwrap();
    assert!(!describe(&uvicorn, None, l).contains("NOTE"));
    let fpm = recognise(&cmd(&["php-fpm8.2", "-y", "f.conf"])).unwrap();
    assert!(describe(&fpm, None, l).contains("NOTE: php-fpm goes into the background unless `-F`"));
}

#[test]
fn gunicorns_control_socket_is_its_own_not_a_port_it_serves() {
    let g = Server::Gunicorn;
    assert!(g.is_control_socket(&[], "unix:/home/app/.gunicorn/gunicorn.ctl"));
    assert!(g.is_control_socket(&[], "unix:/run/user/1000/gunicorn.ctl"));
    assert!(g.is_control_socket(&cmd(&["--control-socket", "/tmp/g.sock"]), "unix:/tmp/g.sock"));
    assert!(g.is_control_socket(&cmd(&["--control-socket=ctl.sock"]), "unix:/srv/app/ctl.sock"));
    assert!(!g.is_control_socket(&[], "unix:/run/app.sock"));
    assert!(!g.is_control_socket(&[], "127.0.0.1:8000"));
    assert!(!Server::Uvicorn.is_control_socket(&[], "unix:/home/app/.gunicorn/gunicorn.ctl"));
}

#[test]
fn jetty_is_told_its_port_must_be_the_listen_port() {
    let l = &addrs()[..1];
    let jetty = recognise(&cmd(&["java", "-jar", "/usr/share/jetty9/start.jar", "jetty.base=/srv/base"])).unwrap();
    let text = describe(&jetty, None, l);
    assert!(text.starts_with("Jetty recognised: stop signal SIGTERM (its graceful stop"), "{text}");
    assert!(text.contains("gets hotswap's socket (bind interception"), "{text}");
    assert!(text.contains("8080 unless its jetty.base's start.ini says otherwise") && !text.contains("NOTE"), "{text}");
    let same = recognise(&cmd(&["java", "-jar", "start.jar", "jetty.http.port=8080"])).unwrap();
    let text = describe(&same, None, l);
    assert!(text.contains("(8080, on its command line)") && !text.contains("NOTE"), "{text}");
    let other = recognise(&cmd(&["java", "-jar", "start.jar", "jetty.http.port=9090"])).unwrap();
    let text = describe(&other, None, l);
    assert!(
        text.contains("NOTE: its command line says jetty.http.port=9090, which hotswap does not listen on"),
        "{text}"
    );
    let deprecated = recognise(&cmd(&["java", "-Djetty.port=9090", "-jar", "start.jar"])).unwrap();
    assert!(describe(&deprecated, None, l).contains("NOTE: its command line says jetty.http.port=9090"));
    let fix = Server::Jetty.own_listener_fix(l).unwrap();
    assert!(fix.contains("jetty.http.port=8080") && fix.contains("jetty.http.host unset or 127.0.0.1"), "{fix}");
    assert_eq!(Server::Jetty.own_listener_fix(&addrs()[2..]), None, "no TCP listener: nothing to say");
}
