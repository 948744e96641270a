# edged: build, test, benchmark. `make help` lists the targets.
GO       ?= go
# go.mod asks for Go 1.27.3: 1.26.8 has ten standard-library
# vulnerabilities this code reaches (crypto/tls, crypto/x509, net/http;
# make vulncheck). GOTOOLCHAIN=auto lets an older go command fetch that
# toolchain from the module proxy (once, ~10 s) where the machine image
# pins GOTOOLCHAIN=local in its go.env, as this one does.
GOTOOLCHAIN ?= auto
export GOTOOLCHAIN
PKGS     ?= ./...
# The packages with goroutines, cross-loop queues or shared counters, run a
# second time under the race detector: the event loops and their MPSC queues
# (netpoll), the server's cross-loop delivery and its stress tests (edge),
# the samplers and admin handlers (internal/obs), steering counters updated by
# loops (ebpf), the load generator's workers (bench) and the commands that
# wire them (cmd). Left out, with no concurrency of their own: edge/mqtt (the
# codec), sysctl, tuning, internal/testenv; they are fast, so this is about
# what a -race run of ./... costs. Measured on the shared 2-core dev machine
# (load 5-40 from other work): this race pass 2m30s-4m15s warm, the plain
# pass 1-2m, make test in all 4-6.5 min; the first -race ./... with a cold
# build cache 9m31s.
RACE_PKGS ?= ./netpoll/ ./edge/ ./internal/obs/ ./ebpf/ ./bench/... ./cmd/...
# An execution count, not a duration: a duration -fuzztime can fail with a
# bare "context deadline exceeded" at its boundary on a loaded machine
# (golang/go#75804, fixed in Go 1.27; kept as a count, which is also the
# same work on any machine).
FUZZTIME ?= 600000x
# Tools are pinned in tools/go.mod (staticcheck, govulncheck, benchstat);
# `go tool` builds them once into the build cache.
TOOL     = $(GO) tool -modfile=tools/go.mod
# bench-compare: the base revision, benchmarks, packages and runs per side.
BASE     ?= HEAD
BENCH    ?= .
BENCHPKGS ?= $(PKGS)
COUNT    ?= 6
# vulncheck: the Go vulnerability database. CI cannot reach vuln.go.dev,
# so by default it is built locally from the reports in the
# golang.org/x/vulndb module (served by the module proxy; VULNDB_REV pins
# the snapshot, 2026-11-05) by that module's own indexdb command, into
# .cache/vulndb. VULNDB=https://vuln.go.dev checks against the live one.
VULNDB_MOD ?= golang.org/x/vulndb
VULNDB_REV ?= v0.0.0-20261105234957-e22db6528018
VULNDB_DIR := $(CURDIR)/.cache/vulndb/$(VULNDB_REV)
VULNDB     ?= file://$(VULNDB_DIR)

.PHONY: all build run test test-race vet lint staticcheck tidy-check vulncheck vulndb bench bench-compare fuzz ci help

all: build

build: ## build edged, edgebench and edgectl into ./bin (stamped with the git commit: --version shows it)
	$(GO) build -buildvcs=auto -o bin/ ./cmd/...

run: build ## run the server with its embedded default (127.0.0.1:1883, anonymous from loopback)
	./bin/edged

test: vet ## run every test (real sockets, epoll, eBPF and netns as root), then test-race, then a bounded fuzz
	$(GO) test -count=1 -timeout 20m $(PKGS)
	$(MAKE) --no-print-directory test-race
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=$(FUZZTIME) ./edge/mqtt/
	$(GO) test -run='^$$' -fuzz=FuzzParseUpgrade -fuzztime=$(FUZZTIME) ./internal/edgews/

test-race: ## the concurrent packages (RACE_PKGS) under the race detector
	$(GO) test -count=1 -race -timeout 20m $(RACE_PKGS)

vet: ## go vet for linux (amd64 and arm64: their syscall sets differ), freebsd and darwin (the kqueue side is compile-checked only)
	$(GO) vet $(PKGS)
	GOARCH=arm64 $(GO) vet $(PKGS)
	GOOS=freebsd $(GO) vet $(PKGS)
	GOOS=darwin $(GO) vet $(PKGS)

lint: vet staticcheck tidy-check ## gofmt check, vet, staticcheck and go mod tidy -diff
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

staticcheck: ## staticcheck (version pinned in tools/go.mod; per-directory staticcheck.conf)
	$(TOOL) staticcheck $(PKGS)

tidy-check: ## fail if go.mod/go.sum (or tools/go.mod) are not tidy
	$(GO) mod tidy -diff
	cd tools && $(GO) mod tidy -diff

vulncheck: $(if $(filter file://$(VULNDB_DIR),$(VULNDB)),vulndb) ## govulncheck against VULNDB (by default the local copy make vulndb builds)
	@$(TOOL) govulncheck -db '$(VULNDB)' $(PKGS) || { rc=$$?; \
	  echo "vulncheck: govulncheck exit $$rc against $(VULNDB): exit 3 means the code reaches a known vulnerability (listed above); others, that the database could not be read" >&2; \
	  exit $$rc; }

vulndb: $(VULNDB_DIR)/index/db.json ## build the offline vulnerability database from $(VULNDB_MOD)@$(VULNDB_REV)

# Outside this module (cd /), so that neither go.mod nor go.sum changes.
$(VULNDB_DIR)/index/db.json:
	@rm -rf '$(VULNDB_DIR).tmp' '$(VULNDB_DIR)' && mkdir -p '$(dir $(VULNDB_DIR))'
	cd / && $(GO) mod download $(VULNDB_MOD)@$(VULNDB_REV)
	cd / && $(GO) run $(VULNDB_MOD)/cmd/indexdb@$(VULNDB_REV) \
	  -vulns "$$($(GO) env GOMODCACHE)/$(VULNDB_MOD)@$(VULNDB_REV)/data/osv" -out '$(VULNDB_DIR).tmp'
	@mv '$(VULNDB_DIR).tmp' '$(VULNDB_DIR)'

bench: ## run the Go benchmarks (figures go to BENCHMARKS.md with command, machine and date)
	$(GO) test -run='^$$' -bench=. -benchmem $(PKGS)

# Old and new runs alternate (COUNT rounds of one run each) so that a noisy
# neighbour slows both sides alike; the raw outputs stay in out/bench-compare.
bench-compare: ## benchmarks of BASE (default HEAD; in a temporary git worktree) vs the working tree, COUNT runs each, then benchstat; narrow with BENCH=regexp BENCHPKGS=./netpoll/
	@set -e; dir=out/bench-compare; mkdir -p $$dir; : > $$dir/old.txt; : > $$dir/new.txt; \
	base=$$(mktemp -d); trap 'git worktree remove --force "$$base" 2>/dev/null || rm -rf "$$base"' EXIT; \
	git worktree add --detach -q "$$base" '$(BASE)'; \
	echo "bench-compare: old = $(BASE) ($$(git rev-parse --short '$(BASE)')), new = working tree, $(COUNT) alternating runs of -bench='$(BENCH)' $(BENCHPKGS)"; \
	for i in $$(seq $(COUNT)); do \
	  echo "round $$i/$(COUNT)"; \
	  (cd "$$base" && $(GO) test -run='^$$' -bench='$(BENCH)' -benchmem -count=1 $(BENCHPKGS)) >> $$dir/old.txt; \
	  $(GO) test -run='^$$' -bench='$(BENCH)' -benchmem -count=1 $(BENCHPKGS) >> $$dir/new.txt; \
	done; \
	$(TOOL) benchstat '$(BASE)'=$$dir/old.txt 'working tree'=$$dir/new.txt

fuzz: ## fuzz the MQTT decoder and the WebSocket upgrade parser (it runs on the loops) for FUZZTIME each
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=$(FUZZTIME) ./edge/mqtt/
	$(GO) test -run='^$$' -fuzz=FuzzParseUpgrade -fuzztime=$(FUZZTIME) ./internal/edgews/

ci: ## what CI runs on a fresh clone, as root: .ci/run (installs packages, then make lint test)
	bash .ci/run

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'
