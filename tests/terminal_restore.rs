//! A panic on the UI thread must leave the user's terminal usable: the panic
//! hook leaves the alternate screen (and raw mode) before the message prints.
//! Runs the real binary under a pseudo-terminal (`script` from util-linux).
use std::process::Command;

#[test]
fn terminal_is_restored_after_a_panic() {
    if Command::new("script").arg("--version").output().is_err() {
        panic!("`script` (util-linux) is needed to give the dashboard a terminal");
    }
    let bin = env!("CARGO_BIN_EXE_qscope");
    let dir = tempfile::tempdir().expect("tmp");
    let cmd = format!(
        "stty cols 120 rows 40; {bin} dashboard --results {}",
        dir.path().display()
    );
    let out = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env("QSCOPE_TEST_PANIC", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&out.stdout);
    let enter = text
        .find("\x1b[?1049h")
        .expect("entered the alternate screen");
    let leave = enter
        + text[enter..]
            .find("\x1b[?1049l")
            .expect("left the alternate screen");
    let message = text
        .find("deliberate panic")
        .expect("panic message printed");
    assert!(
        enter < leave && leave < message,
        "restore must come before the panic message"
    );
    assert!(!out.status.success(), "a panic exits non-zero");
}
