# A Kubernetes component image (kube-apiserver, kube-controller-manager, kube-scheduler, etcd,
# local-path-provisioner): one locally built binary on the Debian base, in /usr/local/bin, which
# is where kubeadm's static pod manifests and kind's storage manifest expect it (they name the
# command, never the entrypoint). Tagged by dev/kind-cluster build with the exact name kubeadm
# or kind asks for, so the node never pulls.
ARG BASE_IMAGE=rtdp.local/debian:bookworm
FROM ${BASE_IMAGE}
ARG BINARY
COPY ${BINARY} /usr/local/bin/
