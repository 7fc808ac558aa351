"""hello-bench: the repeatable fan-out benchmark for hello-server.

The load runs in child processes through the project's own `ChatClient`; every
scenario is measured against hello-server (plain Join and batched Subscribe)
and, alternating in the same invocation, against a minimal grpc.aio baseline
server (`hello_bench.baseline`). See docs/benchmarks.md.
"""
