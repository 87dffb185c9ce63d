"""The harness: timing, quick job, CLI (asv suite and matrix runner come later)."""
