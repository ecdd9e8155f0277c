//! examples/nginx.conf with a real nginx in front of the relay: WebSocket clients
//! register and receive through it, /healthz answers through it, the per-IP limit counts
//! visitors (127.0.0.2 and 127.0.0.3) through X-Forwarded-For only with
//! --trusted-proxies, tokens in query strings stay out of nginx's access log, and
//! stopping nginx leaves none of its processes (master or workers) behind.
//! examples/nginx-upstream.conf in front of three relays on one Redis: clients spread
//! over them, every send delivered.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{
    processes_using, rewrite, wait_for_port, wait_readyz, Client, RedisServer, RelayProcess,
};
use serde_json::json;

/// nginx in its own process group and working directory, so that stopping it reaches
/// its workers too, and anything left behind can be found by that directory.
struct Nginx {
    /// The master process, leader of the group.
    master: Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown: the master stops its workers and exits.
        common::stop_process_group(&mut self.master);
    }
}

/// The shipped site `name` (in examples/), listening on 127.0.0.1:`port` only.
fn shipped_site(name: &str, port: u16) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    let site = std::fs::read_to_string(&path).expect("the shipped site");
    let site = rewrite(
        &site,
        "    listen 80;\n",
        &format!("    listen 127.0.0.1:{port};\n"),
    );
    rewrite(&site, "    listen [::]:80;\n", "")
}

/// nginx serving the shipped site on 127.0.0.1:`port`, proxying to `relay_port`.
fn nginx(port: u16, relay_port: u16) -> Nginx {
    let site = rewrite(
        &shipped_site("nginx.conf", port),
        "server 127.0.0.1:8765;",
        &format!("server 127.0.0.1:{relay_port};"),
    );
    nginx_serving(port, &site)
}

/// nginx serving `site` on 127.0.0.1:`port`.
fn nginx_serving(port: u16, site: &str) -> Nginx {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    // The single-relay site logs accesses (without query strings): into this directory.
    let site = site.replace(
        "/var/log/nginx/notify-relay.access.log",
        &format!("{d}/access.log"),
    );
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         user nobody nogroup;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
           proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           include {d}/site.conf;\n}}\n"
    );
    std::fs::write(dir.path().join("site.conf"), site).expect("write");
    std::fs::write(dir.path().join("nginx.conf"), conf).expect("write");
    let master = Command::new("nginx")
        .current_dir(dir.path())
        .process_group(0)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx runs (scripts/test.sh installs nginx)");
    wait_for_port(port);
    Nginx { master, dir }
}

#[tokio::test]
async fn clients_register_and_receive_through_nginx() {
    let relay = RelayProcess::spawn(&[]);
    let port = common::free_port();
    let nginx = nginx(port, relay.addr.port());
    let url = format!("ws://127.0.0.1:{port}/");

    let mut receiver = Client::connect(&url).await;
    receiver.register("behind-nginx").await;
    let mut sender = Client::connect(&url).await;
    assert_eq!(
        sender
            .deliver("behind-nginx", json!({"via": "nginx"}))
            .await,
        1
    );
    assert_eq!(receiver.recv_text().await, r#"{"via":"nginx"}"#);

    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let (status, _, body) = common::http_request(addr, "GET", "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, metrics) = common::http_request(addr, "GET", "/metrics").await;
    assert_eq!(status, 200, "metrics are allowed from 127.0.0.1");
    assert_eq!(common::metric(&metrics, "notify_relay_connections"), 2.0);

    // Stopped, nginx leaves nothing behind: no master, no worker.
    let dir = nginx.dir();
    drop(nginx);
    let left = processes_using(&dir);
    assert!(
        left.is_empty(),
        "still running after nginx stopped: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_nginx_upstream_of_relays_on_one_redis_delivers_every_send() {
    let redis = RedisServer::start();
    let url = redis.url();
    let relays: Vec<RelayProcess> = (0..3)
        .map(|_| RelayProcess::spawn(&["--redis", &url]))
        .collect();
    for relay in &relays {
        wait_readyz(relay.addr, 200).await;
    }
    let port = common::free_port();
    let mut site = shipped_site("nginx-upstream.conf", port);
    for (shipped, relay) in ["10.0.0.11:8765", "10.0.0.12:8765", "10.0.0.13:8765"]
        .iter()
        .zip(&relays)
    {
        site = rewrite(&site, shipped, &relay.addr.to_string());
    }
    let nginx = nginx_serving(port, &site);
    let url = format!("ws://127.0.0.1:{port}/");

    let mut receivers = Vec::new();
    for k in 0..6 {
        let mut receiver = Client::connect(&url).await;
        receiver.register(&format!("upstream-{k}")).await;
        receivers.push(receiver);
    }
    let mut senders = Vec::new();
    for _ in 0..3 {
        senders.push(Client::connect(&url).await);
    }
    for (k, receiver) in receivers.iter_mut().enumerate() {
        for (s, sender) in senders.iter_mut().enumerate() {
            let text = format!("from sender {s}");
            assert_eq!(
                sender.deliver(&format!("upstream-{k}"), json!(text)).await,
                1
            );
            assert_eq!(receiver.recv_text().await, text);
        }
    }
    let spread = relays
        .iter()
        .filter(|relay| relay.log_text().contains("registered as"))
        .count();
    assert!(spread >= 2, "nginx sent every client to one relay");

    let dir = nginx.dir();
    drop(nginx);
    let left = processes_using(&dir);
    assert!(
        left.is_empty(),
        "still running after nginx stopped: {left:?}"
    );
}

/// A WebSocket through nginx from the loopback address `source`: the client, or the
/// refusal's status.
async fn visit(source: &str, port: u16, headers: &[(&str, &str)]) -> Result<common::Client, u16> {
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let tcp = common::connect_from(source, addr).await;
    common::websocket_on(tcp, &format!("ws://127.0.0.1:{port}/"), headers).await
}

#[tokio::test]
async fn per_ip_limits_count_visitors_behind_nginx_only_with_trusted_proxies() {
    // Trusted: 127.0.0.2 and 127.0.0.3 are two visitors, each with its own limit.
    let relay = RelayProcess::spawn(&[
        "--max-connections-per-ip",
        "1",
        "--trusted-proxies",
        "127.0.0.1/32",
    ]);
    let port = common::free_port();
    let proxy = nginx(port, relay.addr.port());
    let _first = visit("127.0.0.2", port, &[]).await.expect("first visitor");
    let _second = visit("127.0.0.3", port, &[]).await.expect("second visitor");
    assert_eq!(visit("127.0.0.2", port, &[]).await.err(), Some(429));
    // A forged X-Forwarded-For is kept by nginx, which appends the real address: the
    // relay takes the rightmost untrusted one, the real visitor.
    let forged = visit("127.0.0.2", port, &[("x-forwarded-for", "198.51.100.9")]).await;
    assert_eq!(
        forged.err(),
        Some(429),
        "a forged header is not a new visitor"
    );
    assert_eq!(visit("127.0.0.3", port, &[]).await.err(), Some(429));
    // A token in the query string does not reach nginx's access log.
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let reply =
        common::http_exchange(addr, "GET", "/presence/k?token=secret-in-query", &[], "").await;
    assert_eq!(reply.status, 200);
    let log_path = proxy.dir().join("access.log");
    common::eventually("nginx logged the request", || {
        std::fs::read_to_string(&log_path).is_ok_and(|log| log.contains("/presence/k"))
    })
    .await;
    let access_log = std::fs::read_to_string(&log_path).expect("access log");
    assert!(!access_log.contains("secret-in-query"), "{access_log}");
    drop(proxy);
    drop(relay);

    // Untrusted: every visitor is nginx's own address, one visitor for the relay.
    let relay = RelayProcess::spawn(&["--max-connections-per-ip", "1"]);
    let port = common::free_port();
    let _nginx = nginx(port, relay.addr.port());
    let _first = visit("127.0.0.2", port, &[]).await.expect("first visitor");
    assert_eq!(
        visit("127.0.0.3", port, &[]).await.err(),
        Some(429),
        "without --trusted-proxies the proxy is the client"
    );
}
