"""Benchmarks: loopback-only, bounded in time, reported as ratios against a baseline."""
