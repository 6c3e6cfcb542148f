SHELL := /bin/bash
# meshgate — build, run and test.
GO      ?= go
BIN     := bin/meshgate
PKGS    := ./...

.PHONY: all build run test vet unit e2e lint fmt fuzz clean proto

all: build

## build: compile the meshgate binary into bin/
build:
	$(GO) build -o $(BIN) ./cmd/meshgate

## run: the embedded quickstart (control plane, gateway, sidecars, demo services)
run: build
	./$(BIN) dev

## test: everything CI runs: vet, unit tests (race detector), e2e through the real binary
test: vet unit e2e

vet:
	$(GO) vet $(PKGS)

unit:
	$(GO) test -race -short -count=1 -timeout 10m $(PKGS)

e2e: build
	MESHGATE_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 20m -v ./e2e/ 2>&1 | tee e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)' ; exit $${PIPESTATUS[0]}

## lint: formatting and vet
lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin e2e.log

## proto: regenerate api/ (needs protoc, protoc-gen-go, protoc-gen-go-grpc; the generated code is committed)
proto:
	command -v protoc >/dev/null || (apt-get update -qq && apt-get install -y -qq protobuf-compiler)
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
	PATH=$(CURDIR)/bin:$$PATH protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative api/ca/v1/ca.proto
