# kind's node base image (sigs.k8s.io/kind images/base/Dockerfile), rewritten for the legacy
# builder (no buildx here: no COPY --chmod, no RUN --mount, no --platform) and for machines that
# reach no registry: FROM the debootstrapped rtdp.local/debian, binaries built by dev/lib/kind.sh
# from the Go module proxy instead of git clones. Built by `dev/kind-cluster build`; the context
# (files/ from kind's module with modes already set, bin/, sbin/, cni/) is assembled there.
#
# Differences from upstream, and why:
# - bookworm, not trixie: systemd >= 256 deprecates cgroup v1, which these hosts have;
# - nfs-common and open-iscsi left out (network storage e2e only; nothing here uses them);
# - no containerd-fuse-overlayfs (rootless only; its unit stays disabled, as upstream).
ARG BASE_IMAGE=rtdp.local/debian:bookworm
FROM ${BASE_IMAGE}

COPY files/ /

RUN chmod 755 /kind /kind/bin \
    && DEBIAN_FRONTEND=noninteractive clean-install \
      systemd \
      conntrack iptables nftables iproute2 ethtool util-linux mount kmod \
      libseccomp2 pigz fuse-overlayfs \
      e2fsprogs \
      bash ca-certificates curl jq procps \
    && find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete \
    && rm -f /lib/systemd/system/multi-user.target.wants/* \
    && rm -f /etc/systemd/system/*.wants/* \
    && rm -f /lib/systemd/system/local-fs.target.wants/* \
    && rm -f /lib/systemd/system/sockets.target.wants/*udev* \
    && rm -f /lib/systemd/system/sockets.target.wants/*initctl* \
    && rm -f /lib/systemd/system/basic.target.wants/* \
    && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \
    && ln -sf /usr/lib/systemd/systemd /sbin/init

# The debootstrapped base blocks service start-up during apt (policy-rc.d, as Debian's Docker
# images do); a node must start its services, so that guard goes.
RUN rm -f /usr/sbin/policy-rc.d \
    && systemctl enable kubelet.service \
    && systemctl enable containerd.service \
    && systemctl enable undo-mount-hacks.service \
    && systemctl mask systemd-binfmt.service \
    && mkdir -p /etc/kubernetes/manifests

# containerd, ctr, containerd-shim-runc-v2, crictl; runc; the CNI plugins kind ships.
COPY bin/ /usr/local/bin/
COPY sbin/ /usr/local/sbin/
COPY cni/ /opt/cni/bin/
RUN ctr oci spec \
        | jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
        | jq 'del(.process.rlimits)' \
        > /etc/containerd/cri-base.json \
    && containerd --version && runc --version && crictl --version

ENV container=docker
# systemd exits on SIGRTMIN+3, not SIGTERM (which re-executes it)
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]
