#!/usr/bin/python3
"""A health and weights feed for primwatch: one program judging many hosts.

Replace `inventory()` with a call to your CMDB, monitoring system or cloud API. Print
one batch to stdout and exit 0; a non-zero exit (with a reason on stderr) keeps the
last good batch serving until the feed's stale_after.
"""
import json
import sys


def inventory():
    # (target, state, weight, reason): state is up, down or draining.
    return [
        ("web1", "up", 100, "in service"),
        ("web2", "draining", 100, "kernel upgrade, ticket OPS-1234"),
    ]


def main():
    print(json.dumps({"primwatch_feed": 1}))
    for target, state, weight, reason in inventory():
        print(json.dumps({"target": target, "health": state, "weight": weight, "reason": reason}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
