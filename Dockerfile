# syntax=docker/dockerfile:1
#
# One image, three binaries: core-svc, gateway and archiver, in
# /usr/local/bin. The command picks the binary:
#
#   docker build -t chat:local .
#   docker run chat:local                    # gateway (the default command)
#   docker run chat:local core-svc           # the gRPC core service
#   docker run chat:local core-svc migrate   # run the migrations, then exit
#   docker run chat:local archiver
#
# Stages: `chef` (the toolchain, the C build tools and cargo-chef),
# `planner` (the dependency recipe), `builder` (dependencies, then the
# workspace), `web` (the browser client, built with Node.js) and the
# runtime image, built from scratch.
#
# Why cargo-chef for the dependency cache: `cargo chef cook` builds every
# dependency from recipe.json, which holds only the manifests and
# Cargo.lock, so that layer is rebuilt only when they change, and it is an
# ordinary image layer: any builder that has the layer cache (a CI cache
# exported with --cache-to included) reuses it. BuildKit cache mounts keep
# their cache on one builder only and never in a layer; a hand-written
# dummy-source layer would have to mirror the workspace's eight members and
# their build scripts by hand and go stale as they change.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie
ARG NODE_VERSION=22

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
# librdkafka is built from source by rdkafka-sys (its bundled configure and
# make build); the C/C++ toolchain, make, perl and pkg-config come with this
# image, zlib's headers are added for librdkafka's compression, and cmake
# for rdkafka's cmake build should the workspace switch to it.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cmake g++ make perl pkg-config zlib1g-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# The same package selection in `cook` and `build`, so that the features
# cargo unifies, and so the compiled dependencies, are the same in both.
# Only the three shipped binaries: the load generator (`loadgen`) is left
# out of the image and of its build.
ARG PACKAGES="-p core-svc -p gateway -p archiver"
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --bins ${PACKAGES} --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bins ${PACKAGES}

# The browser client: static files, which the gateway serves at / from
# WEB_DIR. Only its sources and lock file are copied in, so the npm layer
# is rebuilt only when the lock changes.
FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

# The runtime's root file system, assembled here where there is a shell:
# the binaries, the shared libraries they load (found by ldd, so taken from
# the very glibc they were linked against: no version skew between build
# and runtime, on any architecture), CA certificates, a name-service
# configuration, a nonroot user (uid 65532, as distroless images use) and
# a /tmp. The shipped binaries lose the release profile's line tables
# (about 205 of the three's 250 MB), not their symbols, so a backtrace
# still names every function; then each is started once in the new root,
# as the image's user, to prove it finds everything it loads.
RUN set -eu; \
    mkdir -p /rootfs/usr/local/bin /rootfs/etc/ssl/certs /rootfs/tmp; \
    for bin in core-svc gateway archiver; do \
      objcopy --strip-debug "target/release/$bin" "/rootfs/usr/local/bin/$bin"; \
    done; \
    for bin in core-svc gateway archiver; do ldd "/rootfs/usr/local/bin/$bin"; done \
      | grep -o '/[^ ]*' | sort -u | while read -r lib; do \
      mkdir -p "/rootfs$(dirname "$lib")"; \
      cp -L "$lib" "/rootfs$lib"; \
    done; \
    cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/; \
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >/rootfs/etc/passwd; \
    printf 'root:x:0:\nnonroot:x:65532:\n' >/rootfs/etc/group; \
    printf 'hosts: files dns\n' >/rootfs/etc/nsswitch.conf; \
    chmod 1777 /rootfs/tmp; \
    for bin in core-svc gateway archiver; do \
      chroot --userspec=65532:65532 /rootfs "/usr/local/bin/$bin" --help >/dev/null; \
    done

# No shell, no package manager: the binaries, their libraries, the few
# files above and the web client (about 50 MB in all).
FROM scratch AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="chat" \
      org.opencontainers.image.description="Messenger backend: core-svc (gRPC), gateway (REST and WebSocket) and archiver (Kafka to PostgreSQL) in one image; the command picks the binary" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}"
COPY --from=builder /rootfs/ /
COPY --from=web /web/dist/ /usr/share/chat/web/
ENV PATH=/usr/local/bin WEB_DIR=/usr/share/chat/web
USER 65532:65532
# gateway :8080 (REST, WebSocket, /metrics), core-svc :50051 (gRPC,
# grpc-web) and :9090 (/metrics), archiver :8081 (/healthz, /readyz,
# /metrics).
EXPOSE 8080 50051 9090 8081
# A HEALTHCHECK without a shell: the default command's own `healthcheck`
# subcommand, which asks the local process's health endpoint (found from
# the same listen-address variable). Running another binary, give it its
# own (`--health-cmd "core-svc healthcheck"`, or compose's `healthcheck:`,
# as compose.yaml does); Kubernetes ignores this and uses its probes.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["gateway", "healthcheck"]
CMD ["gateway"]
