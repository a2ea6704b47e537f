//! The workspace's own binaries, built on first use so a test never runs a stale one.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

static BUILT: OnceLock<PathBuf> = OnceLock::new();

/// The path of a workspace binary (`migrator`, `auth-server`, `token-verifier`) of the same
/// profile as this test, built first if cargo runs us (`cargo test` sets `CARGO`).
pub fn binary(name: &str) -> PathBuf {
    let dir = BUILT.get_or_init(build_workspace_binaries);
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "binary `{name}` not found at {}: run `cargo build --workspace --bins`",
        path.display()
    );
    path
}

fn build_workspace_binaries() -> PathBuf {
    // Tests live in target/<profile>/deps, other executables (the benchmark) in target/<profile>,
    // and the workspace binaries in target/<profile>.
    let exe = std::env::current_exe().expect("the executable has a path");
    let parent = exe.parent().expect("an executable lives in a directory");
    let profile_dir = if parent.file_name().is_some_and(|name| name == "deps") {
        parent.parent().expect("deps has a parent").to_path_buf()
    } else {
        parent.to_path_buf()
    };
    let Some(cargo) = std::env::var_os("CARGO") else {
        return profile_dir;
    };
    let target_dir = profile_dir.parent().expect("a profile directory has a parent");
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet", "--workspace", "--bins", "--target-dir"])
        .arg(target_dir);
    match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(other) => {
            build.args(["--profile", other]);
        }
        None => {}
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building the workspace binaries failed");
    profile_dir
}
