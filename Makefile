# Tickwire: `make run` serves the dashboard with the simulator; `make test` runs every check.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(CURDIR)/target
CARGO ?= cargo
FRONTEND := frontend
HAVE_FRONTEND := $(wildcard $(FRONTEND)/package.json)

.PHONY: fuzz run build test lint fmt rust-test frontend frontend-deps frontend-test e2e bench clean

## Build everything (dashboard included) and serve it with the simulator feed.
run: build
	$(CARGO_TARGET_DIR)/release/tickwire serve

## Release binary and built dashboard.
build: frontend
	$(CARGO) build --release --locked

## Every check CI runs: formatting, lints, Rust tests, dashboard unit and browser tests.
test: lint rust-test frontend-test e2e

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

rust-test:
	$(CARGO) test --locked --all-targets

frontend-deps:
ifneq ($(HAVE_FRONTEND),)
	cd $(FRONTEND) && if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then npm ci --no-audit --no-fund; fi
endif

frontend: frontend-deps
ifneq ($(HAVE_FRONTEND),)
	cd $(FRONTEND) && npm run build
endif

frontend-test: frontend-deps
ifneq ($(HAVE_FRONTEND),)
	cd $(FRONTEND) && npm test
endif

## Dashboard end-to-end tests in headless Chromium against the real server.
e2e: frontend
ifneq ($(HAVE_FRONTEND),)
	$(CARGO) build --locked
	cd $(FRONTEND) && TICKWIRE_BIN=$(CARGO_TARGET_DIR)/debug/tickwire npm run e2e
endif

## Criterion benches and the idle-memory bench (figures in docs/BENCHMARKS.md).
bench:
	$(CARGO) bench --locked

FUZZ_SECONDS ?= 20
FUZZ_TARGETS := binance coinbase kraken wire

## Short fuzz smoke run of every feed parser (not part of `make test`): needs a
## nightly toolchain and cargo-fuzz; see fuzz/README.md.
fuzz:
	@cargo +nightly --version >/dev/null 2>&1 || { echo "make fuzz: cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly"; exit 1; }
	@cargo +nightly fuzz --version >/dev/null 2>&1 || { echo "make fuzz: cargo-fuzz is not installed: cargo install cargo-fuzz"; exit 1; }
	for target in $(FUZZ_TARGETS); do cargo +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done

clean:
	$(CARGO) clean
	rm -rf $(FRONTEND)/dist $(FRONTEND)/node_modules
