# syntax=docker/dockerfile:1
# Build: docker build -t imggo-receiver .   Run: see docker-compose.yml.

# cargo-chef splits dependency compilation into its own cached layer: editing
# src/ does not rebuild the ~300 dependencies.
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.73
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin imggo-receiver
COPY . .
RUN cargo build --release --locked --bin imggo-receiver
# The runtime image has no shell to create its data directory: make it here.
RUN mkdir -p /out/data

# distroless/cc: glibc and CA certificates, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
WORKDIR /app
# Migrations and defaults are compiled into the binary; the defaults file is
# shipped beside it for operators to read.
COPY --from=builder /app/target/release/imggo-receiver /usr/local/bin/imggo-receiver
COPY config/default.toml /app/config/default.toml
# ./data (the spool's default place, spool.path = data/spool.db) must be
# writable by the non-root user; mount a volume here to keep it.
COPY --from=builder --chown=65532:65532 /out/data /app/data
# UID 65532 ("nonroot"), never root.
USER 65532:65532
ENV IMGGO__SERVER__BIND=0.0.0.0:8080
EXPOSE 8080
STOPSIGNAL SIGTERM
# File descriptors (`nofile`) are the runtime's to set, not the image's:
# `docker run --ulimit nofile=16384:16384`, Compose `ulimits` (see
# docker-compose.yml). At start-up the receiver raises its soft limit to the
# hard one and sizes its connection caps from it (`file descriptors` line).
# The binary probes its own /healthz: distroless has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=40s --retries=3 \
  CMD ["/usr/local/bin/imggo-receiver", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/imggo-receiver"]
CMD ["serve"]
