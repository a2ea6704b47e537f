# The three programs' images, from one file: build with `--target auth-server`, `token-verifier`
# or `migrator`.
#
# With registries (a user's CI): the binaries are compiled in RUST_IMAGE — dependencies in a layer
# of their own, rebuilt only when a manifest or the lockfile changes — and run on RUNTIME_IMAGE, a
# distroless image (glibc, libgcc, CA certificates, time zones; no shell, no package manager).
#
# Without a registry (this repository's tests): `--build-arg BINARIES=prebuilt` copies binaries
# built outside from the context's `bin/`, and RUNTIME_IMAGE is a base made from Debian's packages
# with mmdebstrap (see tests/src/containers.rs).
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARIES=source

FROM ${RUST_IMAGE} AS source
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY auth-core/Cargo.toml auth-core/
COPY auth-server/Cargo.toml auth-server/
COPY token-verifier/Cargo.toml token-verifier/
COPY migrator/Cargo.toml migrator/
COPY tests/Cargo.toml tests/
COPY bench/Cargo.toml bench/
# Empty crates with the real manifests: this layer compiles only the dependencies.
RUN for crate in auth-core auth-server token-verifier migrator tests bench; do \
      mkdir -p "$crate/src" && echo 'fn main() {}' > "$crate/src/main.rs" && touch "$crate/src/lib.rs"; \
    done \
 && cargo build --release --locked -p auth-server -p token-verifier -p migrator \
 && rm -rf auth-core auth-server token-verifier migrator tests bench
COPY . .
# Sources newer than the empty crates' build, so cargo rebuilds the workspace's own crates only.
RUN find auth-core auth-server token-verifier migrator -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p auth-server -p token-verifier -p migrator \
 && mkdir /out \
 && cp target/release/auth-server target/release/token-verifier target/release/migrator /out/

FROM scratch AS prebuilt
COPY bin/ /out/

FROM ${BINARIES} AS binaries

FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/auth-platform/auth-platform
LABEL org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="auth-platform"
# The numeric user of distroless' `nonroot`: Kubernetes' runAsNonRoot can check a number.
USER 65532:65532

FROM runtime AS auth-server
LABEL org.opencontainers.image.title="auth-server" \
      org.opencontainers.image.description="Accounts, sessions and tokens behind an OpenAPI-documented API"
COPY --from=binaries /out/auth-server /usr/local/bin/auth-server
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/auth-server"]

FROM runtime AS token-verifier
LABEL org.opencontainers.image.title="token-verifier" \
      org.opencontainers.image.description="The sidecar that rejects bad and revoked tokens in front of a service"
COPY --from=binaries /out/token-verifier /usr/local/bin/token-verifier
EXPOSE 8181 9191
ENTRYPOINT ["/usr/local/bin/token-verifier"]

FROM runtime AS migrator
LABEL org.opencontainers.image.title="migrator" \
      org.opencontainers.image.description="Applies and checks the PostgreSQL schema (a Kubernetes Job or init container)"
COPY --from=binaries /out/migrator /usr/local/bin/migrator
ENTRYPOINT ["/usr/local/bin/migrator"]
