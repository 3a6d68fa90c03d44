"""What skrub adds to a stage's or a service's start: its import, in fresh interpreters.

    python bench/skrub_import.py [--repeats 5]

Baseline: a fresh interpreter importing what a featurizer already needs
(pandas, sklearn.compose, sklearn.preprocessing); then the same plus skrub
(which a fitted featurizer imports only when it holds a skrub step: a date, a
many-valued or a text column). Prints the median of each and the difference.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

BASE = "import pandas, sklearn.compose, sklearn.preprocessing"
CODE = "import time; t = time.perf_counter(); {imports}; print(time.perf_counter() - t)"


def seconds(imports: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CODE.format(imports=imports)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    seconds(f"{BASE}; import skrub")  # warm the file cache once
    base = statistics.median(seconds(BASE) for _ in range(args.repeats))
    both = statistics.median(seconds(f"{BASE}; import skrub") for _ in range(args.repeats))
    print(f"baseline (pandas + sklearn): {base:.2f} s")
    print(f"baseline + skrub:            {both:.2f} s")
    print(f"skrub adds:                  {both - base:.2f} s (median of {args.repeats})")


if __name__ == "__main__":
    main()
