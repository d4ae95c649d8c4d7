"""precision: auto is decided by the machine (CUDA, or a CPU with native bf16), at run time."""

from __future__ import annotations

import pytest
import torch

from medsegflow import precision as prec

AMD_AVX512_BF16 = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme sse sse2 avx2 avx512f avx512bw avx512_vnni avx512_bf16 vaes
"""
INTEL_AVX512_NO_BF16 = """processor\t: 0
flags\t\t: fpu sse sse2 avx2 avx512f avx512bw avx512vl avx512_vnni
processor\t: 1
flags\t\t: fpu sse sse2 avx2 avx512f avx512bw avx512vl avx512_vnni
"""
INTEL_AMX = "flags\t\t: avx512f amx_tile amx_bf16 amx_int8\n"
ARM_BF16 = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics bf16 i8mm\n"
ARM_NO_BF16 = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"


@pytest.mark.parametrize(
    ("text", "native"),
    [
        (AMD_AVX512_BF16, True),
        (INTEL_AVX512_NO_BF16, False),
        (INTEL_AMX, True),
        (ARM_BF16, True),
        (ARM_NO_BF16, False),
        ("", False),
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, text, native):
    path = tmp_path / "cpuinfo"
    path.write_text(text, encoding="utf-8")
    assert prec.cpu_has_native_bf16(path) is native


def test_flag_names_are_whole_words():
    assert prec.cpuinfo_flags("flags : avx512_bf16x avx512f\nmodel name : bf16 box") == {
        "avx512_bf16x",
        "avx512f",
    }
    assert not prec.cpuinfo_flags("flags : avx512_bf16x") & prec.CPU_BF16_FLAGS


def test_unreadable_cpuinfo_means_no_native_bf16(tmp_path):
    assert prec.cpu_has_native_bf16(tmp_path / "missing") is False


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_machine_and_explicit_values_do_not(monkeypatch, native):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda *a: native)
    assert prec.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert prec.resolve_precision("auto", torch.device("cpu")) == ("bf16" if native else "fp32")
    assert prec.resolve_precision("fp32", "cpu") == "fp32"
    assert prec.resolve_precision("bf16", "cpu") == "bf16"
    with prec.autocast("cpu"):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == (torch.bfloat16 if native else torch.float32)


def test_auto_on_cuda_is_bf16_where_supported(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert prec.resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert prec.resolve_precision("auto", "cuda:0") == "fp16"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match=r"precision 'fp16' is not one of"):
        prec.resolve_precision("fp16", "cpu")


def test_encoder_batch_size_auto_is_one_slice_on_the_cpu_and_numbers_stay():
    from medsegflow.precision import AUTO_BATCH, encoder_batch_size

    assert encoder_batch_size("auto", "cpu") == AUTO_BATCH["cpu"] == 1
    assert AUTO_BATCH["cuda"] > 1
    assert encoder_batch_size(8, "cpu") == 8
    assert encoder_batch_size("3", "cpu") == 3
