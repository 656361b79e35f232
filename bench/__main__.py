"""Run every CPU benchmark in turn and refresh bench/results/ (python -m bench [--device cuda])."""

import sys

from . import bench_conv2d, bench_conv2d_relu, bench_elementwise, bench_max_pool2d

if __name__ == "__main__":
    args = sys.argv[1:]
    for module in (bench_conv2d, bench_conv2d_relu, bench_max_pool2d, bench_elementwise):
        print(f"\n== {module.__name__}")
        module.main(args)
