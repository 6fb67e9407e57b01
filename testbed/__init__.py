"""What the bench (bench/) and the test suite (tests/) both use: request loops, the
ssh road's machines and registry, the stand-ins' build, the suite's ownership label.
It imports the product (labctl, roles) and nothing from tests/ or bench/
(tests/unit/test_layers.py)."""
