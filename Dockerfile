# syntax=docker/dockerfile:1
# The operator and gateway image: one static `moltmate` (musl, rustls with ring, no OpenSSL)
# on an empty base, running as uid 65532; the Deployment picks `operator` or `gateway`.
#   docker buildx build --platform linux/amd64,linux/arm64 -t <your-registry>/moltmate:0.1.0 --push .
# `make images` builds localhost/moltmates/moltmate:0.1.0 (and the agent image, Dockerfile.sandbox).
#
# The Rust build runs on the build machine's own platform and cross-compiles to each
# target's musl triple, so a two-platform build needs no emulation.

# --- build stage: the same in Dockerfile and Dockerfile.sandbox (tests/packaging.rs checks) ---
FROM --platform=$BUILDPLATFORM rust:1.95-bookworm AS build
# Set by BuildKit per target platform; a plain build without it targets the build machine.
ARG TARGETARCH
# ring is the only C code (its build script needs a C compiler and linker for the target):
# the Debian GCC of the target architecture, cross when it differs from the build machine's.
# The musl targets link statically against Rust's bundled musl, so no musl-gcc is needed.
ENV CC_x86_64_unknown_linux_musl=x86_64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=x86_64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
RUN target_arch="${TARGETARCH:-$(dpkg --print-architecture)}" \
 && case "$target_arch" in \
      amd64) arch=x86_64 ;; \
      arm64) arch=aarch64 ;; \
      *) echo "unsupported target architecture '$target_arch' (amd64 or arm64)" >&2; exit 1 ;; \
    esac \
 && if [ "$target_arch" != "$(dpkg --print-architecture)" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends "gcc-$(echo "$arch" | tr _ -)-linux-gnu" libc6-dev-"$target_arch"-cross \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && rustup target add "$arch-unknown-linux-musl" \
 && echo "$arch" > /rust-arch
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cache mounts keep the crates and compiled dependencies between builds; both Dockerfiles share
# them and build both binaries in one cargo run, so building the two images compiles each
# architecture once: `moltmate` for this image, the lean `moltmate-agent` for the sandbox.
# No default features: the development stand-ins (`moltmate dev`) stay out of the images.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(cat /rust-arch)-unknown-linux-musl" \
 && cargo build --release --locked --no-default-features --bin moltmate --bin moltmate-agent --target "$target" \
 && cp "target/$target/release/moltmate" /moltmate \
 && cp "target/$target/release/moltmate-agent" /moltmate-agent
# --- end of the build stage ---

FROM scratch
LABEL org.opencontainers.image.title="moltmate" \
      org.opencontainers.image.description="Moltmates operator and Telegram gateway (moltmate operator | moltmate gateway)" \
      org.opencontainers.image.licenses="Apache-2.0"
# Root CAs for outbound HTTPS (Telegram, LLM providers, web fetch): the platform verifier reads them.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# The one account, so that tools can map the uid to a name. (Files, not here-documents:
# Debian's buildah and podman do not read those.)
COPY images/passwd /etc/passwd
COPY images/group /etc/group
COPY --from=build /moltmate /moltmate
USER 65532:65532
# 9090: /healthz, /readyz, /metrics (both subcommands); 8081: the gateway's broker for agents.
EXPOSE 9090 8081
ENTRYPOINT ["/moltmate"]
