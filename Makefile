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

test: vet
	$(GO) test -race -timeout 15m $(RACE)
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
