# syntax=docker/dockerfile:1
#
# The Shoal image: one static binary on distroless/static.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#                --build-arg COMMIT=$(git rev-parse --short HEAD) -t shoal .
#
# or `make image`. The final image runs as root (uid 0) on purpose: containerd's
# socket is root:root 0660, and its content store and certs.d are root-owned.
# The Helm chart drops every capability, so root only has owner permissions
# (docs/security.md).

# Go 1.26 (go.mod asks for 1.26.8 or later).
ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
WORKDIR /src
# Modules first, so they are cached apart from the sources.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY cmd/ cmd/
COPY pkg/ pkg/
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/shoal ./cmd/shoal

# distroless/static: CA certificates, tzdata, /etc/passwd; no shell, no libc.
# Not the :nonroot variant: see above.
FROM gcr.io/distroless/static-debian12
COPY --from=build /out/shoal /shoal
ENTRYPOINT ["/shoal"]
CMD ["run"]
