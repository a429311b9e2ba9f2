//! Helpers shared by the tests that run the real binary.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Spawns a prepared `backroom serve … --listen 127.0.0.1:0` and answers the child and the
/// base URL it printed.
pub fn spawn_serve(cmd: &mut Command) -> (Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("a first line");
    let url = line.trim().strip_prefix("backroom listening on ").unwrap_or_else(|| panic!("got {line:?}")).to_owned();
    (child, url)
}
