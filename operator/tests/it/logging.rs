//! What the operator writes to a log that is not a terminal (`kubectl logs`, a file): plain
//! text without colour escapes. No server needed: an unreachable API server makes it log.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn text_logs_off_a_terminal_have_no_colour_escapes() {
    let directory = std::env::temp_dir().join(format!("rtdp-logging-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("a temporary directory");
    // A kubeconfig whose server refuses connections: every request fails and is logged.
    let port = rtdp_test_support::free_port();
    let kubeconfig = directory.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: nowhere\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: nowhere\n  context:\n    cluster: nowhere\n    user: nobody\ncurrent-context: nowhere\nusers:\n- name: nobody\n  user: {{}}\n"
        ),
    )
    .expect("writing the kubeconfig");
    let log = directory.join("operator.log");
    let file = std::fs::File::create(&log).expect("the log file");
    let mut operator = Command::new(env!("CARGO_BIN_EXE_rtdp-operator"))
        .args([
            "--log-format",
            "text",
            "--metrics-address",
            &format!("127.0.0.1:{}", rtdp_test_support::free_port()),
            "--lease-name",
            "logging-test",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("starting the operator");
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("WARN") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    operator.kill().ok();
    operator.wait().ok();
    assert!(
        text.contains("WARN") && text.contains("leader lease"),
        "the operator logs its failed attempts at the Lease: {text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no ANSI escape codes off a terminal: {text:?}"
    );
    std::fs::remove_dir_all(&directory).ok();
}
