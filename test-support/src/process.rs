//! Child processes of tests: a binary under test with its output in a log file (killed when
//! dropped, its log printed by the failures that concern it), and command-line tools (kubectl,
//! helm, dev/stack) that must be on PATH.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A child process whose stdout and stderr go to a log file; SIGKILLed when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    what: String,
    /// The log file (stdout and stderr).
    pub log: PathBuf,
}

impl Process {
    /// Spawns `command` with stdin closed and stdout and stderr appended to `log`; `what`
    /// names it in failures ("the runner", "the operator").
    pub fn spawn(what: &str, mut command: Command, log: &Path) -> Self {
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|error| panic!("opening {what}'s log {}: {error}", log.display()));
        let errors = file.try_clone().expect("cloning the log file handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(errors))
            .spawn()
            .unwrap_or_else(|error| panic!("starting {what}: {error}"));
        Self {
            child,
            what: what.to_string(),
            log: log.to_path_buf(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit by itself; fails (with the log) after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self
                .child
                .try_wait()
                .unwrap_or_else(|error| panic!("waiting for {}: {error}", self.what));
            if let Some(status) = exited {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}; log {}:\n{}",
                self.what,
                self.log.display(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM (what Kubernetes does to a pod) and waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM {pid} ({}) failed", self.what);
        self.wait(timeout)
    }

    /// SIGKILL, as a crash would: no chance to finish anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Stdout then stderr of a finished command, for failure messages.
pub fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a tool (feeding `stdin` if given) and returns its output; a tool missing from PATH
/// fails the test with a message that says how to get it.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            panic!(
                "{program} is not on PATH: this test needs it; `eval \"$(dev/stack env)\"` puts the local stack's helm and kubectl on PATH and sets KUBECONFIG (or run `make test`)"
            )
        }
        Err(error) => panic!("running {program}: {error}"),
    };
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("the child's stdin")
            .write_all(input.as_bytes())
            .unwrap_or_else(|error| panic!("writing to {program}'s stdin: {error}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("waiting for {program}: {error}"))
}

/// Fails the test, with the command line and its output, unless the command succeeded.
fn assert_succeeded(program: &str, args: &[&str], output: &Output) {
    assert!(
        output.status.success(),
        "`{program} {}` failed ({}):\n{}",
        args.join(" "),
        output.status,
        output_text(output)
    );
}

/// Runs a tool that must succeed; returns its stdout.
pub fn run_ok(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let output = run(program, args, stdin);
    assert_succeeded(program, args, &output);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `dev/stack ARGUMENTS...` (for instance `down kafka`, `up kafka`); it must succeed.
pub fn dev_stack(arguments: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../dev/stack");
    let output = Command::new(script)
        .args(arguments)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("running {script} {arguments:?}: {error}"));
    assert_succeeded("dev/stack", arguments, &output);
}
