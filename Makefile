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
# Timeout of the soak run, whose disturbances last about 20 minutes.
SOAK_TIMEOUT ?= 60m
# Benchmark settings. Raise BENCHCOUNT to 6 or more to compare runs with benchstat.
BENCHTIME ?= 1s
BENCHCOUNT ?= 1
IMAGE_TAG ?= dev

.PHONY: help build test test-unit test-e2e test-chaos soak lint bench run docker clean

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
	@$(MAKE) --no-print-directory test-chaos

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

# The chaos suite starts a RabbitMQ node of its own from the installed
# rabbitmq-server and never touches the broker on 127.0.0.1:5672. It prints
# one result line per test, hence -v. See docs/guarantees.md.
test-chaos: ## Run the chaos tests in test/chaos against a RabbitMQ node they start (about 5 minutes)
	HOOKBUS_CHAOS=1 $(GO) test -race -count=1 -v -timeout $(TEST_TIMEOUT) ./test/chaos/

soak: ## Run chaos tests 1 to 4 with longer disturbances (about 20 minutes; not part of make test)
	HOOKBUS_CHAOS=1 HOOKBUS_CHAOS_SOAK=1 $(GO) test -race -count=1 -v -timeout $(SOAK_TIMEOUT) \
		-run '^(TestBrokerAppRestart|TestConnectionForceClose|TestProcessKill|TestMemoryAlarm)$$' ./test/chaos/

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
