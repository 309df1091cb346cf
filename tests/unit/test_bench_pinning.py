"""bench.pinned_apart: every thread of a process tree on the first CPU, the caller on the
others, and all of it as it was afterwards (client score is measured that way beside its
shared-cores figure)."""

from __future__ import annotations

import os
import sys

import psutil
import pytest

from benchmarks.bench import pinned_apart
from servectl.waiting import wait_for

CPUS = sorted(os.sched_getaffinity(0))
pytestmark = pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs to pin apart")

# a parent with a thread of its own and a child process: the shape of servectl's tree
TREE = """
import subprocess, sys, threading, time
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
time.sleep(60)
"""


def test_the_tree_goes_to_the_first_cpu_the_caller_to_the_others_and_back():
    parent = psutil.Popen([sys.executable, "-c", TREE])
    try:
        wait_for(lambda: parent.num_threads() >= 2 and len(parent.children()) == 1, 30, "the tree to start")
        procs = [parent, *parent.children()]
        threads = [t.id for p in procs for t in p.threads()]
        with pinned_apart(parent):
            assert {tid: os.sched_getaffinity(tid) for tid in threads} == dict.fromkeys(threads, {CPUS[0]})
            assert os.sched_getaffinity(0) == set(CPUS[1:])
        assert all(os.sched_getaffinity(tid) == set(CPUS) for tid in threads)
        assert os.sched_getaffinity(0) == set(CPUS)
    finally:
        for p in [*parent.children(), parent]:
            p.kill()
        parent.wait(10)
