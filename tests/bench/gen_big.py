#!/usr/bin/env python3
"""Writes the big body scripts/bench decodes: one TASKS_CREATED import of N tasks (default
2000, about 1 MB), in the one-line wire form Label Studio's Python sender uses (json.dumps'
", " and ": "). The same N gives the same bytes on every run (a seeded generator), so
figures from two runs decode the same text. The project object is the typical body's.

usage: gen_big.py TYPICAL.json [N] > big.json
"""
import json
import random
import sys


def task(i, rnd):
    sec = rnd.randrange(86400)
    captured = "2024-05-14T%02d:%02d:%02dZ" % (sec // 3600, sec // 60 % 60, sec % 60)
    return {
        "id": 20001 + i,
        "data": {
            "image": "s3://acme-datasets/street/cam%02d/frame_%06d.jpg" % (i % 6 + 1, 1000 + i),
            "captured": captured,
        },
        "meta": {},
        "created_at": "2024-05-14T10:02:13.%06dZ" % rnd.randrange(10**6),
        "updated_at": "2024-05-14T10:02:13.%06dZ" % rnd.randrange(10**6),
        "is_labeled": False,
        "overlap": 1,
        "inner_id": 6001 + i,
        "total_annotations": 0,
        "cancelled_annotations": 0,
        "total_predictions": 0,
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": None,
        "project": 42,
        "updated_by": None,
        "file_upload": 312,
        "comment_authors": [],
    }


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip().splitlines()[-1])
    n = int(sys.argv[2]) if len(sys.argv) == 3 else 2000
    with open(sys.argv[1], "rb") as f:
        project = json.load(f)["project"]
    project = dict(project, task_number=6000 + n, queue_total=6000 + n)
    rnd = random.Random(0x5EED1234)
    body = {"action": "TASKS_CREATED", "tasks": [task(i, rnd) for i in range(n)], "project": project}
    sys.stdout.write(json.dumps(body))


if __name__ == "__main__":
    main()
