# kiln — see README.md. `make help` lists the targets.
SHELL      := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO         ?= go
VERSION    ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS    := -X main.version=$(VERSION)
TINY_CACHE ?= .cache/tiny
FUZZTIME   ?= 10s
UNIT_PKGS   = $(shell $(GO) list ./... | grep -v /e2e)

.PHONY: help build deps tiny-inputs cloud-init tiny lint unit e2e fuzz test demo ci bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/kiln and bin/kiln-installer (static: it is the /init of install boots)
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/kiln ./cmd/kiln
	CGO_ENABLED=0 $(GO) build -ldflags "-s -w" -o bin/kiln-installer ./cmd/kiln-installer

deps: ## install the Debian packages the tests and demo need (root; skips what is there)
	./scripts/deps.sh

tiny-inputs: deps ## fetch the tiny image's kernel and busybox from Debian into .cache/tiny
	./scripts/fetch-tiny-inputs.sh $(TINY_CACHE)

cloud-init: deps ## unpack Debian's cloud-init (not installed) into .cache/cloud-init for identity's tests
	./identity/testdata/fetch-cloud-init.sh .cache/cloud-init

tiny: build tiny-inputs ## bake the tiny example image into out/images
	./bin/kiln build testdata/recipes/tiny.yaml --images out/images

lint: ## gofmt, go vet, and go mod tidy leaves no diff
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) mod tidy && git diff --exit-code -- go.mod go.sum

unit: ## unit tests with the race detector (and the windowsize tests of our pin/tftp fork)
	$(GO) test -race -count=1 $(UNIT_PKGS)
	cd third_party/pin-tftp && $(GO) test -race -count=1 -run 'Window|TSizeZero|ErrorCode|ParseRequest' ./...

e2e: tiny-inputs ## boot real VMs in a private network namespace (root)
	$(GO) test -count=1 -v -timeout 20m ./e2e/

fuzz: ## a short pass of every fuzz target (FUZZTIME each)
	GO=$(GO) ./scripts/fuzz.sh $(FUZZTIME) $(UNIT_PKGS)

test: deps tiny-inputs cloud-init lint fuzz unit e2e ## everything CI runs: lint, short fuzz, unit (race), e2e boots

ci: test ## what .ci/run runs

bench: build ## kiln against cpio|zstd, mksquashfs, mkfs.ext4, Kea, dnsmasq and tftpd-hpa (root; ~20 min; not part of test)
	./scripts/deps.sh --bench
	KILN=bin/kiln bash bench/build.sh
	KILN=bin/kiln bash bench/dhcp.sh
	KILN=bin/kiln bash bench/tftp.sh

demo: deps tiny-inputs build ## bake the tiny image, netboot a VM to ready in a private namespace, show the inventory
	./scripts/demo.sh

clean: ## remove build output (keeps the .cache of Debian downloads)
	rm -rf bin out
