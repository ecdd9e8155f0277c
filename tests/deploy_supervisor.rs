//! supervisor/notify-relay.conf under a real supervisord: the relay comes up and routes,
//! comes back after kill -9, and `supervisorctl stop` drains it (Close 1001, exit 0);
//! the original's `numprocs=4` with --reuse-port makes every relay warn that it has a
//! key space of its own, and with --redis the four relays are one key space that
//! delivers every send; and stopping supervisord leaves no process behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{processes_using, rewrite, wait_for_port, Client, RedisServer, DEADLINE};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

struct Supervisord {
    dir: tempfile::TempDir,
    child: Child,
}

/// What the relays log at start when --reuse-port is on without a cluster engine.
const SPLIT_KEY_SPACE_WARNING: &str = "--reuse-port is on and no cluster engine is configured";

impl Supervisord {
    /// Starts supervisord with the shipped program block, rewritten to run the built
    /// relay on `port`, in and logging into a temporary directory.
    fn start(port: u16) -> Self {
        Self::start_with(port, |program| program)
    }

    /// Like [`Supervisord::start`], with the program block further changed by `adapt`.
    fn start_with(port: u16, adapt: impl FnOnce(String) -> String) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let shipped = std::fs::read_to_string(root().join("supervisor/notify-relay.conf"))
            .expect("supervisor/notify-relay.conf");
        let log = dir.path().join("relay.log");
        let program = rewrite(
            &shipped,
            "command=/usr/local/bin/notify-relay 8765",
            &format!(
                "command={} --host 127.0.0.1 {port}",
                env!("CARGO_BIN_EXE_notify-relay")
            ),
        );
        let program = rewrite(
            &program,
            "stdout_logfile=/var/log/notify-relay/notify-relay.log",
            &format!("stdout_logfile={}", log.display()),
        );
        let d = dir.path().display();
        // The relays run in the temporary directory, so leftovers can be found by it.
        let program = rewrite(
            &program,
            "[program:notify-relay]\n",
            &format!("[program:notify-relay]\ndirectory={d}\n"),
        );
        let program = adapt(program);
        let conf = format!(
            "[unix_http_server]\nfile={d}/supervisor.sock\n\n\
             [supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
             childlogdir={d}\nnodaemon=true\n\n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
             [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\n\
             [include]\nfiles = {d}/notify-relay.conf\n"
        );
        std::fs::write(dir.path().join("notify-relay.conf"), program).expect("write");
        std::fs::write(dir.path().join("supervisord.conf"), conf).expect("write");
        let child = Command::new("supervisord")
            .arg("-c")
            .arg(dir.path().join("supervisord.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("supervisord runs (scripts/test.sh installs supervisor)");
        Supervisord { dir, child }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new("supervisorctl")
            .arg("-c")
            .arg(self.dir.path().join("supervisord.conf"))
            .args(args)
            .output()
            .expect("supervisorctl runs")
    }

    /// The relay's pid once supervisord reports it running.
    fn running_pid(&self) -> u32 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let out = self.ctl(&["pid", "notify-relay"]);
            let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if let Ok(pid) = text.parse::<u32>() {
                if pid > 0 {
                    return pid;
                }
            }
            assert!(Instant::now() < deadline, "relay never running: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pids of every process supervisord runs now.
    fn program_pids(&self) -> Vec<u32> {
        let out = self.ctl(&["pid", "all"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .filter(|&pid| pid > 0)
            .collect()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Waits (with the deadline) until the log file `name` contains `needle`.
    fn wait_for_log(&self, name: &str, needle: &str) {
        let deadline = Instant::now() + DEADLINE;
        while !self.log(name).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{name} never said {needle:?}:\n{}",
                self.log(name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Supervisord {
    /// `supervisorctl shutdown` stops every program (SIGTERM, the drain) and then
    /// supervisord. Past the deadline, the programs and supervisord are killed: the
    /// programs first, since supervisord puts each in a process group of its own.
    fn drop(&mut self) {
        let programs = self.program_pids();
        let _ = self.ctl(&["shutdown"]);
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in programs {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

async fn assert_routes(url: &str, key: &str) {
    let mut receiver = Client::connect(url).await;
    receiver.register(key).await;
    let mut sender = Client::connect(url).await;
    assert_eq!(sender.deliver(key, json!("through supervisord")).await, 1);
    assert_eq!(receiver.recv_text().await, "through supervisord");
}

#[tokio::test(flavor = "multi_thread")]
async fn supervisord_runs_restarts_and_drains_the_relay() {
    let port = common::free_port();
    let supervisor = Supervisord::start(port);
    let first = supervisor.running_pid();
    wait_for_port(port);
    let url = format!("ws://127.0.0.1:{port}/");
    assert_routes(&url, "before-crash").await;

    // kill -9: supervisord brings it back and clients can register again.
    let status = Command::new("kill")
        .args(["-9", &first.to_string()])
        .status();
    assert!(status.expect("kill").success());
    let deadline = Instant::now() + DEADLINE;
    let second = loop {
        let pid = supervisor.running_pid();
        if pid != first {
            break pid;
        }
        assert!(Instant::now() < deadline, "not restarted");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(second, first);
    wait_for_port(port);
    assert_routes(&url, "after-crash").await;

    // supervisorctl stop: SIGTERM, the drain, Close 1001, exit status 0.
    let mut client = Client::connect(&url).await;
    client.register("draining").await;
    let closed = tokio::spawn(async move { client.expect_close().await });
    let stop = supervisor.ctl(&["stop", "notify-relay"]);
    assert!(
        String::from_utf8_lossy(&stop.stdout).contains("stopped"),
        "{stop:?}"
    );
    assert_eq!(closed.await.expect("client"), CloseCode::Away);
    let log = supervisor.log("supervisord.log");
    assert!(
        log.contains("stopped: notify-relay (exit status 0)"),
        "supervisord log:\n{log}"
    );
    assert!(supervisor
        .log("relay.log")
        .contains("received SIGTERM: draining"));
    assert!(
        !supervisor
            .log("relay.log")
            .contains(SPLIT_KEY_SPACE_WARNING),
        "one relay per port has nothing to warn about"
    );

    let dir = supervisor.dir.path().to_path_buf();
    drop(supervisor);
    let left = processes_using(&dir);
    assert!(
        left.is_empty(),
        "still running after supervisord stopped: {left:?}"
    );
}

/// The original's capacity recipe: four processes on one port with SO_REUSEPORT. Each
/// relay has its own registrations, so each must say so at start.
#[test]
fn numprocs_4_with_reuse_port_makes_every_relay_warn() {
    const PROCESSES: usize = 4;
    let port = common::free_port();
    let supervisor = Supervisord::start_with(port, |program| {
        let program = rewrite(
            &program,
            "[program:notify-relay]\n",
            &format!(
                "[program:notify-relay]\nnumprocs={PROCESSES}\n\
                 process_name=%(program_name)s_%(process_num)02d\n"
            ),
        );
        let program = rewrite(
            &program,
            &format!("127.0.0.1 {port}\n"),
            &format!("127.0.0.1 {port} --reuse-port\n"),
        );
        rewrite(&program, "relay.log", "relay-%(process_num)02d.log")
    });
    for n in 0..PROCESSES {
        let log = format!("relay-{n:02}.log");
        supervisor.wait_for_log(&log, SPLIT_KEY_SPACE_WARNING);
        let text = supervisor.log(&log);
        let line = text
            .lines()
            .find(|line| line.contains(SPLIT_KEY_SPACE_WARNING))
            .unwrap_or_default();
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("its own key space"), "{line}");
    }
    assert_eq!(supervisor.program_pids().len(), PROCESSES);
    wait_for_port(port);

    let dir = supervisor.dir.path().to_path_buf();
    drop(supervisor);
    let left = processes_using(&dir);
    assert!(
        left.is_empty(),
        "still running after supervisord stopped: {left:?}"
    );
}

/// The Part 4 recipe: `numprocs=4`, `--reuse-port` and `--redis` on one port. The kernel
/// spreads clients over the four relays, and every send reaches its recipient whichever
/// relay either side landed on.
#[tokio::test(flavor = "multi_thread")]
async fn numprocs_4_with_reuse_port_and_redis_deliver_every_send() {
    const PROCESSES: usize = 4;
    const KEYS: usize = 16;
    let redis = RedisServer::start();
    let port = common::free_port();
    let supervisor = Supervisord::start_with(port, |program| {
        let program = rewrite(
            &program,
            "[program:notify-relay]\n",
            &format!(
                "[program:notify-relay]\nnumprocs={PROCESSES}\n\
                 process_name=%(program_name)s_%(process_num)02d\n"
            ),
        );
        let program = rewrite(
            &program,
            &format!("127.0.0.1 {port}\n"),
            &format!("127.0.0.1 {port} --reuse-port --redis {}\n", redis.url()),
        );
        rewrite(&program, "relay.log", "relay-%(process_num)02d.log")
    });
    for n in 0..PROCESSES {
        supervisor.wait_for_log(&format!("relay-{n:02}.log"), "redis: connected");
    }
    assert_eq!(supervisor.program_pids().len(), PROCESSES);
    wait_for_port(port);
    for n in 0..PROCESSES {
        let log = supervisor.log(&format!("relay-{n:02}.log"));
        assert!(!log.contains(SPLIT_KEY_SPACE_WARNING), "{log}");
    }

    let url = format!("ws://127.0.0.1:{port}/");
    let mut receivers = Vec::new();
    for k in 0..KEYS {
        let mut receiver = Client::connect(&url).await;
        receiver.register(&format!("key-{k}")).await;
        receivers.push(receiver);
    }
    let mut senders = Vec::new();
    for _ in 0..4 {
        senders.push(Client::connect(&url).await);
    }
    for round in 0..5 {
        for (k, receiver) in receivers.iter_mut().enumerate() {
            let sender = &mut senders[(k + round) % 4];
            let text = format!("round {round} to {k}");
            assert_eq!(sender.deliver(&format!("key-{k}"), json!(text)).await, 1);
            assert_eq!(receiver.recv_text().await, text);
        }
    }
    // The connections did land on several relays (else this proves little).
    let busy = (0..PROCESSES)
        .filter(|n| {
            supervisor
                .log(&format!("relay-{n:02}.log"))
                .contains("registered as")
        })
        .count();
    assert!(busy >= 2, "all clients landed on one relay");

    let dir = supervisor.dir.path().to_path_buf();
    drop(supervisor);
    let left = processes_using(&dir);
    assert!(
        left.is_empty(),
        "still running after supervisord stopped: {left:?}"
    );
}
