# podnet-agent image: one static binary on an empty base.
#
#   docker build -t podnet-agent .            # from source, in the official Rust image
#
# Already built a static binary (as CI does; .ci/image)? Put it in an otherwise empty context
# directory and select it instead of the build stage:
#
#   RUSTFLAGS='-C target-feature=+crt-static' \
#     cargo build --release --locked -p podnet-agent --target x86_64-unknown-linux-gnu
#   docker build --build-arg BINARY=prebuilt -f Dockerfile <dir holding podnet-agent>
#
# The binary is static (glibc static-pie): it resolves no names through NSS, so it needs no
# files from a base image.

# Where the binary comes from: `build` (compile here) or `prebuilt` (the context's podnet-agent).
ARG BINARY=build
ARG RUST_VERSION=1.89

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
# .git is not in the context (.dockerignore): the revision comes in as a build argument and
# reaches podnet_build_info{revision} through agent/build.rs.
ARG REVISION=unknown
WORKDIR /src
COPY . .
RUN PODNET_REVISION="${REVISION}" RUSTFLAGS='-C target-feature=+crt-static' \
      cargo build --release --locked -p podnet-agent --target x86_64-unknown-linux-gnu \
 && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/podnet-agent /out/podnet-agent

FROM scratch AS prebuilt
COPY podnet-agent /out/podnet-agent

FROM ${BINARY} AS binary

FROM scratch AS image
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="podnet-agent" \
      org.opencontainers.image.description="Proves, continuously, that every pod on a Kubernetes node is wired into the network" \
      org.opencontainers.image.source="https://github.com/podnet/podnet" \
      org.opencontainers.image.url="https://github.com/podnet/podnet" \
      org.opencontainers.image.documentation="https://github.com/podnet/podnet/blob/main/README.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="podnet" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=binary /out/podnet-agent /podnet-agent
# Root, with only the capabilities the DaemonSet grants (NET_ADMIN, NET_RAW, SYS_ADMIN,
# SYS_PTRACE); see deploy/base/daemonset.yaml.
USER 0:0
EXPOSE 9710
ENTRYPOINT ["/podnet-agent"]
