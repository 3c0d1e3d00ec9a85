"""The long mutation-fuzzing run: N cases against a broker subprocess.

Mutates valid requests of every API and version the handler registry holds (see
tests/fuzzing.py), sends them in batches, and after each batch checks that the
broker is alive, answers a fresh ApiVersions within 100 ms and logged no traceback
or critical line.  Prints cases/s, deaths, stalls and the distinct failures.

    .venv/bin/python benchmarks/fuzz.py [--cases 1000000] [--batch 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fuzzing import Outcome, Target, label, mutate, random_mutations, seeds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=200, help="cases between health checks")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--storage", default="disk", choices=("disk", "memory"))
    parser.add_argument("--api", type=int, action="append", help="only these API keys")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between progress lines")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    pool = [s for s in seeds() if not args.api or s.api_key in args.api]
    total = Outcome()
    with tempfile.TemporaryDirectory() as tmp:
        target = Target(Path(tmp) / "data", "--storage", args.storage)
        start = last = time.monotonic()
        try:
            while total.cases < args.cases:
                n = min(args.batch, args.cases - total.cases)
                chosen = [rng.choice(pool) for _ in range(n)]
                frames = [mutate(seed, random_mutations(rng)) for seed in chosen]
                total.add(target.run(frames, [label(s) for s in chosen]))
                now = time.monotonic()
                if now - last >= args.every:
                    last = now
                    report(total, now - start, final=False)
        finally:
            target.close()
        report(total, time.monotonic() - start, final=True)


def report(total: Outcome, elapsed: float, *, final: bool) -> None:
    print(f"{total.cases} cases in {elapsed:.0f} s ({total.cases / elapsed:.0f} cases/s): "
          f"{total.deaths} deaths, {total.stalls} stalls, {len(total.failures)} distinct failures; "
          f"{total.closed} closed by the broker, {total.timeouts} unanswered after 0.5 s", flush=True)
    if final:
        for failure, (count, example) in total.failures.most_common():
            print(f"  {count:6d} x {failure}  (e.g. {example})")


if __name__ == "__main__":
    main()
