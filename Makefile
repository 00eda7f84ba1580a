# Build, test and run hookbus. Run `make` or `make help` to list the targets.
# Every target runs from the repository root, where go.work joins the modules.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO ?= go
# The modules of go.work, as directories and as package patterns.
MODULES := pkg ingest processor test
PACKAGES := $(foreach module,$(MODULES),./$(module)/...)
# Timeout of one test step (one go test command).
TEST_TIMEOUT ?= 10m
# Benchmark settings. Raise BENCHCOUNT to 6 or more to compare runs with benchstat.
BENCHTIME ?= 1s
BENCHCOUNT ?= 1
IMAGE_TAG ?= dev

.PHONY: help build test test-unit test-e2e lint bench run docker clean

help: ## List the targets
	@echo 'Usage: make TARGET'
	@echo
	@awk 'BEGIN { FS = ":.*## " } /^[a-z][a-z0-9-]*:.*## / { printf "  %-10s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

build: ## Build bin/ingest and bin/processor
	$(GO) build -o bin/ingest ./ingest/cmd/ingest
	$(GO) build -o bin/processor ./processor/cmd/processor

# The suites run one after another, even under make -j, so that a suite that
# disturbs the broker (a chaos suite, for example) never overlaps another.
test: ## Run every test suite with the race detector, one suite after another
	@$(MAKE) --no-print-directory test-unit
	@$(MAKE) --no-print-directory test-e2e

test-unit: ## Run the tests of pkg, ingest and processor
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./pkg/... ./ingest/... ./processor/...

test-e2e: ## Run the end-to-end tests in test/
	@packages="$$($(GO) list ./test/...)"; \
	if [[ -z "$$packages" ]]; then \
		echo 'test-e2e: the test module has no packages yet, so there is nothing to run'; \
		exit 0; \
	fi; \
	echo '$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./test/...'; \
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./test/...

lint: ## Fail on files that gofmt would change, then run go vet on every module
	@unformatted="$$(gofmt -l $(MODULES))"; \
	if [[ -n "$$unformatted" ]]; then \
		echo 'gofmt: these files are not formatted (run gofmt -w on them):'; \
		echo "$$unformatted"; \
		exit 1; \
	fi
	$(GO) vet $(PACKAGES)

bench: ## Run the benchmarks of pkg and test (BENCHTIME=1s BENCHCOUNT=1)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(BENCHCOUNT) -timeout 30m ./pkg/... ./test/...

run: build ## Run processor and ingest against the RabbitMQ broker on 127.0.0.1:5672
	deploy/run-local.sh bin

docker: ## Build the images hookbus/ingest:dev and hookbus/processor:dev
	docker build -f deploy/ingest.Dockerfile -t hookbus/ingest:$(IMAGE_TAG) .
	docker build -f deploy/processor.Dockerfile -t hookbus/processor:$(IMAGE_TAG) .

clean: ## Remove bin/
	rm -rf bin
