# Two entry points; the scripts do the work (and document their options).
.PHONY: dev test

# The local stack, one command: build, start everything, chat as two example users.
# `make dev < messages.txt` runs a scripted chat. Ctrl-C stops every process it started.
dev:
	scripts/dev

# Every test: unit tests and tests against a real control plane (scripts/test).
test:
	scripts/test
