from __future__ import annotations

import subprocess
import sys

import pytest

from enclaverec.errors import ConfigError
from enclaverec.model.threads import ThreadSettings, available_cores


@pytest.mark.parametrize(
    ("cores", "processes", "intra"),
    [(2, 1, 2), (8, 3, 2), (2, 4, 1), (16, 16, 1), (1, 1, 1)],
)
def test_each_process_gets_its_share_of_the_cores(cores, processes, intra):
    settings = ThreadSettings.for_processes(processes, cores=cores)
    assert settings == ThreadSettings(intra_op=intra, inter_op=1)


def test_a_single_process_uses_every_available_core():
    assert ThreadSettings.for_processes(1).intra_op == available_cores()


def test_refuses_impossible_settings():
    with pytest.raises(ConfigError, match="processes"):
        ThreadSettings.for_processes(0)
    with pytest.raises(ConfigError, match="at least 1"):
        ThreadSettings(intra_op=0, inter_op=1)


def test_threads_are_set_before_tensorflow_starts_and_never_changed_after():
    # A fresh process: the pools of this test process may already be running.
    code = (
        "from enclaverec.errors import TrainingError\n"
        "from enclaverec.model.threads import ThreadSettings, configure_threads, current_threads\n"
        "from enclaverec.model._tf import tf\n"
        "configure_threads(ThreadSettings(1, 1))\n"
        "tf.constant(1.0) + 1.0\n"
        "print(current_threads())\n"
        "configure_threads(ThreadSettings(1, 1))\n"
        "try:\n"
        "    configure_threads(ThreadSettings(2, 1))\n"
        "except TrainingError as exc:\n"
        "    print('refused:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "(1, 1)"
    assert lines[1].startswith("refused: TensorFlow already started with 1 intra-op")
