# syntax=docker/dockerfile:1
# Image of hookbus ingest. Build it from the repository root:
#
#   docker build -f deploy/ingest.Dockerfile -t hookbus/ingest:dev .
#
# deploy/processor.Dockerfile differs from this file only in the binary it
# builds, the port and the spool directory, so change both files together.

ARG GO_VERSION=1.26
ARG ALPINE_VERSION=3.22

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src

# go.work lists all four modules, so the go command needs every module's
# go.mod even where this binary uses none of its code. Copying only the module
# files before `go mod download` keeps the download layer cached until a
# dependency changes. The [m] pattern lets a go.sum or go.work.sum be absent:
# a module without dependencies has no go.sum.
COPY go.work go.work.su[m] ./
COPY pkg/go.mod pkg/go.su[m] pkg/
COPY ingest/go.mod ingest/go.su[m] ingest/
COPY processor/go.mod processor/go.su[m] processor/
COPY test/go.mod test/go.su[m] test/
RUN go mod download

COPY pkg/ pkg/
COPY ingest/ ingest/
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags='-s -w' -o /out/ingest ./ingest/cmd/ingest \
    && mkdir -p /out/spool

# The runtime stage is Alpine rather than distroless because the compose
# healthcheck runs inside the container and needs an HTTP client for /readyz:
# BusyBox wget. The binary is static (CGO_ENABLED=0), so it needs no libc.
# amqps:// connections use the CA bundle at /etc/ssl/certs/ca-certificates.crt,
# which Alpine's base image has (package ca-certificates-bundle). The stage
# has no RUN instruction, so a cross-platform build needs no emulation.
FROM alpine:${ALPINE_VERSION}
COPY --from=build /out/ingest /usr/local/bin/ingest
# An empty directory that the user below owns, for HOOKBUS_SPOOL_DIR. A named
# volume mounted there starts with the same owner, so ingest can write its
# spool file. ingest writes no other files.
COPY --from=build --chown=10001:10001 /out/spool /var/lib/hookbus/spool
# A numeric user needs no /etc/passwd entry, and Kubernetes can check it
# against runAsNonRoot.
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ingest"]
