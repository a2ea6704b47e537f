//! Real container images of the programs, built here without a registry: a distroless-style base
//! made from Debian's packages with mmdebstrap (glibc, libgcc, CA certificates, time zones and a
//! `nonroot` user 65532; no shell, no package manager), imported into podman, and the project's
//! own Dockerfile building the three images from binaries the harness built. Podman keeps its
//! storage and settings in a temporary directory of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::binaries::binary;
use crate::tools::{container_tool, output_of};

/// The tag every locally built image gets.
pub const TAG: &str = "test";
/// Where the local images live (`localhost/auth-platform/<name>:test`).
pub const REGISTRY: &str = "localhost/auth-platform";

/// A podman whose storage, runtime state and settings live in one temporary directory.
pub struct Podman {
    dir: PathBuf,
}

impl Podman {
    /// A fresh podman environment: runc (crun fails on this host's cgroups), cgroupfs, and open
    /// file and process limits for the containers.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("auth-platform-podman-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        std::fs::write(
            dir.join("containers.conf"),
            "[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             [containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n",
        )
        .expect("containers.conf");
        std::fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\nrunroot = \"{0}/run\"\ngraphroot = \"{0}/graph\"\n",
                dir.display()
            ),
        )
        .expect("storage.conf");
        Self { dir }
    }

    /// `program` (podman or buildah) with this environment's settings.
    pub fn command(&self, program: &str) -> Command {
        let mut command = container_tool(program);
        command
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("TMPDIR", &self.dir);
        command
    }

    /// The directory this environment owns (for files to mount into containers).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the distroless-style base image and returns its name.
    pub fn build_base(&self) -> String {
        let tar = self.dir.join("base.tar");
        let hook = "printf 'root:x:0:0:root:/root:/sbin/nologin\\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\\n' > \"$1/etc/passwd\"; \
                    printf 'root:x:0:\\nnonroot:x:65532:\\n' > \"$1/etc/group\"; \
                    mkdir -p \"$1/home/nonroot\" \"$1/tmp\"; chmod 1777 \"$1/tmp\"; chown 65532:65532 \"$1/home/nonroot\"";
        output_of(
            container_tool("mmdebstrap")
                .args([
                    "--quiet",
                    "--variant=extract",
                    "--include=libc6,libgcc-s1,ca-certificates,tzdata",
                ])
                .arg(format!("--customize-hook={hook}"))
                .arg("bookworm")
                .arg(&tar),
        );
        let name = format!("{REGISTRY}/base:{TAG}");
        output_of(self.command("podman").arg("import").arg(&tar).arg(&name));
        name
    }

    /// Builds the three programs' images with the project's Dockerfile from the harness's own
    /// binaries (stripped of debug information) on `base`, plus the demo app's; returns the
    /// directory used as build context.
    pub fn build_images(&self, base: &str) {
        let context = self.dir.join("context");
        std::fs::create_dir_all(context.join("bin")).expect("the context directory");
        for program in ["auth-server", "token-verifier", "migrator", "echo-app"] {
            output_of(
                container_tool("strip")
                    .arg("-o")
                    .arg(context.join("bin").join(program))
                    .arg(binary(program)),
            );
        }
        let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile");
        for target in ["auth-server", "token-verifier", "migrator"] {
            output_of(
                self.command("buildah")
                    .args(["bud", "--quiet", "--layers=false"])
                    .args(["--build-arg", "BINARIES=prebuilt"])
                    .arg("--build-arg")
                    .arg(format!("RUNTIME_IMAGE={base}"))
                    .args(["--build-arg", "REVISION=test"])
                    .args(["--target", target])
                    .arg("-t")
                    .arg(format!("{REGISTRY}/{target}:{TAG}"))
                    .arg("-f")
                    .arg(&dockerfile)
                    .arg(&context),
            );
        }
        // The demo app: the same base, the echo binary as its entrypoint.
        let demo = context.join("Demo.Dockerfile");
        std::fs::write(
            &demo,
            format!(
                "FROM {base}\nCOPY bin/echo-app /usr/local/bin/echo-app\nUSER 65532:65532\n\
                 ENTRYPOINT [\"/usr/local/bin/echo-app\"]\n"
            ),
        )
        .expect("the demo's Dockerfile");
        output_of(
            self.command("buildah")
                .args(["bud", "--quiet", "-t"])
                .arg(format!("{REGISTRY}/example-app:{TAG}"))
                .arg("-f")
                .arg(&demo)
                .arg(&context),
        );
    }

    /// An image's configuration (`podman image inspect`).
    pub fn inspect(&self, image: &str) -> serde_json::Value {
        let text = output_of(self.command("podman").args(["image", "inspect", image]));
        serde_json::from_str::<serde_json::Value>(&text).expect("JSON")[0].clone()
    }
}

impl Default for Podman {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .command("podman")
            .args(["rm", "--all", "--force", "--time", "1"])
            .output();
        let _ = self
            .command("podman")
            .args(["system", "reset", "--force"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
