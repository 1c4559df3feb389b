# syntax=docker/dockerfile:1
# The one binary, `observastack`, in a small runtime image. Every component of the full stack
# (compose.yaml) runs this image with a different subcommand:
#   docker build -t observastack .
#   docker run --rm observastack --help

# --- build -------------------------------------------------------------------------------
FROM rust:1-slim-bookworm AS builder
WORKDIR /src
# The whole workspace: build scripts embed scenarios/, web/ and docs/ into the binary.
COPY . .
# Cache mounts keep the registry and the target directory between builds (BuildKit); the binary
# is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p observastack \
 && install -m 0755 target/release/observastack /usr/local/bin/observastack

# --- runtime -----------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 observastack \
 && useradd --system --uid 10001 --gid observastack --home-dir /var/lib/observastack \
      --shell /usr/sbin/nologin observastack \
 && mkdir -p /var/lib/observastack/config-state /var/log/observastack /etc/observastack \
 && chown -R observastack:observastack /var/lib/observastack /var/log/observastack
COPY --from=builder /usr/local/bin/observastack /usr/local/bin/observastack
USER observastack:observastack
WORKDIR /var/lib/observastack
# The orchestrator's and `up`'s data directory (task database, state, logs).
ENV OBSERVASTACK_DATA_DIR=/var/lib/observastack
# user path 8000; orders API 8001; panel 8080; admin 8100-8102; agent 8200; loadgen 8300;
# embedded backend 9090 (Prometheus API) and 4318 (OTLP/HTTP)
EXPOSE 8000 8001 8080 8100 8101 8102 8200 8300 9090 4318
ENTRYPOINT ["observastack"]
CMD ["--help"]
