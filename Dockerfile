# syntax=docker/dockerfile:1
# The attache image: a static-ish Rust binary on distroless (glibc and
# libgcc, CA certificates, no shell, no package manager), running as the
# unprivileged user 65532.
#
#   docker build -t attache:dev .
#   docker run --rm -v "$PWD/config/examples/shared-network.toml:/etc/attache/attache.toml:ro" \
#       -p 127.0.0.1:6379:6379 -p 127.0.0.1:9901:9901 attache:dev
#
# The bundled /etc/attache/attache.toml is config/attache.toml, which listens
# on the container's loopback: fine as a sidecar, where Kubernetes mounts its
# own config over it (k8s/), unreachable through `docker run -p`, hence the
# shared-network example above.

# Stable Rust (the workspace needs >= 1.85, its rust-version), on the same
# Debian release as the runtime image, so the binary's glibc matches.
FROM rust:1-bookworm AS chef
# cargo-chef turns the workspace's manifests into a recipe, so dependencies
# build in a layer of their own that only Cargo.toml / Cargo.lock changes
# invalidate, whatever the workspace members are.
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src
# No debug info in the image's binary (the repository's release profile
# keeps some for profiling). Set for both the dependency and the final build,
# so the cached dependencies match.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --bin attache --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin attache

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/attache /usr/local/bin/attache
COPY config/attache.toml /etc/attache/attache.toml
USER 65532:65532
# Redis (6379) and HTTP (8080) listeners, and the admin listener (9901:
# probes, /metrics, /quitquitquit). Which of them listen, and where, is the
# config's choice.
EXPOSE 6379 8080 9901
ENTRYPOINT ["/usr/local/bin/attache"]
CMD ["run", "--config", "/etc/attache/attache.toml"]
