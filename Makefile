SHELL := /bin/bash
# meshgate — build, run and test.
GO      ?= go
BIN     := bin/meshgate
PKGS    := ./...

.PHONY: all build run test vet unit integration e2e lint fmt fuzz fuzz-short clean proto consul

all: build

## build: compile the meshgate binary into bin/
build:
	$(GO) build -o $(BIN) ./cmd/meshgate

## run: the embedded quickstart (control plane, gateway, sidecars, demo services)
run: build
	./$(BIN) dev

## test: everything CI runs: vet, unit tests (race detector), Consul integration tests,
## short fuzz runs, e2e through the real binary, and a smoke run of the benchmark tools
test: consul vet unit integration fuzz-short e2e conformance-quick bench-smoke

## consul: the real Consul agent (v1.14.0, tools/consul's own module) for the
## tests, built once into tools/consul/bin/consul (rebuilt when its go.mod changes)
CONSUL_BIN := tools/consul/bin/consul
consul: $(CONSUL_BIN)
$(CONSUL_BIN): tools/consul/go.mod tools/consul/go.sum
	cd tools/consul && $(GO) build -o bin/consul github.com/hashicorp/consul

## jaeger: Jaeger v2 (github.com/jaegertracing/jaeger/cmd/jaeger v1.75.0, tools/jaeger's own
## module), the tracing backend of the e2e tests, built once into tools/jaeger/bin/jaeger
## (rebuilt when its go.mod changes; the build takes minutes)
.PHONY: jaeger
JAEGER_BIN := tools/jaeger/bin/jaeger
jaeger: $(JAEGER_BIN)
$(JAEGER_BIN): tools/jaeger/go.mod tools/jaeger/go.sum
	cd tools/jaeger && $(GO) build -o bin/jaeger github.com/jaegertracing/jaeger/cmd/jaeger

## pebble: Pebble (github.com/letsencrypt/pebble/v2/cmd/pebble v2.10.3, tools/pebble's own
## module), the ACME test CA of the e2e tests, built once into tools/pebble/bin/pebble
## (rebuilt when its go.mod changes)
.PHONY: pebble
PEBBLE_BIN := tools/pebble/bin/pebble
pebble: $(PEBBLE_BIN)
$(PEBBLE_BIN): tools/pebble/go.mod tools/pebble/go.sum
	cd tools/pebble && $(GO) build -o bin/pebble github.com/letsencrypt/pebble/v2/cmd/pebble

vet:
	$(GO) vet $(PKGS)

unit: consul
	MESHGATE_CONSUL_BIN=$(CURDIR)/$(CONSUL_BIN) $(GO) test -race -short -count=1 -timeout 10m $(PKGS)

## integration: the package tests skipped by -short in unit: those that need a real Consul
## agent, and the translator's contract test (every golden through a real proxy)
INTEGRATION_PKGS := ./controlplane/state/... ./controlplane/acme/... ./controlplane/ca/... ./controlplane/kvpolicy/... ./controlplane/discovery/... ./controlplane/translate/... ./cmd/meshgate/...
integration: consul
	MESHGATE_CONSUL_BIN=$(CURDIR)/$(CONSUL_BIN) $(GO) test -race -count=1 -timeout 10m $(INTEGRATION_PKGS)

## e2e: the real binary as separate processes. The full log is e2e.log; on a
## failure the test messages (without the processes' output) are printed last.
e2e: build consul jaeger pebble
	@MESHGATE_BIN=$(CURDIR)/$(BIN) MESHGATE_CONSUL_BIN=$(CURDIR)/$(CONSUL_BIN) MESHGATE_JAEGER_BIN=$(CURDIR)/$(JAEGER_BIN) MESHGATE_PEBBLE_BIN=$(CURDIR)/$(PEBBLE_BIN) $(GO) test -count=1 -timeout 20m -v ./e2e/ 2>&1 | tee e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)' ; rc=$${PIPESTATUS[0]}; \
	if [ $$rc -ne 0 ]; then echo "---- e2e failed; the test messages (processes' output is in e2e.log):"; \
	  grep -E '^\s+[a-z_]+_test\.go:[0-9]+: ' e2e.log | grep -v ': ---- output of' | tail -60; fi; exit $$rc

## chaos: the chaos scenarios (e2e/chaos_*_test.go: faults under fixed-rate load through
## the real binary), one at a time. MESHGATE_CHAOS=quick (default; also part of make test),
## full or soak sets durations and rates (MESHGATE_CHAOS_RATE, MESHGATE_CHAOS_FAULT override
## them; CHAOS_RUN selects scenarios). Prints the results table and rewrites that level's
## table in docs/reliability.md. The full log is chaos.log.
.PHONY: chaos soak
MESHGATE_CHAOS ?= quick
CHAOS_RUN      ?= ^TestChaos
chaos: build consul
	@rm -f chaos-results.jsonl; \
	MESHGATE_CHAOS=$(MESHGATE_CHAOS) MESHGATE_CHAOS_RESULTS=$(CURDIR)/chaos-results.jsonl \
	MESHGATE_BIN=$(CURDIR)/$(BIN) MESHGATE_CONSUL_BIN=$(CURDIR)/$(CONSUL_BIN) \
	  $(GO) test -count=1 -parallel 1 -timeout 90m -v -run '$(CHAOS_RUN)' ./e2e/ 2>&1 | tee chaos.log | \
	  grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|^\s+chaos[a-z_]*_test\.go:[0-9]+: chaos ' ; rc=$${PIPESTATUS[0]}; \
	if [ $$rc -ne 0 ]; then echo "---- chaos failed; the test messages (processes' output is in chaos.log):"; \
	  grep -E '^\s+[a-z_]+_test\.go:[0-9]+: ' chaos.log | grep -v ': ---- output of' | tail -40; fi; \
	$(GO) run ./e2e/chaosreport/cmd/chaostable -results chaos-results.jsonl -doc docs/reliability.md || rc=1; exit $$rc

## soak: the chaos scenarios at their longest: 60 s faults at 300 req/s per path (~10 min)
soak:
	@$(MAKE) --no-print-directory chaos MESHGATE_CHAOS=soak

# Fuzz targets, as package:FuzzName.
FUZZ_TARGETS := ./policy:FuzzLoad ./api/token:FuzzParse ./controlplane/ca:FuzzValidateCSR ./dataplane/httpproxy:FuzzNormalizePath ./dataplane/router:FuzzCompileRouteConfiguration ./dataplane/router:FuzzMutateRouteConfiguration ./dataplane/filters/rbac:FuzzCompileRBAC ./dataplane/filters/rbac:FuzzMutateRBAC ./dataplane/upstream:FuzzCluster ./dataplane/upstream:FuzzMutateCluster ./dataplane:FuzzParseListener ./dataplane:FuzzMutateListener ./dataplane:FuzzParseSecret ./dataplane/internal/h1server:FuzzServer
FUZZ_TARGETS += ./dataplane/internal/h1server:FuzzGuard
FUZZ_TARGETS += ./dataplane/filters:FuzzChain ./dataplane/filters/headermutation:FuzzHeaderMutation
FUZZ_TARGETS += ./dataplane/filters/fault:FuzzFault
FUZZ_TARGETS += ./dataplane/filters/buffer:FuzzBuffer
FUZZ_TARGETS += ./dataplane/filters/responselimit:FuzzResponseLimit
FUZZ_TARGETS += ./dataplane/filters/openapi:FuzzRequests
FUZZ_TARGETS += ./dataplane/filters/cors:FuzzCorsPolicy
FUZZ_TARGETS += ./dataplane/filters/localratelimit:FuzzLocalRateLimit ./dataplane/filters/globalratelimit:FuzzGlobalRateLimit
FUZZ_TARGETS += ./dataplane/filters/jwtauthn:FuzzVerify ./dataplane/filters/apikeyauth:FuzzAPIKey ./dataplane/filters/basicauth:FuzzBasicAuth
FUZZ_TARGETS += ./api/spiffeid:FuzzParse ./api/dnslabel:FuzzValid
FUZZ_TIME    ?= 60s
FUZZ_FLAGS   ?=

## fuzz: run every fuzz target for FUZZ_TIME each (default 60s). A failing run is
## repeated once: go test -fuzz sometimes fails with "context deadline exceeded"
## when its time is up under load, while a real failure is saved and recurs.
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
	  if grep -qs "func $$fn(" $$pkg/*_test.go; then echo "fuzz $$pkg $$fn ($(FUZZ_TIME))"; \
	  $(GO) test $$pkg -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZ_TIME) $(FUZZ_FLAGS) || \
	  { echo "fuzz $$pkg $$fn: failed; once more (a real failure was saved under testdata/fuzz and fails again)"; \
	    $(GO) test $$pkg -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZ_TIME) $(FUZZ_FLAGS); }; fi; done

## fuzz-short: every fuzz target for a few seconds (part of make test). New
## inputs are not minimized: a minimization still running when the time is up
## makes `go test -fuzz` fail with "context deadline exceeded".
fuzz-short:
	@$(MAKE) --no-print-directory fuzz FUZZ_TIME=5s FUZZ_FLAGS=-fuzzminimizetime=0

## conformance: the Gateway API conformance suite (sigs.k8s.io/gateway-api/conformance
## v1.6.3): its HTTPRoute, GRPCRoute and mesh tests against the real binary, run by
## e2e/conformance (its own Go module) in a network namespace of their own (needs
## root). Prints PASS/FAIL/SKIP per test, fails when a test of
## e2e/conformance/expectations.yaml that passed fails, and rewrites the results
## table of docs/conformance.md. Also TestExamples: `meshgate validate` on every
## manifest of the gateway-api module's examples/ (expected outcome per file in
## e2e/conformance/examples.yaml), the accepted ones served. MESHGATE_CONFORMANCE=quick: only the HTTPRoute
## core tests that pass (conformance-quick, part of make test); CONFORMANCE_RUN
## (a regular expression) narrows the tests. The full log is conformance.log.
.PHONY: conformance conformance-quick
MESHGATE_CONFORMANCE ?= full
CONFORMANCE_RUN      ?=
conformance: build
	@cd e2e/conformance && MESHGATE_CONFORMANCE=$(MESHGATE_CONFORMANCE) MESHGATE_CONFORMANCE_RUN='$(CONFORMANCE_RUN)' \
	  MESHGATE_BIN=$(CURDIR)/$(BIN) MESHGATE_CONFORMANCE_LOG=$(CURDIR)/conformance.log \
	  MESHGATE_CONFORMANCE_DOC=$(if $(and $(filter full,$(MESHGATE_CONFORMANCE)),$(if $(CONFORMANCE_RUN),,1)),$(CURDIR)/docs/conformance.md) \
	  $(GO) test -count=1 -timeout 40m -v -run '^(TestConformance|TestExamples|TestTranslateServiceEndpoints|TestPodIP)$$' . 2>&1 | \
	  grep -E '^(conformance:|--- |PASS|FAIL|ok|panic)|(conformance|expectations)_test\.go:[0-9]+: |^ {8,}(PASS|FAIL|SKIP) +[A-Z]|examples_test\.go:[0-9]+: ' | grep -Ev ' \| |answered as expected'; exit $${PIPESTATUS[0]}

conformance-quick:
	@$(MAKE) --no-print-directory conformance MESHGATE_CONFORMANCE=quick

## staticcheck: honnef.co/go/tools (tools/staticcheck's own module, pinned there, so
## that the main go.mod stays clean), built once into tools/staticcheck/bin/staticcheck
## (rebuilt when its go.mod changes)
STATICCHECK := tools/staticcheck/bin/staticcheck
$(STATICCHECK): tools/staticcheck/go.mod tools/staticcheck/go.sum
	cd tools/staticcheck && $(GO) build -o bin/staticcheck honnef.co/go/tools/cmd/staticcheck

## lint: formatting, vet and staticcheck
lint: vet $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(STATICCHECK) $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin e2e.log chaos.log chaos-results.jsonl conformance.log

## proto: regenerate api/ (needs protoc, protoc-gen-go, protoc-gen-go-grpc; the generated code is committed)
proto:
	command -v protoc >/dev/null || (apt-get update -qq && apt-get install -y -qq protobuf-compiler)
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
	PATH=$(CURDIR)/bin:$$PATH protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative api/ca/v1/ca.proto

## bench: data plane vs direct/nginx/HAProxy/Caddy and the control plane at scale (~10 min;
## BENCH_QUICK=1: ~2 min; PROFILE=1: pprof profiles). Results: bench/results/latest.md
.PHONY: bench bench-quick bench-smoke bench-bins
bench-bins: build
	$(GO) build -o bin/bench ./bench/cmd/bench
	$(GO) build -o bin/xdsload ./bench/xdsload

bench: bench-bins
	bash bench/setup.sh
	./bin/bench -mode $(if $(BENCH_QUICK),quick,full) $(if $(filter 1,$(PROFILE)),-profile)

bench-quick:
	$(MAKE) bench BENCH_QUICK=1

## bench-smoke: every tool for about a second, no timing assertions (part of make test)
bench-smoke: bench-bins
	CADDY_BUILD_TIMEOUT=60 bash bench/setup.sh
	./bin/bench -mode smoke
