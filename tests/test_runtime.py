"""Start-up helpers: what the CPU can do."""

from __future__ import annotations

from denoise import runtime


def test_native_bfloat16_is_read_off_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: fpu avx512f\n")
    assert runtime.native_bfloat16(cpuinfo) is False
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    assert runtime.native_bfloat16(cpuinfo) is True
    cpuinfo.write_text("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert runtime.native_bfloat16(cpuinfo) is True
    assert runtime.native_bfloat16(tmp_path / "missing") is None  # not Linux: unknown, no warning


def test_auto_arithmetic_is_bfloat16_with_a_mirror_pair_for_one_network_on_cpus_that_compute_it_natively():
    assert runtime.arithmetic("auto", 0, gpu=False, native=True) == ("bfloat16", 2)
    assert runtime.arithmetic("auto", 0, gpu=False, native=False) == ("float32", 1)
    assert runtime.arithmetic("auto", 0, gpu=False, native=None) == ("float32", 1)  # unknown: the safe choice
    assert runtime.arithmetic("auto", 0, gpu=True, native=True) == ("float32", 1)
    # What the user names is kept; only auto is resolved.
    assert runtime.arithmetic("auto", 8, gpu=False, native=True) == ("bfloat16", 8)
    assert runtime.arithmetic("float32", 0, gpu=False, native=True) == ("float32", 1)
    assert runtime.arithmetic("bfloat16", 0, gpu=False, native=False) == ("bfloat16", 2)
    # A mean of networks is an ensemble already: it runs once unless told otherwise.
    assert runtime.arithmetic("auto", 0, gpu=False, native=True, passes=4) == ("bfloat16", 1)
    assert runtime.arithmetic("auto", 2, gpu=False, native=True, passes=4) == ("bfloat16", 2)
    # A model that names its own ensemble gets it under auto, on any machine.
    assert runtime.arithmetic("auto", 0, gpu=False, native=True, preferred=1) == ("bfloat16", 1)
    assert runtime.arithmetic("auto", 0, gpu=True, native=False, preferred=2) == ("float32", 2)
    assert runtime.arithmetic("auto", 8, gpu=False, native=True, preferred=1) == ("bfloat16", 8)
