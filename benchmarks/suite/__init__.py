"""The asv suite: its own subpackage, so asv never mistakes harness functions for benchmarks."""
