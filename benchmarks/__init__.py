"""Benchmarks: bench.py (CLI) with measure.py (measurements) and report.py (the report), threads.py, amp_accuracy.py."""
