# Shoal. `make demo` and `make test` need root (they run containerd) and
# install what they need on first use through hack/install-deps.sh.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# Packages with goroutines and shared state run under the race detector.
RACE_PKGS := ./pkg/inflight/ ./pkg/registry/ ./pkg/httpserver/ ./pkg/upstream/ ./pkg/mirror/ ./pkg/store/ ./pkg/advertiser/ ./pkg/routing/... ./pkg/debug/ ./pkg/peerlink/ ./pkg/peer/ ./pkg/swarm/

.PHONY: build test unit e2e fuzz demo bench lint deps clean image

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/shoal ./cmd/shoal

deps:
	hack/install-deps.sh

# The container image. Where a Docker engine answers, the Dockerfile builds it;
# elsewhere hack/image assembles the same image in Go (go-containerregistry):
# the static binary of `make build`, CA certificates, /etc/passwd with nonroot.
# It goes into the OCI layout bin/image (and bin/image.tar for `ctr import`);
# PUSH=1 pushes it to IMAGE's registry, INSECURE=1 over plain HTTP.
IMAGE ?= ghcr.io/shoalproject/shoal:$(VERSION)
image:
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
		docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) . && \
		$(if $(PUSH),docker push $(IMAGE),true) ; \
	else \
		echo "make image: no Docker engine answers; building $(IMAGE) with hack/image (go-containerregistry)"; \
		$(MAKE) --no-print-directory build && rm -rf bin/image bin/image.tar && \
		$(GO) run ./hack/image -binary bin/shoal -ref $(IMAGE) -version $(VERSION) -commit $(COMMIT) \
			-oci-layout bin/image -tarball bin/image.tar $(if $(PUSH),-push,) $(if $(INSECURE),-insecure,) ; \
	fi

## test: everything CI runs: vet, unit tests (race where it matters), short fuzzing, e2e.
test: deps lint unit fuzz e2e

unit:
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -race $(RACE_PKGS)

# A short run of every fuzz target: the seed corpus always runs in `unit`.
fuzz:
	hack/fuzz.sh 10s

e2e: deps
	$(GO) test -tags e2e -count=1 -timeout 30m -v ./e2e/ 2>&1 | hack/summarize-e2e.sh

demo: deps
	$(GO) run ./hack/demo

bench: deps
	$(GO) run ./hack/bench $(if $(QUICK),-quick,)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./...

clean:
	rm -rf bin
