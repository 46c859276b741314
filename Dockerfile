# mailmerge in a container (deploy/kubernetes/, docs/scaling.md).
#
# Build stage: the pinned toolchain on the same Debian release as the runtime, so the
# glibc-linked binary finds the glibc it was built against (musl is not used: SQLite and ring
# build their C parts with the system compiler). Runtime: debian-slim, which also gives the
# Kubernetes manifests the /bin/sh they use to treat exit 1 ("some rows not delivered") as a
# finished shard.
#
#   docker build -t registry.example.com/mailmerge:latest .

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs benches/delivery.rs benches/render.rs \
    && cargo fetch --locked
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin mailmerge \
    && install -D -m 0755 target/release/mailmerge /out/mailmerge

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 65532 --home-dir /state --no-create-home mailmerge
COPY --from=build /out/mailmerge /usr/local/bin/mailmerge
USER 65532
ENTRYPOINT ["mailmerge"]
CMD ["--help"]
