# wshub — the two commands a user needs are `make run` and `make test`.
CARGO ?= cargo
ADDR ?= 0.0.0.0:8080
ARGS ?=

.PHONY: run build test test-deps e2e autobahn bench bench-vs soak lint doc clean

## Build (release) and start the server on :8080; open http://localhost:8080/
run:
	$(CARGO) run --release -- serve --addr $(ADDR) $(ARGS)

build:
	$(CARGO) build --release

## Every test: unit, loopback integration, doc tests, the examples. Tests that
## need a program not on PATH (redis-server, nginx, openssl, systemd-analyze)
## skip, and the last lines say which (under CI=true they fail instead).
SKIPPED = $(or $(CARGO_TARGET_DIR),target)/tmp/skipped
test:
	rm -rf "$(SKIPPED)"
	$(CARGO) run --quiet --example embed
	$(CARGO) run --quiet --example moderator
	$(CARGO) test --all-targets && $(CARGO) test --doc; \
	  status=$$?; bash scripts/skipped.sh "$(SKIPPED)"; exit $$status

## Installs (Debian; as root or through sudo) the programs that widen make test, and e2e's
test-deps:
	bash scripts/test-deps.sh

## The chat page in headless Chromium (needs /usr/bin/chromium and npm); screenshots in target/e2e/
e2e:
	$(CARGO) build
	cd e2e && npm ci --no-audit --no-fund --loglevel=error
	cd e2e && npm test

## Autobahn|Testsuite fuzzingclient against /echo, all cases, without and then with
## --compression (sets the suite up under target/ first; see docs/conformance.md)
autobahn:
	bash scripts/autobahn-setup.sh
	$(CARGO) build --release --quiet
	bash scripts/autobahn.sh & plain=$$!; \
	  AUTOBAHN_COMPRESSION=1 bash scripts/autobahn.sh; deflate=$$?; \
	  wait $$plain && exit $$deflate

## Every benchmark scenario, 3 runs each (minutes; not part of test): BENCHMARKS.md's figures and docs/*.png
bench:
	bash scripts/bench.sh

## Side by side with another server (default: gorilla's chat example, built by
## scripts/build_gorilla_chat.sh), interleaved, 3 runs: BENCHMARKS.md's ratios
GORILLA ?= /tmp/gorilla-chat/chat
OTHER ?= $(GORILLA) -addr 127.0.0.1:PORT
OTHER_NAME ?= gorilla
bench-vs: build
	bash scripts/bench_vs.sh wshub './target/release/wshub serve --addr 127.0.0.1:PORT --echo-sender --log-level error' $(OTHER_NAME) '$(OTHER)'

## 30 minutes of steady chat with joins and leaves; RSS, threads, fds sampled into docs/soak.csv and docs/soak.png
soak:
	bash scripts/soak.sh

## Formatting and lints, as CI checks them
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

clean:
	$(CARGO) clean
