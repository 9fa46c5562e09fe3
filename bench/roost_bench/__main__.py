"""``python -m roost_bench SCENARIO``: the same commands as ``roost-bench SCENARIO``."""

from .commands import bench

if __name__ == "__main__":
    bench(prog_name="python -m roost_bench")
