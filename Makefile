# Interlock. `make demo` shows the main job end to end; `make test` runs the
# whole test suite (root needed for the end-to-end tests).
GO      ?= go
BIN     := bin/interlock
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
CONFIG  ?= deploy/examples/interlock.yaml

.PHONY: all build generate generate-check test unit bench run demo lint deps clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/interlock

## generate: rebuild the BPF objects and their Go bindings with Debian's clang.
generate:
	bash test/scripts/deps.sh --bpf
	$(GO) generate ./bpf/...

## generate-check: fail if the committed BPF objects differ from a fresh build.
generate-check: generate
	@git diff --exit-code --stat -- bpf/ || { echo "bpf/: committed objects differ from a fresh 'make generate'; run it and commit the result"; exit 1; }

deps:
	bash test/scripts/deps.sh

## test: unit tests and end-to-end tests (root: BPF, cgroups, a real PostgreSQL).
test: deps
	$(GO) test -count=1 -timeout 20m ./...

## unit: only what runs without root (privileged tests skip).
unit:
	$(GO) test -count=1 -short ./...

## bench: benchmarks, each reporting ratios against a direct connection.
bench: deps
	bash test/scripts/deps.sh --bench
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./test/bench/ ./engine/... ./protocols/...

## run: build and start the daemon with the example configuration.
run: build
	sudo $(BIN) run --config $(CONFIG)

## demo: an agent under Interlock, end to end, on a throwaway PostgreSQL.
demo: build
	bash deploy/demo/demo.sh $(BIN)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
