# Edgeward: `make demo` runs a local control plane; `make test` runs every test.
# Run `make help` for the rest.

SHELL    := /bin/bash
GO       ?= go
BIN      := $(CURDIR)/bin
MODULES  := agent controlplane proto
PACKAGES := $(foreach m,$(MODULES),./$(m)/...)
COVDIR   := $(CURDIR)/.edgeward/api-coverage
RESPDIR  := $(CURDIR)/.edgeward/api-responses
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/edgeward/edgeward/controlplane/internal/app.Version=$(VERSION) -X main.Version=$(VERSION)

# Generators, pinned by `tool` lines in tools/go.mod and built into bin/.
TOOL_PKGS := github.com/bufbuild/buf/cmd/buf google.golang.org/protobuf/cmd/protoc-gen-go \
	connectrpc.com/connect/cmd/protoc-gen-connect-go github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen

.PHONY: help demo build cross test test-db-stop fuzz bench generate lint fmt tools check-generated spec-lint node-tools new-migration clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

demo: build ## Run the control plane on a private PostgreSQL under ./.edgeward (Ctrl-C stops it).
	$(BIN)/edgeward-controlplane dev

build: ## Build bin/edgeward-controlplane and bin/edgeward-agent.
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/edgeward-controlplane ./controlplane/cmd/edgeward-controlplane
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/edgeward-agent ./agent/cmd/edgeward-agent

AGENT_TARGETS := linux/amd64 linux/arm64 darwin/arm64 windows/amd64

cross: ## Cross-compile the agent for every supported platform into bin/.
	@for t in $(AGENT_TARGETS); do os=$${t%/*}; arch=$${t#*/}; ext=; [ $$os = windows ] && ext=.exe; \
		echo "edgeward-agent $$os/$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" \
			-o $(BIN)/edgeward-agent-$$os-$$arch$$ext ./agent/cmd/edgeward-agent || exit 1; done

# Every test, with the race detector: unit, integration on real PostgreSQL
# (DATABASE_URL, or a private throwaway cluster), and end-to-end tests of the
# real binaries. Then the check that every operation of the spec was
# exercised, and a second OpenAPI validator, independent of kin-openapi, over
# every response the suite received.
# Test packages mostly wait (PostgreSQL, child processes, timers), so twice
# as many run at once as there are CPUs.
TEST_PARALLEL ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 2) * 2 )))
test: ## Run every test (-race), then check every API operation was exercised and every response passes a second validator.
	@rm -rf $(COVDIR) $(RESPDIR)
	EDGEWARD_API_COVERAGE_DIR=$(COVDIR) EDGEWARD_API_RESPONSES_DIR=$(RESPDIR) $(GO) test -race -count=1 -p $(TEST_PARALLEL) $(PACKAGES)
	set -o pipefail; EDGEWARD_API_COVERAGE_DIR=$(COVDIR) EDGEWARD_API_COVERAGE_CHECK=1 \
		EDGEWARD_API_RESPONSES_DIR=$(RESPDIR) EDGEWARD_API_RESPONSES_CHECK=1 \
		$(GO) test -count=1 -run '^(TestEveryOperationIsExercised|TestRecordedResponsesPassASecondValidator)$$' -v ./controlplane/internal/apitest \
		| grep -E '^(---|ok|FAIL|\s+(coverage|second_validator)_test)' || exit 1
	@cat $(COVDIR)/*.summary 2>/dev/null || true
	@if [ -z "$$DATABASE_URL" ]; then echo "The tests' private PostgreSQL cluster keeps running for the next run; 'make test-db-stop' stops it."; fi

test-db-stop: ## Stop the private PostgreSQL cluster that make test (and make bench) left running.
	$(GO) run ./controlplane/internal/db/dbtest/stopclusters

# Fuzzing: `make test` runs each fuzz target's seed corpus and the fixed
# malformed requests once; this searches for FUZZTIME per target and sends
# MALFORMED_ROUNDS random combined mutations per operation.
FUZZTIME ?= 2m
MALFORMED_ROUNDS ?= 40
fuzz: ## Fuzz the request gate and the JSON check, and send every operation random malformed input.
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME) ./controlplane/internal/jsoncheck
	$(GO) test -run '^$$' -fuzz '^FuzzGate$$' -fuzztime $(FUZZTIME) ./controlplane/internal/httpx
	EDGEWARD_MALFORMED_ROUNDS=$(MALFORMED_ROUNDS) $(GO) test -count=1 -v -run '^TestEveryOperationSurvivesMalformedInput$$' ./controlplane/internal/httpx | grep -E '^(---|ok|FAIL|\s+malformed_test)'

bench: ## Run the benchmarks and print their figures.
	EDGEWARD_TEST_PG_DURABLE=1 $(GO) test -run '^$$' -bench . -benchtime 5s -count 1 -timeout 30m ./controlplane/internal/bench/

generate: tools ## Regenerate all generated code (committed).
	cp specs/openapi.yaml controlplane/internal/api/openapi.yaml
	cd controlplane/internal/api && $(BIN)/oapi-codegen -config oapi-codegen.yaml openapi.yaml
	rm -rf proto/gen && PATH="$(BIN):$$PATH" $(BIN)/buf generate

tools: ## Build the pinned generators into bin/.
	cd tools && GOWORK=off $(GO) build -o $(BIN)/ $(TOOL_PKGS)

check-generated: generate ## Fail when committed generated code differs from a fresh generation.
	@if [ -n "$$(git status --porcelain -- controlplane/internal/api proto/gen)" ]; then \
		git status --porcelain -- controlplane/internal/api proto/gen; \
		git --no-pager diff --stat -- controlplane/internal/api proto/gen; \
		echo "generated code is stale: run make generate and commit"; exit 1; fi

node-tools: node_modules/.bin/redocly

node_modules/.bin/redocly: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

spec-lint: node-tools ## Lint specs/openapi.yaml with Redocly.
	npx --no-install redocly lint specs/openapi.yaml --format=stylish

lint: tools spec-lint ## gofmt, go vet, buf lint, spec lint.
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PACKAGES)
	$(BIN)/buf lint

new-migration: ## Create an empty SQL migration: make new-migration NAME=add_sites
	@test -n "$(NAME)" || { echo "usage: make new-migration NAME=what_it_does"; exit 2; }
	cd tools && GOWORK=off $(GO) tool goose -dir ../controlplane/internal/db/migrations -s create $(NAME) sql

fmt: ## Format Go code.
	gofmt -w $(MODULES)

clean: ## Remove build output (keeps ./.edgeward; stop `make demo` first).
	rm -rf $(BIN)
