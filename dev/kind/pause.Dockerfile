# The pod sandbox image: Kubernetes' build/pause/linux/pause.c compiled with gcc -static, alone,
# as upstream.
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
