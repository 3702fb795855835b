# keywarden as a container image: a static binary in an otherwise empty
# image, run as PID 1 in front of the agent:
#
#   docker build -t keywarden .                               # builds from source
#   docker build --target agent-example -t keywarden-agent-example .
#   docker run --rm -v "$PWD/examples/configs/secrets/openai_api_key:/run/secrets/openai_api_key:ro" \
#       keywarden-agent-example
#
# An agent image adds its own program on top and keeps the entrypoint:
#
#   FROM keywarden
#   COPY my-agent /usr/bin/my-agent
#   CMD ["my-agent"]                     # runs as `keywarden run -- my-agent`
#
# With no network but a host that has built the binaries already (CI),
# the `prebuilt` stage takes them from the build context instead; unused
# stages are skipped, so the Rust image is never pulled:
#
#   scripts/build-static.sh && cp /bin/busybox target/static/busybox
#   buildah bud --build-arg BINARIES=prebuilt -t keywarden .
#
# scripts/check-image.sh does exactly that, then runs the image's binary as
# PID 1 and checks reaping, signal forwarding and exit codes.

# Which stage supplies /out: `build` (from source) or `prebuilt`.
ARG BINARIES=build

# The static-pie glibc build (scripts/build-static.sh) and, for the
# example agent, Debian's static busybox.
FROM docker.io/library/rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends busybox-static \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/build-static.sh /out/image/usr/bin/keywarden \
 && mkdir -m 1777 /out/image/tmp \
 && install -D -m 0755 /bin/busybox /out/agent/bin/busybox \
 && /bin/busybox --install -s /out/agent/bin

# The same tree from binaries built on the host (see .dockerignore). The
# stage has no shell but busybox. (`--install -s` links every applet to
# /bin/busybox, where the agent image has it.)
FROM scratch AS prebuilt
COPY target/static/busybox /bin/busybox
COPY target/static/keywarden /out/image/usr/bin/keywarden
RUN ["/bin/busybox", "sh", "-euc", "mkdir -p -m 1777 /out/image/tmp; mkdir -p /out/agent/bin; cp /bin/busybox /out/agent/bin/busybox; /bin/busybox --install -s /out/agent/bin"]

FROM ${BINARIES} AS binaries
# (a stage needs an instruction of its own)
LABEL org.opencontainers.image.title="keywarden binaries"

# The example agent: a busybox shell script behind keywarden, with a
# registry whose one secret is a mounted file (a Docker or Kubernetes
# secret at /run/secrets/openai_api_key).
FROM scratch AS agent-example
COPY --from=binaries /out/image/ /
COPY --from=binaries /out/agent/ /
COPY examples/agent/agent.sh /usr/bin/agent
COPY examples/agent/secrets-registry.yaml examples/agent/secrets-policy.json /etc/keywarden/
ENV PATH=/usr/bin:/bin \
    KEYWARDEN_ENV=prod \
    KEYWARDEN_REGISTRY=/etc/keywarden/secrets-registry.yaml \
    KEYWARDEN_POLICY=/etc/keywarden/secrets-policy.json
ENTRYPOINT ["keywarden", "run", "--"]
CMD ["agent"]

# The image itself (the default target): keywarden and an empty /tmp
# (1777) for the sockets' private folders; nothing else.
FROM scratch AS keywarden
COPY --from=binaries /out/image/ /
ENV PATH=/usr/bin
ENTRYPOINT ["keywarden", "run", "--"]
