"""`signoff bench`: the performance targets of DESIGN.md, measured as ratios against baselines taken in the same run
on the same broker and PostgreSQL (see docs/benchmarks.md)."""
