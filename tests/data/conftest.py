"""The saved digits model and its fitted KNN (for the decoding edge cases through `score`)."""

from tests.cli.conftest import digits_world  # noqa: F401 - fixture re-exported here
from tests.fuzz.conftest import fuzz_world  # noqa: F401 - fixture re-exported here
