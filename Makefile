# Tickwire: `make run` serves the dashboard with the simulator; `make test` runs every check.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(CURDIR)/target
CARGO ?= cargo
FRONTEND := frontend
HAVE_FRONTEND := $(wildcard $(FRONTEND)/package.json)

.PHONY: run build test lint fmt rust-test pg frontend frontend-deps frontend-test e2e bench clean

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

rust-test: pg
	$(CARGO) test --locked --all-targets

## PostgreSQL on 127.0.0.1:5432 for the store tests (started when down).
pg:
	@pg_isready -h 127.0.0.1 -p 5432 -q || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | sort -V | tail -1) main start
	@for i in $$(seq 30); do pg_isready -h 127.0.0.1 -p 5432 -q && exit 0; sleep 1; done; echo "PostgreSQL is not up"; exit 1

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

clean:
	$(CARGO) clean
	rm -rf $(FRONTEND)/dist $(FRONTEND)/node_modules
