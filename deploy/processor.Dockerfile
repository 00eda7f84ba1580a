# syntax=docker/dockerfile:1
# Image of hookbus processor. Build it from the repository root:
#
#   docker build -f deploy/processor.Dockerfile -t hookbus/processor:dev .
#
# deploy/ingest.Dockerfile differs from this file only in the binary it
# builds, the port and ingest's spool directory, so change both files
# together.

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
COPY processor/ processor/
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags='-s -w' -o /out/processor ./processor/cmd/processor

# The runtime stage is Alpine rather than distroless because the compose
# healthcheck runs inside the container and needs an HTTP client for /readyz:
# BusyBox wget. The binary is static (CGO_ENABLED=0), so it needs no libc.
# amqps:// connections use the CA bundle at /etc/ssl/certs/ca-certificates.crt,
# which Alpine's base image has (package ca-certificates-bundle). The stage
# has no RUN instruction, so a cross-platform build needs no emulation.
FROM alpine:${ALPINE_VERSION}
COPY --from=build /out/processor /usr/local/bin/processor
# A numeric user needs no /etc/passwd entry, and Kubernetes can check it
# against runAsNonRoot. The processor writes no files.
USER 10001:10001
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/processor"]
