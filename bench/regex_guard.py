"""How long the database's regex engine (Python's ``re``, as the embedded server uses it)
takes on the patterns ``/clusters/query`` accepts, against values built to make them work
hardest.

Generates random patterns from a small alphabet of regex pieces, keeps those the checker
(``policy_runtime.clusters.safe_regex``) accepts, and times each on adversarial values of
N and 8N characters. Prints how many were accepted, the slowest time per character, and
every accepted pattern whose time grew more than 32x when the value grew 8x (linear work
grows 8x, quadratic 64x; expect none, though a loaded machine adds noise).
"""

from __future__ import annotations

import argparse
import random
import re
import time

from policy_runtime.clusters.safe_regex import UnsafeRegex, check_regex

PIECES = ["a", "a", "b", ".", "[ab]", "[a-]", "-", "*", "+", "?", "{2,5}", "{3,}", "{0,40}",
          "(", "(?:", ")", "|", "^", "$", "\\b", "\\w", "\\s", " ", "\\A"]


def values(n: int) -> list[str]:
    return ["a" * n, "a" * n + "!", "ab" * (n // 2), "a-" * (n // 2) + "!",
            "a " * (n // 2) + "!", "-" * n, "\n".join(["a" * 50] * (n // 51))]


def best_of(compiled: re.Pattern, value: str, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        compiled.search(value)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--length", type=int, default=10_000, help="N")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tried = accepted = 0
    slowest = (0.0, "", "")
    suspicious = []
    stop_at = time.monotonic() + args.seconds
    while time.monotonic() < stop_at:
        pattern = "".join(rng.choice(PIECES) for _ in range(rng.randint(2, 14)))
        options = rng.choice(["", "i", "s", "m"])
        tried += 1
        try:
            check_regex(pattern, options)
        except UnsafeRegex:
            continue
        accepted += 1
        flags = sum(flag for letter, flag in (("i", re.I), ("s", re.S), ("m", re.M))
                    if letter in options)
        compiled = re.compile(pattern, flags)
        for value in values(args.length):
            if best_of(compiled, value, runs=1) < 0.002:
                continue
            short = best_of(compiled, value)
            if short < 0.001:
                continue
            long = best_of(compiled, value * 8)
            per_char = long / (len(value) * 8)
            if per_char > slowest[0]:
                slowest = (per_char, pattern, options)
            if long > 32 * short:
                suspicious.append((pattern, options, short, long))
    print(f"{tried} random patterns, {accepted} accepted")
    print(f"slowest accepted: {slowest[0] * 1e6:.2f} us per character of the value "
          f"({slowest[1]!r}, options {slowest[2]!r})")
    for pattern, options, short, long in suspicious:
        print(f"  grew {long / short:.1f}x for 8x the value: {pattern!r} {options!r} "
              f"({short * 1000:.1f} -> {long * 1000:.1f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
