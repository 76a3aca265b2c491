#!/usr/bin/env python3
"""Prints why tests were skipped, from a ctest JUnit file: one line per reason, with a count.

GoogleTest prints a skip as "FILE:LINE: Skipped" followed by the message; ctest keeps each test's
output in the JUnit file (ctest --output-junit). Tests that ctest itself did not run (a missing
binary, a failed fixture) are counted under "not run by ctest".

    scripts/skip-summary.py build/main/junit.xml
"""
import collections
import re
import sys
import xml.etree.ElementTree as ET


def reason(out):
    lines = (out or "").splitlines()
    for i, line in enumerate(lines):
        if re.search(r": Skipped$", line) or line.strip() == "Skipped":
            rest = [l for l in lines[i + 1:i + 3] if l.strip() and not l.startswith("[")]
            if rest:
                return rest[0].strip()
    return "not run by ctest"


def main(path):
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"skip summary: cannot read {path}: {e}")
        return 0
    reasons = collections.Counter()
    for case in root.iter("testcase"):
        if case.get("status") == "run" and case.find("skipped") is None:
            continue
        if case.get("status") not in ("notrun", "disabled") and case.find("skipped") is None:
            continue
        reasons[reason(case.findtext("system-out"))] += 1
    total = sum(reasons.values())
    if total == 0:
        print("skipped: none")
        return 0
    print(f"skipped: {total} tests")
    for why, n in reasons.most_common():
        print(f"  {n:4d}  {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
