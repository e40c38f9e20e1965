# kube-proxy programs iptables (nft backend, Debian's default, as the node's) and flushes
# conntrack entries: both tools must be in its image.
ARG BASE_IMAGE=rtdp.local/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables conntrack nftables \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY kube-proxy /usr/local/bin/
