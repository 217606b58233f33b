//! The compiled binary, run as a user would: a command in a working
//! directory with only the environment given, a `serve` whose log lines
//! can be awaited, and `/metrics` scraped from it.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{secret_env, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_imggo-receiver");

pub fn command(dir: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).env("RUST_LOG", "info");
    for (k, _) in std::env::vars() {
        if k.starts_with("IMGGO") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    // Tests run side by side: the Results API's fixed default port is off
    // unless a test gives it one (`env` wins).
    cmd.env("IMGGO__API__BIND", "");
    cmd.envs(env.iter().cloned());
    cmd
}

/// [`command`] run with soft and hard `RLIMIT_NOFILE` both `limit` (the
/// server raises soft to hard: a low hard limit is what makes it small).
pub fn command_with_nofile(dir: &Path, env: &[(String, String)], limit: u32) -> Command {
    let plain = command(dir, env);
    let mut cmd = Command::new("sh");
    cmd.current_dir(dir)
        .arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(BIN);
    for (k, v) in plain.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `serve` whose stderr is collected line by line.
pub struct Server {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    pub fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .arg("serve")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle` (the server says when it listens).
    pub fn wait_for(&mut self, needle: &str) {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(e) => panic!(
                    "no `{needle}` in server output ({e}):\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Sends `signal` and waits at most `within` for the process to exit
    /// (its stderr closes when it does); `None` when it is still running.
    pub fn signal_and_wait(
        &mut self,
        signal: nix::sys::signal::Signal,
        within: Duration,
    ) -> Option<(std::process::ExitStatus, String)> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
            }
        }
        let status = self.child.wait().unwrap();
        Some((status, self.seen.join("\n")))
    }

    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        // The reader thread may still hold lines the child wrote before it
        // exited; the channel closes when that thread reaches EOF.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(line);
        }
        (status, self.seen.join("\n"))
    }
}

/// Runs a command that must succeed; its stderr is the failure message.
pub fn run_ok(cmd: Command, args: &[&str]) -> Output {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A test that fails mid-way must not leave its server running.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run(mut cmd: Command, args: &[&str]) -> Output {
    cmd.args(args).output().unwrap()
}

/// The value of one sample in Prometheus text output (0 when absent).
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// The env of a `serve` on `db`, listening on `port`, with `/metrics` on `admin`.
pub fn serve_env(db: &TestDb, port: u16, admin: u16) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = secret_env(&db.url).into_iter().collect();
    env.extend([
        ("IMGGO__SERVER__BIND".into(), format!("127.0.0.1:{port}")),
        ("IMGGO__ADMIN__BIND".into(), format!("127.0.0.1:{admin}")),
    ]);
    env
}

pub async fn scrape(admin: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Scrapes until `done` holds for the metrics text (bounded).
pub async fn metrics_until(admin: u16, what: &str, done: impl Fn(&str) -> bool) -> String {
    super::eventually(what, || async {
        let text = scrape(admin).await;
        done(&text).then_some(text)
    })
    .await
}
