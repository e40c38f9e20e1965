# The image of `dev/kind-cluster smoke`: locally built FROM the Debian base and put into the node
# with `kind load`, as the project's own images are. busybox gives httpd.
ARG BASE_IMAGE=rtdp.local/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends busybox \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /www && echo rtdp-kind-smoke-ok >/www/index.html
