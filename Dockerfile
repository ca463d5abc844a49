# syntax=docker/dockerfile:1.7
# ztna-edge: one image, three commands (relay, connector, agent).
#   docker build -t ztna-edge .
#   docker run --rm --read-only --tmpfs /tmp -p 4433:4433/udp -p 9090:9090 \
#     -v "$PWD/certs/relay.pem:/etc/ztna/tls/relay.pem:ro" \
#     -v "$PWD/certs/relay.key:/etc/ztna/tls/relay.key:ro" \
#     -v "$PWD/certs/ca.pem:/etc/ztna/tls/ca.pem:ro" \
#     -v "$PWD/relay.json:/etc/ztna/relay.json:ro" ztna-edge
#   (mount only ca.pem and the component's own pair: never the certs folder, never the CA key)
#   docker run ... ztna-edge /usr/local/bin/ztna-connector --config /etc/ztna/connector.json
#
# The quiche addon is published for linux-x64 only (no linux-arm64 package of
# @matrixai/quic 1.2.12), so the image is built for linux/amd64.

FROM denoland/deno:2.9.6 AS build
WORKDIR /src
ENV DENO_DIR=/deno-dir
# Dependencies first, exactly as locked: this layer is cached until deno.json/deno.lock change.
COPY deno.json deno.lock ./
RUN ["deno", "install", "--frozen"]
COPY shared/ shared/
COPY relay/ relay/
COPY connector/ connector/
COPY agent/ agent/
RUN ["deno", "check", "--frozen", "relay/main.ts", "connector/main.ts", "agent/main.ts"]
# Permissions are baked into each binary (never -A). Config and certificates live under
# /etc/ztna; the compiled binary extracts its quiche addon to $TMPDIR (/tmp); --allow-ffi
# reaches that and the libc file the batched UDP socket calls. The relay answers peers
# anywhere; connector and agent destinations come from their config at run time, so their network scope is enforced around the container
# (deploy/k8s NetworkPolicy, deploy/systemd IPAddressAllow) rather than baked in here. The
# connector lists network interfaces to bind each backend socket to the routed address.
RUN ["deno", "compile", "--frozen", "--cached-only", "--unstable-net", "--no-prompt", \
     "--allow-net", "--allow-env", "--allow-read=/etc/ztna,/tmp", "--allow-ffi=/tmp,/lib/x86_64-linux-gnu/libc.so.6", \
     "--output", "/out/ztna-relay", "relay/main.ts"]
RUN ["deno", "compile", "--frozen", "--cached-only", "--unstable-net", "--no-prompt", \
     "--allow-net", "--allow-env", "--allow-read=/etc/ztna,/tmp", "--allow-ffi=/tmp,/lib/x86_64-linux-gnu/libc.so.6", \
     "--allow-sys=networkInterfaces", \
     "--output", "/out/ztna-connector", "connector/main.ts"]
RUN ["deno", "compile", "--frozen", "--cached-only", "--unstable-net", "--no-prompt", \
     "--allow-net", "--allow-env", "--allow-read=/etc/ztna,/tmp", "--allow-ffi=/tmp,/lib/x86_64-linux-gnu/libc.so.6", \
     "--output", "/out/ztna-agent", "agent/main.ts"]

# glibc, libgcc, ca-certificates, /etc/passwd with nonroot (65532); no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build --chown=0:0 --chmod=0755 /out/ /usr/local/bin/
ENV TMPDIR=/tmp
USER 65532:65532
WORKDIR /home/nonroot
# QUIC (relay), metrics/health listeners: relay 9090, connector 9091, agent 9092.
EXPOSE 4433/udp 9090/tcp 9091/tcp 9092/tcp
ENTRYPOINT []
CMD ["/usr/local/bin/ztna-relay", "--config", "/etc/ztna/relay.json"]
