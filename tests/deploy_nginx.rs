//! examples/nginx.conf with a real nginx in front of the relay: WebSocket clients
//! register and receive through it, /healthz answers through it, and stopping nginx
//! leaves none of its processes (master or workers) behind. examples/nginx-upstream.conf
//! in front of three relays on one Redis: clients spread over them, every send delivered.

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
