"""Signals are acted on in the watcher thread, also while the main thread is blocked in a wait that only the action
ends (a handler running on the main thread could deadlock there or never run)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from tests.paths import REPO

PROGRAM = textwrap.dedent("""
    import os, signal, threading
    from daemon.app.signals import SignalActions

    done = threading.Event()
    ran_in = []
    signals = SignalActions()
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        signals.on(signum, lambda signum=signum: (ran_in.append((int(signum), threading.current_thread().name)),
                                                  done.set() if signum == signal.SIGUSR2 else None))
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1)).start()
    threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGUSR2)).start()
    done.wait()  # no timeout: only the SIGUSR2 action ends it
    print(ran_in)
""")


def test_each_signal_runs_its_action_in_the_watcher_thread() -> None:
    result = subprocess.run([sys.executable, "-c", PROGRAM], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    usr1, usr2 = int(signal.SIGUSR1), int(signal.SIGUSR2)
    assert result.stdout.strip() == str([(usr1, "gsv-signals"), (usr2, "gsv-signals")])
