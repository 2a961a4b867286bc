# The entry points; the scripts do the work (and document their options).
.PHONY: dev dev-cluster images test

# The local stack, one command: build, start everything, chat as two example users.
# `make dev < messages.txt` runs a scripted chat. Ctrl-C stops every process it started.
dev:
	scripts/dev

# The same on a real node (kubelet, containerd, kube-router): the images built from the
# Dockerfiles, installed with the chart, each agent in its own container.
dev-cluster:
	scripts/dev --real-node

# Both images from the Dockerfiles with buildah (no Docker engine, no registry), as
# localhost/moltmates/{moltmate,sandbox}:VERSION and OCI archives for `k3s ctr images import`.
images:
	scripts/images

# Every test: unit tests and tests against a real control plane (scripts/test).
test:
	scripts/test
