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
