//! The shipped environment files (debian/notify-relay.default, which the package installs
//! as /etc/default/notify-relay, and systemd/notify-relay.env) with every commented-out
//! setting switched on, read by systemd's own parser (see `common::systemd_environment`),
//! start the real relay with exactly those variables: a comment left at the end of a
//! setting's line would become part of its value (EnvironmentFile= has no trailing
//! comments) and make the relay refuse to start.
//! supervisor/notify-relay.conf has no environment file: its settings are flags.

mod common;

use std::path::Path;
use std::process::Command;

use common::{free_port, systemd_environment, RelayProcess};

/// The environment files an operator edits.
const SHIPPED: [&str; 2] = ["debian/notify-relay.default", "systemd/notify-relay.env"];

/// `text` with every commented-out setting (`# NAME=value`) switched on.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|line| {
            let setting = line.trim_start_matches(['#', ' ']);
            let is_setting = setting.split_once('=').is_some_and(|(name, _)| {
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            });
            if is_setting {
                format!("{setting}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

/// A self-signed certificate for 127.0.0.1 (not a CA, as the README says to make one) and
/// its key, PEM.
fn certificate() -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let cert = params.self_signed(&key).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

/// The variables with the port made free and the example paths pointed at real files in
/// `dir`; whether TLS is on. A path setting the test does not know fails it: it must be
/// taught what such a file holds.
fn runnable(vars: Vec<(String, String)>, dir: &Path) -> (Vec<(String, String)>, bool) {
    let (cert, key) = certificate();
    let mut tls = false;
    let vars = vars
        .into_iter()
        .map(|(name, value)| {
            if name == "NOTIFY_RELAY_PORT" {
                return (name, free_port().to_string());
            }
            // A value with a space is no clean path: left as it is, for the relay to judge.
            if !value.starts_with('/') || value.contains(char::is_whitespace) {
                return (name, value);
            }
            let contents = match name.as_str() {
                "NOTIFY_RELAY_AUTH_SECRET_FILE" => "a secret for the test\n",
                "NOTIFY_RELAY_PUBLISH_TOKEN_FILE" => "a-publish-token\n",
                "NOTIFY_RELAY_TLS_CERT" => {
                    tls = true;
                    &cert
                }
                "NOTIFY_RELAY_TLS_KEY" => &key,
                _ => panic!("{name}={value}: what should the test put in that file?"),
            };
            let path = dir.join(name.to_ascii_lowercase());
            std::fs::write(&path, contents).expect("write setting file");
            (name, path.display().to_string())
        })
        .collect();
    (vars, tls)
}

/// GET /healthz with curl (https:// trusting the test's certificate when TLS is on).
fn healthz(relay: &RelayProcess, cert: Option<&Path>) -> String {
    let mut curl = Command::new("curl");
    curl.args(["--silent", "--show-error", "--max-time", "10"]);
    let url = match cert {
        Some(cert) => {
            curl.arg("--cacert").arg(cert);
            format!("https://{}/healthz", relay.addr)
        }
        None => format!("http://{}/healthz", relay.addr),
    };
    let out = curl
        .arg(&url)
        .output()
        .expect("curl runs (scripts/test.sh installs it)");
    assert!(out.status.success(), "{url}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_shipped_setting_switched_on_starts_the_relay() {
    for shipped in SHIPPED {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(shipped);
        let text = std::fs::read_to_string(&path).expect("shipped environment file");
        let all_on = uncommented(&text);
        let vars = systemd_environment(&all_on);
        assert!(
            vars.iter()
                .filter(|(name, _)| name.starts_with("NOTIFY_RELAY_"))
                .count()
                >= 5,
            "{shipped}: {vars:?}"
        );
        // Values the relay would take as they are (a greeting, an origin) must not end
        // in a comment either.
        let commented: Vec<_> = vars
            .iter()
            .filter(|(_, value)| value.contains('#'))
            .cloned()
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let (vars, tls) = runnable(vars, dir.path());
        let relay =
            RelayProcess::spawn_with_only_env(Path::new(env!("CARGO_BIN_EXE_notify-relay")), &vars);
        assert!(relay.addr.ip().is_loopback(), "{shipped}: {}", relay.addr);
        let cert = tls.then(|| dir.path().join("notify_relay_tls_cert"));
        assert_eq!(healthz(&relay, cert.as_deref()).trim(), "ok", "{shipped}");
        assert!(
            commented.is_empty(),
            "{shipped}: a comment became part of a value: {commented:?}"
        );
    }
}
