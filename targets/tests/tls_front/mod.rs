//! A TLS front for the machine's Docker Engine, as `dockerd --tlsverify -H tcp://…` would
//! serve it: `socat OPENSSL-LISTEN` with a server certificate and client verification,
//! forwarding to `/var/run/docker.sock`. Certificates are made by `openssl` per test.
//!
//! [`Certs::new`] writes, into a temporary directory: a CA (`ca.pem`), a server certificate
//! for 127.0.0.1 and localhost (`server-cert.pem`), one for another name only
//! (`wrongname-cert.pem`), a client certificate (`cert.pem`, `key.pem`: the layout of
//! `DOCKER_CERT_PATH`), and a second CA (`other-ca.pem`) with a client certificate of its own
//! (`other-cert.pem`, `other-key.pem`). [`Front`] runs socat, optionally inside a network
//! namespace (`ip netns exec NAME`), and kills it when dropped.
//!
//! Needs `openssl` and `socat` (`apt-get install openssl socat`); a missing binary is a loud
//! failure. Depends only on std and `tempfile`, so the end-to-end tests include it with
//! `#[path = "../targets/tests/tls_front/mod.rs"] mod tls_front;`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a command, panicking with its output when it fails.
fn run(program: &str, args: &[&str], dir: &Path) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}; install it (`apt-get install openssl socat`)"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The certificates of one test.
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    pub fn new() -> Certs {
        let dir = tempfile::Builder::new().prefix("rivet-tls-").tempdir().expect("temporary directory");
        let d = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        for (ca, cn) in [("ca", "rivetctl test CA"), ("other-ca", "another CA")] {
            let key = format!("{ca}-key.pem");
            let cert = format!("{ca}.pem");
            let subject = format!("/CN={cn}");
            let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subject, "-keyout", &key, "-out", &cert];
            args.extend(ec);
            args.extend([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            run("openssl", &args, d);
        }
        // (file prefix, signing CA, extensions)
        let leaves = [
            ("server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
            ("wrongname", "ca", "subjectAltName=DNS:engine.example\nextendedKeyUsage=serverAuth\n"),
            ("client", "ca", "extendedKeyUsage=clientAuth\n"),
            ("other", "other-ca", "extendedKeyUsage=clientAuth\n"),
        ];
        for (name, ca, extensions) in leaves {
            let key = format!("{name}-key.pem");
            let csr = format!("{name}.csr");
            let cert = format!("{name}-cert.pem");
            let ext = format!("{name}.ext");
            std::fs::write(d.join(&ext), extensions).unwrap();
            let subject = format!("/CN={name}");
            let mut args = vec!["req", "-new", "-subj", &subject, "-keyout", &key, "-out", &csr];
            args.extend(ec);
            run("openssl", &args, d);
            let ca_cert = format!("{ca}.pem");
            let ca_key = format!("{ca}-key.pem");
            run(
                "openssl",
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &ca_cert,
                    "-CAkey",
                    &ca_key,
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                    "-out",
                    &cert,
                ],
                d,
            );
        }
        std::fs::rename(d.join("client-cert.pem"), d.join("cert.pem")).unwrap();
        std::fs::rename(d.join("client-key.pem"), d.join("key.pem")).unwrap();
        Certs { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A free port on 127.0.0.1 (of this namespace).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A socat process forwarding 127.0.0.1:`port` to the engine's socket.
pub struct Front {
    child: Child,
    pub port: u16,
}

impl Front {
    /// TLS with `server` (`"server"` or `"wrongname"`) as the certificate, clients verified
    /// against `ca.pem`; run through `wrapper` (e.g. `ip netns exec NAME`), if any.
    pub fn tls(certs: &Certs, server: &str, wrapper: &[&str]) -> Front {
        let port = free_port();
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},cafile={},verify=1",
            certs.path(&format!("{server}-cert.pem")).display(),
            certs.path(&format!("{server}-key.pem")).display(),
            certs.path("ca.pem").display(),
        );
        Front::start(port, &listen, wrapper)
    }

    /// Plain TCP (what `dockerd -H tcp://` without TLS serves).
    pub fn plain(wrapper: &[&str]) -> Front {
        let port = free_port();
        Front::start(port, &format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"), wrapper)
    }

    fn start(port: u16, listen: &str, wrapper: &[&str]) -> Front {
        let mut argv: Vec<&str> = wrapper.to_vec();
        argv.extend(["socat", listen, "UNIX-CONNECT:/var/run/docker.sock"]);
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run socat: {err}; install it (`apt-get install socat`)"));
        let mut front = Front { child, port };
        // Ready when a TCP connection is accepted (from the same namespace).
        let target = format!("TCP:127.0.0.1:{port}");
        let start = Instant::now();
        loop {
            let mut probe: Vec<&str> = wrapper.to_vec();
            probe.extend(["socat", "-u", "OPEN:/dev/null", &target]);
            let ok = Command::new(probe[0])
                .args(&probe[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return front;
            }
            if let Ok(Some(status)) = front.child.try_wait() {
                panic!("socat {listen} exited at start: {status}");
            }
            assert!(start.elapsed() < Duration::from_secs(10), "socat did not listen on {port} within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
