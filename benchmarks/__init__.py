"""benchmarks: `us8k bench NAME` — each prints measured figures (never asserted in tests)."""
