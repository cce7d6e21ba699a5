import pytest

# The helpers' checks are plain asserts: have pytest explain their failures too.
pytest.register_assert_rewrite("tests.resilience._checks", "tests.resilience._harness")
