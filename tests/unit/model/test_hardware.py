"""Hardware profiles load, name their faults, and always end on a provider that works here."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from daemon.config import load_settings
from daemon.model.engine import engine_from_settings
from daemon.model.hardware import (
    HardwareProfile,
    ProfileError,
    create_session,
    known_profiles,
    provider_chain,
    session_options,
    trt_shape_ranges,
)
from tests.paths import REPO

PROFILES = known_profiles()


def test_the_five_profiles_exist() -> None:
    assert {"x86-cpu", "x86-cuda", "jetson-orin-nano-8gb", "jetson-orin-nx-16gb", "jetson-agx-orin"} <= set(PROFILES)


@pytest.mark.parametrize("name", PROFILES)
def test_profile_loads(name: str) -> None:
    profile = HardwareProfile.load(name)
    assert profile.providers[-1] == "CPUExecutionProvider", "every profile must end on the CPU"
    assert profile.precision in ("fp32", "fp16", "int8", "mixed")


def test_unknown_field_and_missing_profile_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nproviders = ["CPUExecutionProvider"]\nthreads = 4\n')
    with pytest.raises(ProfileError, match="unknown field.*threads"):
        HardwareProfile.load(bad)
    with pytest.raises(ProfileError, match="not found.*x86-cpu"):
        HardwareProfile.load("no-such-box")


@pytest.mark.parametrize("value", ["0", "9", '"four"', "true"])
def test_a_bad_max_batch_is_named(tmp_path: Path, value: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(f'name = "x"\nproviders = ["CPUExecutionProvider"]\nmax_batch = {value}\n')
    with pytest.raises(ProfileError, match=r"bad.toml: field 'max_batch' must be a whole number from 1 to 8"):
        HardwareProfile.load(bad)


def test_every_profile_in_the_checkout_is_shipped() -> None:
    assert PROFILES == sorted(p.stem for p in (REPO / "hardware").glob("*.toml"))


def test_a_user_profile_wins_by_name_and_a_path_still_works(tmp_path: Path) -> None:
    (tmp_path / "x86-cpu.toml").write_text('name = "mine"\nproviders = ["CPUExecutionProvider"]\n')
    (tmp_path / "my-box.toml").write_text('name = "my box"\nproviders = ["CPUExecutionProvider"]\n')
    assert HardwareProfile.load("x86-cpu", tmp_path).name == "mine"
    assert HardwareProfile.load("x86-cpu").name == "x86 CPU"  # the shipped one, without the user's directory
    assert HardwareProfile.load("jetson-agx-orin", tmp_path).providers[0] == "TensorrtExecutionProvider"
    assert HardwareProfile.load("my-box", tmp_path).name == "my box"
    assert HardwareProfile.load(tmp_path / "my-box.toml").name == "my box"
    assert {"my-box", "x86-cpu", "jetson-agx-orin"} <= set(known_profiles(tmp_path))
    with pytest.raises(ProfileError, match=f"no-such-box: hardware profile not found in {tmp_path}.*my-box"):
        HardwareProfile.load("no-such-box", tmp_path)
    with pytest.raises(ProfileError, match="gone.toml: hardware profile not found"):
        HardwareProfile.load(tmp_path / "gone.toml")


def test_the_engine_finds_profiles_in_the_configured_directory(
    demo_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    user = tmp_path / "profiles"
    user.mkdir()
    (user / "lab-box.toml").write_text('name = "lab box"\nproviders = ["CPUExecutionProvider"]\nintra_op_threads = 1\n')
    monkeypatch.setenv("GSV_EDGE_ENGINE__HARDWARE_PROFILE_DIR", str(user))
    monkeypatch.setenv("GSV_EDGE_ENGINE__HARDWARE_PROFILE", "lab-box")
    monkeypatch.setenv("GSV_EDGE_STATE_DIR", str(tmp_path / "state"))
    engine = engine_from_settings(load_settings(None), demo_bundle)
    assert engine.profile.name == "lab box" and engine.profile.source == user / "lab-box.toml"


def test_gpu_profile_falls_back_to_cpu_with_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    profile = HardwareProfile.load("jetson-orin-nano-8gb")
    with caplog.at_level(logging.WARNING):
        chain = provider_chain(profile, [], tmp_path, "ab" * 32)
    names = [n for n, _ in chain]
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        assert "TensorrtExecutionProvider" not in names
        assert "not in this onnxruntime build" in caplog.text
    assert names[-1] == "CPUExecutionProvider"


def test_trt_ranges_cover_dynamic_axes() -> None:
    ranges = trt_shape_ranges([
        {"name": "phone_ids", "shape": [1, "n_phones"]},
        {"name": "bert", "shape": [1, 1024, "n_phones"]},
        {"name": "fixed", "shape": [1, 3]},
    ])
    assert ranges["trt_profile_min_shapes"] == "phone_ids:1x1,bert:1x1024x1"
    assert ranges["trt_profile_max_shapes"] == "phone_ids:1x512,bert:1x1024x512"


def test_session_runs_on_cpu_from_a_gpu_profile(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    inputs = [{"name": "x", "shape": ["n"]}]
    session = create_session(path, HardwareProfile.load("x86-cuda"), inputs, tmp_path, "0" * 64)
    out = session.run(None, {"x": np.array([-1.0, 2.0], np.float32)})[0]
    np.testing.assert_array_equal(out, [0.0, 2.0])


def test_sessions_share_one_arena_and_only_the_step_graph_keeps_memory_patterns(tmp_path: Path) -> None:
    """Two sessions built with the arena on both allocate from the process-wide arena; a graph whose shapes
    change per call gets no memory pattern (it would keep a block per shape), the step graph does."""
    profile = HardwareProfile(name="t", providers=["CPUExecutionProvider"], intra_op_threads=1)
    varying, repeated = session_options(profile), session_options(profile, repeated_shapes=True)
    assert not varying.enable_mem_pattern and repeated.enable_mem_pattern
    for opts in (varying, repeated):
        assert opts.get_session_config_entry("session.use_env_allocators") == "1"
    own = session_options(HardwareProfile(name="t", providers=["CPUExecutionProvider"], cpu_mem_arena=False))
    assert not own.enable_cpu_mem_arena
    with pytest.raises(RuntimeError, match="use_env_allocators"):  # not set: this session keeps its own
        own.get_session_config_entry("session.use_env_allocators")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    sessions = [create_session(path, profile, repeated_shapes=r) for r in (False, True)]
    for session in sessions:  # both run from the shared arena
        out = session.run(None, {"x": np.array([-1.0, 2.0], np.float32)})[0]
        np.testing.assert_array_equal(out, [0.0, 2.0])


# Frees a buffer large enough to make glibc raise its mmap threshold, then allocates 1 MiB buffers (K/V
# rows, audio) between small objects that stay, frees the large ones and prints how much RSS stayed behind.
FRAGMENTATION = """
import sys
from pathlib import Path
import numpy as np

def rss_mb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) / 1024

if sys.argv[1] != "none":
    from daemon.model.bundle import Bundle
    from daemon.model.engine import Engine
    from daemon.model.hardware import HardwareProfile
    Engine(Bundle.load(Path(sys.argv[1])), HardwareProfile.load("x86-cpu"), Path(sys.argv[2]))
big = np.ones(8 << 20, np.uint8)
del big
before, kept, freed = rss_mb(), [], []
for _ in range(100):
    freed.append(np.ones(1 << 20, np.uint8))
    kept.append(np.ones(1024, np.uint8))
del freed
print(rss_mb() - before)
"""


def _kept_after_free(*args: str) -> float:
    done = subprocess.run([sys.executable, "-c", FRAGMENTATION, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.split()[-1])


@pytest.mark.integration  # fresh Python processes
def test_an_engine_returns_freed_large_buffers_to_the_system(demo_bundle: Path, tmp_path: Path) -> None:  # noqa: F811
    """Once an engine exists, 100 MiB of freed 1 MiB buffers leave RSS (glibc's threshold is pinned); in a
    plain process glibc's raised threshold keeps them in the heap, which is what the pin prevents."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc behaviour")
    assert _kept_after_free("none") > 50  # the failure the pin exists for happens here
    assert _kept_after_free(str(demo_bundle), str(tmp_path / "state")) < 10


# Counts the process's threads before any onnxruntime session and after an engine built the way `gsv-edge serve`
# builds it (three threads per session in its profile) has spoken with its prefill, step and vocoder sessions;
# then makes one more session for a profile asking for one thread.
THREADS = """
import logging, os, sys
from pathlib import Path
import numpy as np
from daemon.config import load_settings
from daemon.model.engine import SynthesisOptions, engine_from_settings
from daemon.model.hardware import CPU, HardwareProfile, create_session
from daemon.audio.wav import encode_wav

def threads():
    return len(os.listdir("/proc/self/task"))

logging.basicConfig()
before = threads()
engine = engine_from_settings(load_settings(None), Path(sys.argv[1]), sys.argv[2], shared_threads=True)
t = np.arange(4 * 32000) / 32000
engine.register_voice("v", encode_wav(0.3 * np.sin(2 * np.pi * 150 * t), 32000), "hello there.", "en")
audio = np.concatenate(list(engine.stream("Hello world.", "v", "en", SynthesisOptions(seed=0))))
spoke = threads()
create_session(engine.bundle.graph_path("sovits_ref_style"), HardwareProfile(name="one", providers=[CPU],
               intra_op_threads=1, inter_op_threads=1))
print(len(engine._sessions), spoke - before, threads() - spoke, audio.size)
"""


@pytest.mark.integration  # a fresh Python process
def test_the_daemons_engine_runs_every_session_on_one_thread_pool(demo_bundle: Path, tmp_path: Path) -> None:  # noqa: F811
    """Built for the daemon (shared_threads), an engine's sessions at three threads each add two worker
    threads in all, not two per session; a later profile asking for another count joins the same pool (with a
    logged warning) instead of failing, since onnxruntime cannot mix the two in one process."""
    state = tmp_path / "state"
    state.mkdir()
    env = {**os.environ, "GSV_EDGE_STATE_DIR": str(state)}
    profile = tmp_path / "three.toml"
    profile.write_text('name = "three"\nproviders = ["CPUExecutionProvider"]\nintra_op_threads = 3\n')
    done = subprocess.run([sys.executable, "-c", THREADS, str(demo_bundle), str(profile)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    sessions, workers, later, samples = (int(x) for x in done.stdout.split())
    assert sessions >= 3 and samples > 0
    assert workers == 2
    assert later == 0
    assert "profile one asks for 1 intra-op / 1 inter-op threads" in done.stderr
