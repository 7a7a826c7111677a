"""Infrastructure every script uses: argparse helpers and the entry wrapper, atomic file output, devices and threads,
CPU probing, memory estimates, signal handling, provenance, FLOP counts and plots."""
