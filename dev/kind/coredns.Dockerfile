# kubeadm's CoreDNS Deployment passes only args (-conf /etc/coredns/Corefile): the image's
# entrypoint must be the binary, at /coredns as upstream.
ARG BASE_IMAGE=rtdp.local/debian:bookworm
FROM ${BASE_IMAGE}
COPY coredns /coredns
EXPOSE 53 53/udp
ENTRYPOINT ["/coredns"]
