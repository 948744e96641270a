# edged: build, test, benchmark. `make help` lists the targets.
GO       ?= go
PKGS     ?= ./...
# An execution count, not a duration: a duration -fuzztime can fail with a
# bare "context deadline exceeded" at its boundary on a loaded machine
# (golang/go#75804, fixed in Go 1.27; this toolchain is 1.26).
FUZZTIME ?= 600000x

.PHONY: all build run test test-race vet lint bench fuzz ci help

all: build

build: ## build edged, edgebench and edgectl into ./bin (stamped with the git commit: --version shows it)
	$(GO) build -buildvcs=auto -o bin/ ./cmd/...

run: build ## run the server with its embedded default (127.0.0.1:1883, anonymous from loopback)
	./bin/edged

test: vet ## run every test (real sockets, epoll, eBPF and netns as root), netpoll under -race, a bounded fuzz
	$(GO) test -count=1 -timeout 20m $(PKGS)
	$(GO) test -count=1 -race -timeout 10m ./netpoll/
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=$(FUZZTIME) ./edge/mqtt/

vet: ## go vet for linux, freebsd and darwin (the kqueue side is compile-checked only)
	$(GO) vet $(PKGS)
	GOOS=freebsd $(GO) vet $(PKGS)
	GOOS=darwin $(GO) vet $(PKGS)

lint: vet ## gofmt check plus vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

bench: ## run the Go benchmarks (figures go to BENCHMARKS.md with command, machine and date)
	$(GO) test -run='^$$' -bench=. -benchmem $(PKGS)

fuzz: ## fuzz the MQTT decoder for FUZZTIME
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=$(FUZZTIME) ./edge/mqtt/

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'
