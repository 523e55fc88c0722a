# The kaiabc binary in a small runtime image. Multi-stage: the Rust toolchain and the build
# cache stay in the first stage.
FROM rust:1.95-bookworm AS build
# librdkafka and zstd are built from source by their crates.
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin kaiabc \
    && cp target/release/kaiabc /usr/local/bin/kaiabc

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /data kaiabc \
    && mkdir -p /data && chown kaiabc /data
COPY --from=build /usr/local/bin/kaiabc /usr/local/bin/kaiabc
USER kaiabc
WORKDIR /data
ENV KAIABC_HTTP=0.0.0.0:8000 KAIABC_LAKE=/data/lake KAIABC_STATE_DIR=/data/state
EXPOSE 8000
VOLUME /data
HEALTHCHECK --interval=10s --timeout=3s --retries=5 CMD curl -fsS http://127.0.0.1:8000/v1/health || exit 1
ENTRYPOINT ["kaiabc"]
CMD ["run"]
