# Defaults shared by the issue-20 run scripts of this folder (sourced, not run): the repository,
# where runs and logs go, the Python with jaxood installed, and the data root. Each can be set
# in the environment instead.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUNS="${RUNS:-$ROOT/experiments/runs}"
LOGS="${LOGS:-$RUNS/logs}"
PY="${PY:-$ROOT/.venv/bin/python}"
DATA="${DATA:-$ROOT/../shared/data}"
