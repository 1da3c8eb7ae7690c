# Tickwire: `make run` serves the dashboard with the simulator; `make test` runs every check.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(CURDIR)/target
CARGO ?= cargo
FRONTEND := frontend
HAVE_FRONTEND := $(wildcard $(FRONTEND)/package.json)


.PHONY: bench-guard bench-load bench-cluster bench-keys bench-hostile peers cluster
.PHONY: ops-check prereqs fuzz run build test lint fmt rust-test pg frontend frontend-deps frontend-test e2e bench clean python-deps python-test

## Build everything (dashboard included) and serve it with the simulator feed.
run: build
	$(CARGO_TARGET_DIR)/release/tickwire serve

## Release binary and built dashboard.
build: frontend
	$(CARGO) build --release --locked

## The cluster on one machine: nats-server (started, or the one on :4222), one
## ingest node, two gateways with the dashboard (:8080, :8081), one store node.
## Ctrl-C stops them all. See docs/DEPLOY.md.
cluster: build
	scripts/cluster.sh

## Every check CI runs: formatting, lints, Rust tests, dashboard unit and browser tests.
test: prereqs lint ops-check rust-test python-test bench-guard frontend-test e2e

## What `make test` needs on the machine, checked first (scripts/prereqs.sh).
prereqs:
	@scripts/prereqs.sh

## The Prometheus alert rules are valid and fire as their tests say (deploy/);
## tests/ops.rs checks that every metric they and the Grafana dashboard name is served.
ops-check:
	promtool check rules deploy/prometheus-alerts.yml
	promtool test rules deploy/prometheus-alerts.test.yml
	python3 -c 'import json; json.load(open("deploy/grafana-dashboard.json"))'

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
	cd $(FRONTEND) && TICKWIRE_BIN=$(CARGO_TARGET_DIR)/debug/tickwire E2E_REQUIRE_OPERATOR_STATS=1 npm run e2e
endif

## Python client (clients/python): a venv with pinned deps, protobuf code generated
## from proto/, and pytest against the real server binary.
python-deps:
	$(MAKE) -C clients/python deps generate

python-test: python-deps
	$(CARGO) build --locked
	$(MAKE) -C clients/python test TICKWIRE_BIN=$(CARGO_TARGET_DIR)/debug/tickwire

## RFC 6455 conformance: every Autobahn|Testsuite case but permessage-deflate
## (12.*, 13.*), run by kosoku (PyPI, pinned in clients/python/requirements-conformance.txt)
## against the server's own WebSocket stack through `serve --conformance-echo`;
## fails when a case fails. Not part of `make test` (CI runs it after); see docs/CONFORMANCE.md.
.PHONY: conformance
conformance:
	$(MAKE) -C clients/python conformance-deps
	$(CARGO) build --locked
	clients/python/.venv/bin/python scripts/conformance.py --tickwire $(CARGO_TARGET_DIR)/debug/tickwire \
		--outdir $(CARGO_TARGET_DIR)/conformance

## CI guards that do not flap, and can fail (timings stay in `make bench`):
## the fan-out's instructions per event at 1,000 and 10,000 subscribers, counted
## by callgrind and compared with benches/baseline-instructions.json (fails past
## +10 %); then a short end-to-end run that fails unless the clients received
## what the server offered, with no gap, dropped trade or slow-consumer close.
bench-guard:
	$(CARGO) build --locked --examples
	benches/instructions.sh
	$(CARGO) build --locked
	$(CARGO_TARGET_DIR)/debug/tickwire bench --name ci-guard --clients 50 --rate 1000 --duration-s 2 \
		--warmup-s 0.5 --runs 2 --check-complete

peers:
	cd benches/peers && npm ci --no-audit --no-fund

## Criterion benches, the idle-memory bench, then the load matrix against the peers
## (figures in docs/BENCHMARKS.md).
bench: peers
	$(CARGO) bench --locked
	$(CARGO) build --release --locked
	benches/matrix.sh
	benches/keys.sh
	benches/hostile.sh

## Cluster benches: the latency the bus adds, the publish ceiling, one gateway
## against two, the store role's drain rate (docs/BENCHMARKS.md).
bench-cluster: build
	benches/cluster.sh

## API keys and entitlements on against off at 1,000 clients x 1,000 events/s.
bench-keys:
	$(CARGO) build --release --locked
	benches/keys.sh

## Normal clients' latency and the server's memory with the hostile mix beside them.
bench-hostile:
	$(CARGO) build --release --locked
	benches/hostile.sh

## Only the load matrix.
bench-load: peers
	$(CARGO) build --release --locked
	benches/matrix.sh

FUZZ_SECONDS ?= 20
FUZZ_TARGETS := binance coinbase kraken okx wire

## Short fuzz smoke run of every feed parser (not part of `make test`): needs a
## nightly toolchain and cargo-fuzz; see fuzz/README.md.
fuzz:
	@cargo +nightly --version >/dev/null 2>&1 || { echo "make fuzz: cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly"; exit 1; }
	@cargo +nightly fuzz --version >/dev/null 2>&1 || { echo "make fuzz: cargo-fuzz is not installed: cargo install cargo-fuzz"; exit 1; }
	for target in $(FUZZ_TARGETS); do cargo +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done

clean:
	$(CARGO) clean
	rm -rf $(FRONTEND)/dist $(FRONTEND)/node_modules
