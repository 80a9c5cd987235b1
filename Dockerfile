# accord daemon with the example plugins, for use with docker-compose.yml.
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN rustup target add wasm32-wasip2
COPY . .
RUN cargo build --release -p accord \
 && ./target/release/accord plugin build --out /out/plugins \
 && cp target/release/accord /out/accord

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* && useradd --system --create-home accord
COPY --from=build /out/accord /usr/local/bin/accord
COPY --from=build /out/plugins /var/lib/accord/plugins
COPY examples /etc/accord/examples
RUN mkdir -p /var/lib/accord && chown -R accord /var/lib/accord
USER accord
ENV ACCORD_PLUGINS_DIR=/var/lib/accord/plugins \
    ACCORD_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["accord"]
CMD ["run", "--config", "/etc/accord/examples/docker.toml"]
