# Sluice. `make run` runs the example job, `make test` runs every test.
GO      ?= go
BIN     := bin/sluice
PKGS    := ./...
# Packages whose concurrency bugs would lose data (engine/plan: whole jobs in-process; framework and taskmanager: the cluster): always under the race detector.
RACE    := ./engine/runtime/... ./engine/state/... ./engine/window/... ./engine/nodes/... ./engine/connectors/... ./engine/checkpoint/... ./engine/fs/... ./engine/plan/... ./framework/... ./taskmanager/...

.PHONY: build run run-kafka test vet bench fuzz clean proto

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/sluice

run: build
	./$(BIN) run examples/clicks.json

# The Keystone router (examples/keystone-router.json) on an in-process Kafka
# (kfake on 127.0.0.1:9092) fed with generated events; counts per output topic
# every 3 s until Ctrl-C. Flags: make run-kafka DEMO_FLAGS="-port 19092 -rate 5000".
run-kafka: build
	$(GO) run ./internal/kafkademo -sluice $(BIN) $(DEMO_FLAGS)

vet:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

# Chromium is installed while the race run goes (minutes either way); the
# second run, which has the browser test, waits for it.
test: vet
	mkdir -p bin; { $(MAKE) --no-print-directory chromium >bin/chromium-install.log 2>&1; echo $$? >bin/chromium-install.rc; } & \
	$(GO) test -race -timeout 15m $(RACE); rc=$$?; wait; \
	[ "$$(cat bin/chromium-install.rc)" = 0 ] || { cat bin/chromium-install.log; echo "make chromium failed"; exit 1; }; \
	exit $$rc
	$(GO) test -timeout 15m $$($(GO) list $(PKGS) | grep -v -e /engine/runtime -e /engine/state -e /engine/window -e /engine/nodes -e /engine/connectors -e /engine/checkpoint -e /engine/fs -e /engine/plan -e /framework -e /taskmanager)
	# docs/alerts.yml with Prometheus's rule parser and PromQL engine: a module of its own (internal/promrules/doc.go).
	cd internal/promrules && $(GO) vet ./... && $(GO) test -timeout 5m ./...

# Go benchmarks of the hot paths (the data plane's TCP against gRPC among them),
# then the harness that runs whole jobs beside hand-written loops, and on
# TaskManager processes (figures for docs/benchmarks.md).
bench: build
	$(GO) test -run '^$$' -bench . -benchmem -timeout 30m ./engine/... ./taskmanager/... ./framework/mesos/ | tee bench.txt
	$(GO) run ./internal/bench | tee -a bench.txt

# Regenerates the control-plane code (internal/controlpb) from control.proto.
# The tools come from the Go module proxy at pinned versions into bin/tools,
# so nothing installed by hand is used; protoc-gen-go is the protobuf module
# version in go.mod, so the generated code matches the runtime it links with.
# The output is committed: running this again leaves git status clean.
TOOLS                      := $(CURDIR)/bin/tools
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1

proto:
	GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go
	cd internal/controlpb && PATH="$(TOOLS):$$PATH" $(TOOLS)/buf generate

clean:
	rm -rf bin bench.txt

# The Nexmark report (docs/nexmark.md): each runnable query over 10 M events
# (-scale multiplies) at parallelism 1 and 2 with a discard sink, beside the
# hand-written loop. Flags: make bench-nexmark BENCH_FLAGS="-scale 0.1 -reps 1".
.PHONY: bench-nexmark
bench-nexmark:
	$(GO) run ./internal/bench -only nexmark $(BENCH_FLAGS)

# Debian's Chromium (and a font for the screenshots), for the web UI's browser
# test (cmd/sluice/ui_test.go, docs/ui.md): installed when missing (sudo only
# when not root), without the recommended packages (Mesa, printing, ...) that
# headless Chromium does not use and that doubled the install's time.
.PHONY: chromium
chromium:
	@command -v chromium >/dev/null || { S=; [ "$$(id -u)" -eq 0 ] || S=sudo; $$S apt-get update && DEBIAN_FRONTEND=noninteractive $$S apt-get install -y --no-install-recommends chromium fonts-liberation; }
