//! Helpers shared by the tests that run the real binary. Each test crate uses some of them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The binary in `dir`, with none of this shell's `BACKROOM_*` settings leaking in.
pub fn backroom(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_backroom"));
    c.current_dir(dir).env("BACKROOM_LOG", "warn");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BACKROOM_") && name != "BACKROOM_LOG" {
            c.env_remove(name);
        }
    }
    c
}

/// Runs `cmd` to its end: exit code, stdout, stderr.
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("backroom runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Spawns a prepared `backroom serve … --listen 127.0.0.1:0` and answers the child and the
/// base URL it printed.
pub fn spawn_serve(cmd: &mut Command) -> (Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("a first line");
    let url = line.trim().strip_prefix("backroom listening on ").unwrap_or_else(|| panic!("got {line:?}")).to_owned();
    (child, url)
}
